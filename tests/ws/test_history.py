"""The seq/epoch history without sockets: numbering, ring buffer, snapshots and the resume decision."""

import pytest

from streamer.ws.history import FutureSeq, Groups, History, ResyncReason
from streamer.ws.protocol import ALL


def batch(*symbols: str, tag: str = "") -> dict[str, bytes]:
    return {s: f"{s}{tag}".encode() for s in symbols}


def test_batches_are_numbered_under_a_random_epoch():
    h = History(10)
    assert h.seq == 0 and len(h.epoch) == 8 and History(10).epoch != h.epoch
    assert [h.append("t", batch("PKN")).seq for _ in range(3)] == [1, 2, 3]
    with pytest.raises(ValueError):
        h.append("t", {})


def test_only_the_last_size_batches_are_kept():
    h = History(3)
    for i in range(5):
        h.append(f"t{i}", batch("PKN", tag=str(i)))
    assert h.depth == 3 and h.oldest_seq == 3 and h.seq == 5
    assert [e.seq for e in h.after(2)] == [3, 4, 5]
    assert [e.seq for e in h.after(4)] == [5]
    assert h.after(5) == [] and h.after(9) == []
    assert h.after(1) is None  # seq 2 is gone


def test_resume_replays_what_was_missed():
    h = History(5)
    for i in range(4):
        h.append("t", batch("PKN" if i % 2 else "PKO"))
    assert [e.seq for e in h.resume(1, h.epoch)] == [2, 3, 4]
    assert h.resume(4, h.epoch) == []


def test_resume_asks_for_resync_when_the_epoch_changed_or_history_was_exceeded():
    h = History(2)
    for _ in range(4):
        h.append("t", batch("PKN"))
    assert h.resume(3, "another-epoch") is ResyncReason.EPOCH_CHANGED
    assert h.resume(1, h.epoch) is ResyncReason.HISTORY_EXCEEDED
    assert [e.seq for e in h.resume(2, h.epoch)] == [3, 4]
    with pytest.raises(FutureSeq):
        h.resume(5, h.epoch)


def test_no_history_means_resync_unless_nothing_was_missed():
    h = History(0)
    h.append("t", batch("PKN"))
    assert h.resume(0, h.epoch) is ResyncReason.HISTORY_EXCEEDED
    assert h.resume(1, h.epoch) == []
    assert h.latest == {"PKN": b"PKN"}


def test_select_filters_a_batch_for_a_subscription_in_batch_order():
    h = History(5)
    entry = h.append("t", batch("PKO", "KGH", "PKN"))
    assert entry.select(ALL) == [b"PKO", b"KGH", b"PKN"]
    assert entry.select(frozenset({"PKN", "PKO"})) == [b"PKO", b"PKN"]
    assert entry.select(frozenset({"CDR"})) == []
    assert entry.matches(frozenset({"KGH", "CDR"})) and not entry.matches(frozenset({"CDR"}))


def test_snapshot_is_the_latest_quote_of_each_subscribed_symbol():
    h = History(5)
    h.append("t", batch("PKN", "PKO", tag="1"))
    h.append("t", batch("PKN", tag="2"))
    assert h.snapshot(frozenset({"PKN", "PKO", "CDR"})) == [b"PKN2", b"PKO1"]
    assert h.snapshot(ALL) == [b"PKN2", b"PKO1"]


def test_last_match_finds_the_newest_batch_for_a_key():
    h = History(5)
    h.append("t", batch("PKN"))
    h.append("t", batch("PKO"))
    h.append("t", batch("KGH"))
    assert h.last_match(frozenset({"PKN"})) == 1
    assert h.last_match(frozenset({"PKN", "PKO"})) == 2
    assert h.last_match(ALL) == 3
    assert h.last_match(frozenset({"CDR"})) == 0


def test_listeners_see_every_new_entry_and_a_failing_one_does_not_stop_the_others():
    h = History(2)
    seen = []

    def broken(entry):
        raise RuntimeError("listener bug")

    h.listeners += [broken, lambda e: seen.append(e.seq)]
    h.append("t", batch("PKN"))
    h.append("t", batch("PKO"))
    assert seen == [1, 2] and h.seq == 2


def test_groups_share_one_key_object_and_chain_prev_seq_per_key():
    h = History(10)
    h.append("t", batch("PKN"))  # seq 1, before anyone subscribed
    groups = Groups(h)
    key = groups.join("a", frozenset({"PKN", "PKO"}))
    assert groups.join("b", frozenset({"PKO", "PKN"})) is key and len(groups) == 1
    groups.join("c", frozenset({"KGH"}))

    def plan(entry):
        return [(sorted(g.members), quotes, prev) for g, quotes, prev in groups.plan(entry)]

    assert plan(h.append("t", batch("PKO", "CDR"))) == [(["a", "b"], [b"PKO"], 1)]  # seq 2
    assert plan(h.append("t", batch("CDR"))) == []  # seq 3: nothing for anyone
    assert plan(h.append("t", batch("PKN", "KGH"))) == [(["a", "b"], [b"PKN"], 2), (["c"], [b"KGH"], 0)]
    assert [sorted(g.members) for g in groups.following("KGH")] == [["c"]]
    groups.leave("c", frozenset({"KGH"}))
    assert len(groups) == 1 and list(groups.following("KGH")) == []
