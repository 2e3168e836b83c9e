"""What the QuestDB sink stores is what QuestDB gives back: quotes encoded by the official client (both ILP
versions) are written as the outbox keeps them and read back over PG wire, equal field for field. Plus the pure
parts of `sinks/questdb_ilp.py`: version negotiation, blocks and their refusals."""

from __future__ import annotations

import asyncio
import struct
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.base import Entry
from sinks.questdb import QuestDBBackend
from sinks.questdb_ilp import Block, Encoder, IlpVersion, version_from_settings
from sinks.questdb_schema import QUOTE_COLUMNS, QUOTES, create_table_sql, quote_from_record
from streamer.events import QuoteBatch
from streamer.model import MarketStatus, StockUpdate
from tests.fuzz.conftest import FUZZ, LONG, TRIED
from tests.support.storage import qdb_query

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

# --- round trip through the real QuestDB ------------------------------------------------------------

# A few days far apart (each day is a partition; thousands would slow the shared test server), any time of day.
DAYS = [
    datetime(1970, 1, 2),
    datetime(1999, 12, 31),
    datetime(2026, 3, 2),
    datetime(2100, 1, 1),
    datetime(2199, 12, 31),
]
# QuestDB refuses a NUL in a symbol ("field value is invalid"): the sink sets such a row aside with that reason.
text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=12
)
positive = st.floats(min_value=0, max_value=1e300, exclude_min=True, allow_nan=False, allow_infinity=False)
signed = st.floats(allow_nan=False, allow_infinity=False)
# Built once: a strategy made inside the composite would be built and validated again for every draw.
symbols = text.filter(str.strip)
maybe_positive = st.none() | positive
maybe_signed = st.none() | signed
days = st.sampled_from(DAYS)
volumes = st.integers(0, 2**63 - 1)
statuses = st.sampled_from(list(MarketStatus))
delays = st.timedeltas(timedelta(0), timedelta(days=1))
times_of_day = st.times()


@st.composite
def quotes(draw: st.DrawFn, source: str) -> StockUpdate:
    at = datetime.combine(draw(days), draw(times_of_day), UTC)
    return StockUpdate(
        symbol=draw(symbols),
        price=draw(positive),
        timestamp=at,
        data_source=source,
        volume=draw(volumes),
        open=draw(maybe_positive),
        high=draw(maybe_positive),
        low=draw(maybe_positive),
        prev_close=draw(maybe_positive),
        change=draw(maybe_signed),
        change_percent=draw(maybe_signed),
        market_status=draw(statuses),
        received_at=at + draw(delays),
    )


@pytest.fixture
def own_table(questdb_config):
    prefix = f"rt{uuid.uuid4().hex[:8]}_"

    async def sql(statement: str) -> None:
        b = QuestDBBackend(questdb_config, table_prefix=prefix)
        try:
            await b.execute(statement)
        finally:
            await b.close()

    asyncio.run(sql(create_table_sql(QUOTES, prefix)))
    yield prefix
    asyncio.run(sql(f"DROP TABLE IF EXISTS {prefix}{QUOTES}"))


@pytest.fixture
def loop_thread():
    """An event loop on a thread of its own: hypothesis drives a synchronous test, the backend lives on."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


@pytest.mark.servers
@pytest.mark.timeout(3600 if LONG else 300)  # the long run's 10 000 cycles per version take minutes to draw
@pytest.mark.parametrize("version", list(IlpVersion))
def test_what_the_sink_stores_reads_back_from_questdb_as_the_quotes(questdb_config, own_table, loop_thread, version):
    source = f"fuzz-{version.name.lower()}"
    expected: dict[tuple[str, datetime], StockUpdate] = {}
    made: list[Entry] = []
    backend = QuestDBBackend(questdb_config, table_prefix=own_table, ilp_version=version)

    @FUZZ
    @given(st.lists(quotes(source), min_size=1, max_size=8))
    def encode_cycle(cycle: list[StockUpdate]) -> None:
        TRIED[f"QuestDB round trip, ILP version {version:d}"] += 1
        # (timestamp, symbol) is the dedup key, and of two rows with one key in a request QuestDB keeps either.
        fresh = {(u.symbol, u.timestamp): u for u in cycle if (u.symbol, u.timestamp) not in expected}
        if fresh:
            entries = backend.entries_for(QuoteBatch(1, tuple(fresh.values()), MarketStatus.OPEN))
            assert [e.kind for e in entries] == ["ilp"]  # every valid quote encodes
            made.extend(entries)
            expected.update(fresh)

    encode_cycle()

    async def store() -> None:
        try:
            for i in range(0, len(made), 200):  # as a backlog goes: many cycles' entries in each request
                await backend.write(made[i : i + 200])
        finally:
            await backend.close()

    loop_thread(store())
    query = f"SELECT {', '.join(QUOTE_COLUMNS)} FROM {own_table}{QUOTES} WHERE data_source = %s"

    async def stored() -> dict[tuple[str, datetime], StockUpdate]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:  # WAL apply is asynchronous: poll until every row is visible, or the deadline
            rows = [quote_from_record(r) for r in await qdb_query(questdb_config, query, [source])]
            if len(rows) >= len(expected) or loop.time() > deadline:
                return {(u.symbol, u.timestamp): u for u in rows}
            await asyncio.sleep(0.1)

    got = loop_thread(stored())
    assert len(got) == len(expected)
    wrong = [(want, got.get(key)) for key, want in expected.items() if got.get(key) != want]
    assert not wrong, f"{len(wrong)} of {len(expected)} quotes read back differently, e.g. {wrong[:3]}"


# --- negotiation ------------------------------------------------------------------------------------


def test_the_version_is_the_newest_both_sides_speak():
    settings = '{"config":{"release.version":"9.3.4","line.proto.support.versions":[1,2,3]},"preferences":{}}'
    assert version_from_settings(200, settings) is IlpVersion.BINARY
    assert version_from_settings(200, '{"config":{"line.proto.support.versions":[1]}}') is IlpVersion.TEXT
    assert version_from_settings(200, '{"line.proto.support.versions":[1,2]}') is IlpVersion.BINARY  # 9.0 layout
    assert version_from_settings(200, '{"config":{"release.version":"8.2.0"}}') is IlpVersion.TEXT  # no versions yet
    assert version_from_settings(404, "Not Found") is IlpVersion.TEXT  # older than the endpoint: text
    with pytest.raises(ValueError, match=r"accepts ILP versions \[3, 4\], none of \[1, 2\]"):
        version_from_settings(200, '{"config":{"line.proto.support.versions":[3,4]}}')
    with pytest.raises(ValueError, match="answered 503"):
        version_from_settings(503, "busy")
    with pytest.raises(ValueError, match="other than JSON"):
        version_from_settings(200, "<html>proxy</html>")


# --- blocks -----------------------------------------------------------------------------------------


def block_of(version: IlpVersion, prices: list[float]) -> Block:
    rows = [({"s": f"S{i}"}, {"price": p}, T0 + timedelta(seconds=i)) for i, p in enumerate(prices)]
    block, failed = Encoder(version, "127.0.0.1", 9000).block("t", rows)
    assert block is not None and failed == []
    return block


def test_rows_are_found_by_offset_even_when_a_binary_double_holds_a_newline_byte():
    newline = struct.unpack("<d", b"\n" + struct.pack("<d", 10.0)[1:])[0]  # 10.000000000000018
    block = block_of(IlpVersion.BINARY, [1.5, newline, 2.5])
    assert b"\n" in struct.pack("<d", newline) and block.data.count(b"\n") > block.rows
    assert [block.row(i).split(b" ", 1)[0] for i in range(3)] == [b"t,s=S0", b"t,s=S1", b"t,s=S2"]
    assert block.subset([2, 0]).data == block.row(2) + block.row(0)
    assert block.timestamps() == [int((T0 + timedelta(seconds=i)).timestamp()) * 10**6 for i in range(3)]


@pytest.mark.parametrize("version", list(IlpVersion))
def test_a_block_survives_its_outbox_entry(version):
    block = block_of(version, [1.5, 2.5, 1e-5])
    entry = block.entry(id=7, created=1.0)
    assert (entry.kind, entry.rows, entry.id) == ("ilp", 3, 7)
    assert Block.from_entry(entry) == block
    if version is IlpVersion.TEXT:  # text stays readable in the JSON payload, as outboxes have always kept it
        assert entry.data is None and entry.payload["lines"][2].startswith("t,s=S2 price=0.00001 ")


def test_a_corrupt_block_entry_is_refused_naming_what_is_wrong():
    good = block_of(IlpVersion.BINARY, [1.5, 2.5]).entry()
    cases = {
        "unknown ILP version 9": Entry("ilp", {**good.payload, "version": 9}, data=good.data),
        "needs its bytes": Entry("ilp", good.payload),
        "do not divide the block's": Entry("ilp", {**good.payload, "ends": [5, 3]}, data=good.data),
        "not whole numbers": Entry("ilp", {**good.payload, "ends": [5.5, len(good.data)]}, data=good.data),
        "each ending in a newline": Entry("ilp", {"table": "t", "lines": ["t,s=x 1"]}),
        "not an ILP block": Entry("ilp", {"lines": []}),
    }
    for reason, entry in cases.items():
        with pytest.raises(ValueError, match=reason):
            Block.from_entry(entry)


def test_rows_the_client_refuses_are_named_and_the_rest_encode():
    encoder = Encoder(IlpVersion.BINARY, "127.0.0.1", 9000)
    rows = [
        ({"s": "ok"}, {"x": 1.0}, T0),
        ({"s": "big"}, {"x": 2**64}, T0),  # beyond a LONG
        ({"s": "ok2"}, {"x": 2.0}, T0),
    ]
    block, failed = encoder.block("t", rows)
    assert block is not None and block.rows == 2 and block.row(1).startswith(b"t,s=ok2 ")
    assert [i for i, _ in failed] == [1] and "OverflowError" in failed[0][1]
