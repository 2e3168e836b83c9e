"""The session state machine without a socket: resume, resync, catch-up-then-join, a resume from a seq not
reached yet, a new epoch under live sessions, and every reply to a client message, on both transports."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from streamer import __version__
from streamer.events import Alert, MarketStatusChanged
from streamer.model import MarketStatus
from streamer.stream.history import ResyncReason
from streamer.stream.session import REPLAY_STEP, Close, Replay, Send

from .pure import EPOCH, connected, feed, hub, nb, perform, send, seqs

KEY = frozenset({"PKN", "PKO"})
# Seqs 1-6; a history of 4 keeps 3-6. Batches 1, 2, 4, 5 and 6 have something for KEY.
PUBLISHED = [("PKN",), ("PKO",), ("KGH",), ("PKN", "KGH"), ("PKO",), ("PKN",)]


def symbols(message: dict) -> list[str]:
    return [q["symbol"] for q in message.get("data", message.get("snapshot", []))]


def resume(transport: str, since: int, epoch: str):
    """A client of `transport` resuming KEY after `since` of `epoch`: the core, its recorder, what it got."""
    core, h, recorder = hub(size=4)
    feed(core, *PUBLISHED)
    if transport == "websocket":
        session = connected(h, "c")
        got = send(session, type="subscribe", symbols=sorted(KEY), since_seq=since, epoch=epoch)
    else:
        session = h.open("c", 0.0)
        got = perform(session, session.open_stream(KEY, (epoch, since)))
    return core, recorder, session, got


@pytest.mark.parametrize("transport", ["websocket", "sse"])
@pytest.mark.parametrize(
    "since, epoch, outcome",
    [
        (4, EPOCH, [(5, 4), (6, 5)]),  # the missed batches, with their prev_seq chain from since_seq
        (2, EPOCH, [(4, 2), (5, 4), (6, 5)]),  # seq 3 is kept: everything after 2 still is
        (6, EPOCH, []),  # nothing missed
        (1, EPOCH, ResyncReason.HISTORY_EXCEEDED),  # seq 2 is no longer kept
        (3, "previous-run", ResyncReason.EPOCH_CHANGED),
        (9, EPOCH, ResyncReason.SEQ_AHEAD),  # a seq this server has not reached: resync, never an error
    ],
)
def test_resume_replays_what_was_missed_or_resyncs_then_goes_live(transport, since, epoch, outcome):
    core, recorder, session, got = resume(transport, since, epoch)
    if isinstance(outcome, ResyncReason):
        assert len(got) == 1 and got[0]["type"] == "resync"
        assert (got[0]["reason"], got[0]["epoch"], got[0]["seq"]) == (outcome.value, EPOCH, 6)
        assert got[0]["symbols"] == ["PKN", "PKO"] and symbols(got[0]) == ["PKN", "PKO"]
    else:
        if transport == "websocket":
            confirmed, got = got[0], got[1:]
            assert confirmed["type"] == "subscription_confirmed" and confirmed["recovered"] is True
            assert (confirmed["seq"], confirmed["replay"], confirmed["snapshot"]) == (since, len(outcome), [])
        assert [(m["type"], m["seq"], m["prev_seq"], m["epoch"]) for m in got] == [
            ("stock_updates", seq, prev, EPOCH) for seq, prev in outcome
        ]
        assert all(set(symbols(m)) <= KEY for m in got)
    assert session.live and not recorder.take("c")
    feed(core, ("KGH",), ("PKO",))
    assert seqs(recorder.take("c")) == [("stock_updates", 8, 6)]  # live, chained to what it holds


def test_a_fresh_subscription_is_confirmed_with_a_snapshot_and_a_fresh_stream_starts_with_one():
    core, h, _recorder = hub()
    feed(core, ("PKN", "PKO"), ("PKN",))
    ws = connected(h, "ws")
    [confirmed] = send(ws, type="subscribe", symbols=["pko", "PKN", "CDR"])
    sse = h.open("sse", 0.0)
    [snapshot] = perform(sse, sse.open_stream(KEY, None))
    assert (confirmed["type"], confirmed["seq"], confirmed["recovered"], confirmed["replay"]) == (
        "subscription_confirmed",
        2,
        False,
        0,
    )
    assert confirmed["symbols"] == ["CDR", "PKN", "PKO"] and symbols(confirmed) == ["PKN", "PKO"]
    assert confirmed["snapshot"][0]["price"] == 2.0  # the latest PKN
    assert (snapshot["type"], snapshot["seq"], snapshot["epoch"], symbols(snapshot)) == (
        "snapshot",
        2,
        EPOCH,
        ["PKN", "PKO"],
    )
    assert sse.live and ws.live


def test_prev_seq_chains_per_subscription_on_websocket_and_per_client_on_sse():
    core, ws_hub, ws_got = hub()
    _, sse_hub, sse_got = hub(core=core, messages_per_second=None, shared_chains=False)
    feed(core, ("PKN",), ("KGH",))  # PKN's newest batch is 1; the stream is at 2
    ws, sse = connected(ws_hub, "ws"), sse_hub.open("sse", 0.0)
    send(ws, type="subscribe", symbols=["PKN"])
    perform(sse, sse.open_stream(frozenset({"PKN"}), None))
    ws_got.take("ws")
    feed(core, ("PKN",), ("PKO",), ("PKN",))
    assert seqs(ws_got.take("ws")) == [("stock_updates", 3, 1), ("stock_updates", 5, 3)]  # <= seq it holds: no gap
    assert seqs(sse_got.take("sse")) == [("stock_updates", 3, 2), ("stock_updates", 5, 3)]  # the batch it was sent


def test_an_unreadable_last_event_id_answers_resync_and_joins():
    core, h, _ = hub()
    feed(core, ("PKN",))
    sse = h.open("sse", 0.0)
    [resync] = perform(sse, sse.open_stream(frozenset({"PKN"}), None, unreadable=True))
    assert (resync["reason"], resync["seq"], symbols(resync)) == ("invalid_last_event_id", 1, ["PKN"])
    assert sse.live


def test_a_long_catch_up_goes_in_steps_and_joins_with_no_gap_and_no_duplicate_while_batches_arrive():
    core, h, recorder = hub(size=500)
    feed(core, *[("PKN",)] * (2 * REPLAY_STEP + 5))
    session = connected(h, "c")
    actions = session.receive(json.dumps({"type": "subscribe", "since_seq": 0, "epoch": EPOCH}), 0.0)
    got, steps = [], 0
    while actions:
        replayed = False
        for action in actions:
            if isinstance(action, Send):
                got.append(json.loads(action.message.payload))
            elif isinstance(action, Replay):
                assert len(action.messages) <= REPLAY_STEP
                got += [json.loads(m.payload) for m in action.messages]
                replayed = True
        if replayed:
            steps += 1
            if steps <= 3:
                feed(core, ("PKO",), ("KGH",))  # published while the replay was being sent
            assert not recorder.got["c"] and steps < 10  # not live yet: nothing fanned out to it
        actions = session.catch_up() if replayed else []
    feed(core, ("PKN",))
    got += recorder.take("c")
    updates = [m for m in got if m["type"] == "stock_updates"]
    assert got[0]["type"] == "subscription_confirmed" and steps >= 3
    assert [m["seq"] for m in updates] == list(range(1, core.history.seq + 1))
    assert all(m["prev_seq"] == m["seq"] - 1 for m in updates)


@pytest.mark.parametrize("cause", ["epoch_changed", "history_exceeded"])
def test_a_catch_up_overtaken_by_the_stream_ends_in_a_resync(cause):
    core, h, _recorder = hub(size=REPLAY_STEP + 8)
    feed(core, *[("PKN",)] * (REPLAY_STEP + 4))
    session = connected(h, "c")
    actions = session.receive(json.dumps({"type": "subscribe", "since_seq": 0, "epoch": EPOCH}), 0.0)
    assert isinstance(actions[-1], Replay)
    if cause == "epoch_changed":
        core.feed(nb(1, "PKO", epoch="e2"))
    else:
        feed(core, *[("KGH",)] * (REPLAY_STEP + 8))  # the unsent part falls out of the history
    [resync] = perform(session, session.catch_up())
    h_ = core.history
    assert (resync["type"], resync["reason"], resync["epoch"], resync["seq"]) == ("resync", cause, h_.epoch, h_.seq)
    assert session.live and symbols(resync) == (["PKN", "PKO"] if cause == "epoch_changed" else ["KGH", "PKN"])


def test_a_new_epoch_resyncs_every_live_session_with_a_snapshot_for_its_key():
    core, h, recorder = hub()
    feed(core, ("PKN", "PKO"), ("KGH",))
    pkn, every, _idle = connected(h, "pkn"), connected(h, "all"), connected(h, "idle")
    send(pkn, type="subscribe", symbols=["PKN"])
    send(every, type="subscribe")
    core.feed(nb(1, "PKO", "CDR", epoch="e2"))  # the broker lost its history: a new epoch, every quote seeded
    [a], [b] = recorder.take("pkn"), recorder.take("all")
    assert (a["type"], a["reason"], a["epoch"], a["seq"], symbols(a)) == ("resync", "epoch_changed", "e2", 1, ["PKN"])
    assert a["snapshot"][0]["price"] == 1.0  # the latest PKN known, from the old epoch
    assert symbols(b) == ["CDR", "KGH", "PKN", "PKO"] and b["all"] is True
    assert not recorder.take("idle")  # not subscribed: no snapshot to replace
    assert h.stats.resynced == 2
    core.feed(nb(2, "PKN", "PKO", epoch="e2"))
    [next_a] = recorder.take("pkn")
    assert (next_a["seq"], next_a["epoch"]) == (2, "e2") and next_a["prev_seq"] <= a["seq"]


# --- every reply to a client message ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, code",
    [
        ("{not json", "invalid_json"),
        ('["subscribe"]', "invalid_message"),
        ('{"type": "subscribe", "symbols": "PKN"}', "invalid_message"),
        ('{"type": "subscribe", "since_seq": 3}', "invalid_message"),
        ('{"type": "ping", "id": [1]}', "invalid_message"),
        ('{"type": "unsubscribe", "symbols": ["PKN"]}', "invalid_message"),  # from everything, no symbol list
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "subscribe", "symbols": ["PKN", "PKO", "KGH"]}', "too_many_subscriptions"),
        ('{"type": "auth", "token": "late"}', "already_authenticated"),
    ],
)
def test_a_refused_message_gets_one_error_and_changes_nothing(raw, code):
    _core, h, _ = hub(universe=None, max_subscriptions=2)
    session = connected(h, "c")
    if code == "invalid_message" and "unsubscribe" in raw:
        send(session, type="subscribe")
    before = (session.key, session.live)
    [error] = perform(session, session.receive(raw, 0.0))
    assert (error["type"], error["code"]) == ("error", code) and error["message"]
    assert (session.key, session.live) == before and h.stats.errors_sent == 1


def test_unknown_symbols_are_named_and_the_known_ones_still_subscribed():
    _, h, _ = hub()
    session = connected(h, "c")
    error, confirmed = send(session, type="subscribe", symbols=["PKN", "NOPE"])
    assert (error["code"], error["symbols"]) == ("unknown_symbols", ["NOPE"])
    assert confirmed["type"] == "subscription_confirmed" and confirmed["symbols"] == ["PKN"]


def test_unsubscribe_status_and_ping():
    core, h, recorder = hub()
    core.feed(nb(1, "PKN", "PKO"))
    core.feed(MarketStatusChanged(MarketStatus.OPEN, None, datetime(2026, 1, 5, 8, tzinfo=UTC)))
    session, _other = connected(h, "c"), connected(h, "other")
    send(session, type="subscribe", symbols=["PKN", "PKO"])
    [left] = send(session, type="unsubscribe", symbols=["PKO"])
    [status] = send(session, type="status")
    [pong] = send(session, type="ping", id="p1")
    [nothing] = send(session, type="unsubscribe")
    recorder.take("c")
    feed(core, ("PKN",))
    assert (left["type"], left["symbols"], left["seq"], left["snapshot"]) == ("subscription_confirmed", ["PKN"], 1, [])
    assert status == {
        "type": "status",
        "timestamp": "t",
        "subscriptions": {"all": False, "symbols": ["PKN"]},
        "clients": 2,
        "epoch": EPOCH,
        "seq": 1,
        "history": 1,
        "market_status": "open",
        "version": __version__,
        "protocol": 1,
    }
    assert pong == {"type": "pong", "timestamp": "t", "id": "p1"}
    assert nothing["symbols"] == [] and not session.live and not recorder.take("c")


def test_the_connection_message_says_where_the_stream_is():
    core, h, _ = hub(authenticated=True)
    core.feed(nb(1, "PKN"))
    hello = json.loads(connected(h, "c").hello().payload)
    assert (hello["type"], hello["epoch"], hello["seq"], hello["authenticated"]) == ("connection", EPOCH, 1, True)


def test_the_message_budget_warns_once_refuses_silently_then_closes_a_client_that_keeps_flooding():
    _, h, _ = hub(messages_per_second=5)
    session = connected(h, "c")
    replies = [send(session, now=0.0, type="ping") for _ in range(6)]
    assert [r[0]["type"] for r in replies] == ["pong"] * 5 + ["error"] and replies[5][0]["code"] == "rate_limited"
    assert send(session, now=0.2, type="ping")[0]["type"] == "pong"  # a token came back
    # Still within the burst that was warned about: refused silently, then closed at the tenth strike.
    flood = [session.receive('{"type": "ping"}', 0.2) for _ in range(10)]
    assert flood == [[]] * 8 + [[Close(1008, "rate limit exceeded", "rate_limited")]] + [[]]
    assert session.closed and session not in h.sessions and not session.live
    assert h.stats.rate_limited == 10


def test_market_status_reaches_every_client_and_alerts_those_following_the_symbol():
    core, h, recorder = hub()
    pkn, pko, _idle = connected(h, "pkn"), connected(h, "pko"), connected(h, "idle")
    send(pkn, type="subscribe", symbols=["PKN"])
    send(pko, type="subscribe", symbols=["PKO"])
    at = datetime(2026, 1, 5, 10, tzinfo=UTC)
    core.feed(MarketStatusChanged(MarketStatus.CLOSED, MarketStatus.OPEN, at))
    core.feed(Alert("pkn_up", "change_percent", "PKN", "PKN up 5%", at, 66.0, 5.0, 5.0))
    core.feed(Alert("outbox_full", "system", None, "questdb outbox is full", at))
    got = {peer: [m["type"] for m in recorder.take(peer)] for peer in ("pkn", "pko", "idle")}
    assert got == {
        "pkn": ["market_status", "alert", "alert"],
        "pko": ["market_status", "alert"],
        "idle": ["market_status", "alert"],
    }
    assert core.market_status is MarketStatus.CLOSED
