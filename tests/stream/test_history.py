"""The history without sockets: batches numbered by their publisher, the ring buffer, whole-state loads, snapshots,
the resume decision, and the subscription groups' prev_seq chains."""

import pytest

from streamer.stream.feed import NumberedBatch, OutOfSequence, StreamState
from streamer.stream.groups import Groups
from streamer.stream.history import History, ResyncReason
from streamer.stream.keys import ALL, covers, select


def nb(seq: int, *symbols: str, epoch: str = "e1", tag: str = "") -> NumberedBatch:
    return NumberedBatch(epoch, seq, f"t{seq}", {s: f"{s}{tag}".encode() for s in symbols})


def filled(size: int, n: int, epoch: str = "e1") -> History:
    h = History(size)
    h.load(StreamState(epoch, 0))
    for seq in range(1, n + 1):
        h.apply(nb(seq, "PKN", epoch=epoch, tag=str(seq)))
    return h


def test_batches_keep_the_seq_and_epoch_their_publisher_gave_them():
    h = History(10)
    assert (h.epoch, h.seq) == ("", 0)  # nothing loaded yet
    assert h.apply(nb(1, "PKN", epoch="e1")) is True  # the first batch of an epoch starts it
    assert [h.apply(nb(s, "PKN", epoch="e1")) for s in (2, 3)] == [False, False]
    assert (h.epoch, h.seq, h.depth) == ("e1", 3, 3)


@pytest.mark.parametrize(
    "batch, expected, got",
    [
        (nb(5, "PKN"), 4, 5),  # a gap: seq 4 never arrived
        (nb(3, "PKN"), 4, 3),  # a repeat
        (nb(2, "PKN", epoch="e2"), 1, 2),  # a new epoch joined in the middle: its earlier quotes are unknown
    ],
)
def test_anything_but_the_next_batch_is_refused_and_changes_nothing(batch, expected, got):
    h = filled(10, 3)
    with pytest.raises(OutOfSequence) as refused:
        h.apply(batch)
    assert (refused.value.expected, refused.value.got) == (expected, got)
    assert refused.value.epoch in str(refused.value) and f"seq {expected}" in str(refused.value)
    assert (h.epoch, h.seq, h.depth, h.latest) == ("e1", 3, 3, {"PKN": b"PKN3"})


def test_a_new_epoch_replaces_the_history_and_keeps_the_latest_quotes_complete():
    h = filled(10, 3)
    h.apply(nb(3 + 1, "PKO", tag="4"))
    assert h.apply(nb(1, "PKN", epoch="e2", tag="new")) is True
    assert (h.epoch, h.seq, h.depth, h.oldest_seq) == ("e2", 1, 1, 1)
    assert h.latest == {"PKN": b"PKNnew", "PKO": b"PKO4"}


def test_only_the_last_size_batches_are_kept():
    h = filled(3, 5)
    assert h.depth == 3 and h.oldest_seq == 3 and h.seq == 5
    assert [e.seq for e in h.after(2)] == [3, 4, 5]
    assert [e.seq for e in h.after(2, limit=2)] == [3, 4]
    assert [e.seq for e in h.after(4)] == [5]
    assert h.after(5) == [] and h.after(9) == []
    assert h.after(1) is None  # seq 2 is gone


def test_a_whole_state_loads_at_once_and_keeps_what_fits():
    h = History(2)
    entries = [nb(s, "PKN", epoch="e7") for s in (3, 4, 5)]
    h.load(StreamState("e7", 5, {"PKN": b"p", "PKO": b"o"}, entries))
    assert (h.epoch, h.seq, h.depth, h.oldest_seq) == ("e7", 5, 2, 4)
    assert h.snapshot(ALL) == [b"p", b"o"] and h.latest == {"PKN": b"p", "PKO": b"o"}


@pytest.mark.parametrize(
    "state, says",
    [
        (StreamState("e7", 5, entries=[nb(3, "PKN", epoch="e7"), nb(4, "PKN", epoch="e7")]), "expected e7:4"),
        (StreamState("e7", 2, entries=[nb(1, "PKN", epoch="e7"), nb(3, "PKN", epoch="e7")]), "expected e7:2"),
        (StreamState("e7", 1, entries=[nb(1, "PKN", epoch="e6")]), "entry 0 is e6:1"),
        (StreamState("e7", -1), "must not be negative"),
    ],
)
def test_a_malformed_state_is_refused_with_what_is_wrong_and_changes_nothing(state, says):
    h = filled(5, 2)
    with pytest.raises(ValueError, match=says):
        h.load(state)
    assert (h.epoch, h.seq, h.depth) == ("e1", 2, 2)


@pytest.mark.parametrize(
    "since, epoch, outcome",
    [
        (1, "e1", [2, 3, 4]),
        (4, "e1", []),
        (2, "e1", [3, 4]),
        (3, "another-epoch", ResyncReason.EPOCH_CHANGED),
        (0, "e1", ResyncReason.HISTORY_EXCEEDED),  # seq 1 is no longer kept
        (5, "e1", ResyncReason.SEQ_AHEAD),  # not reached yet: never an error
    ],
)
def test_resume_replays_what_was_missed_or_says_why_to_resync(since, epoch, outcome):
    h = filled(3, 4)
    got = h.resume(since, epoch)
    assert (got if isinstance(got, ResyncReason) else [e.seq for e in got]) == outcome


def test_no_history_means_resync_unless_nothing_was_missed():
    h = filled(0, 1)
    assert h.resume(0, "e1") is ResyncReason.HISTORY_EXCEEDED
    assert h.resume(1, "e1") == []
    assert h.latest == {"PKN": b"PKN1"}


def test_select_filters_a_batch_for_a_subscription_in_batch_order():
    batch = nb(1, "PKO", "KGH", "PKN")
    assert select(batch, ALL) == [b"PKO", b"KGH", b"PKN"]
    assert select(batch, frozenset({"PKN", "PKO"})) == [b"PKO", b"PKN"]
    assert select(batch, frozenset({"CDR"})) == []
    assert covers(batch, frozenset({"KGH", "CDR"})) and not covers(batch, frozenset({"CDR"}))


def test_snapshot_is_the_latest_quote_of_each_subscribed_symbol():
    h = History(5)
    h.apply(nb(1, "PKN", "PKO", tag="1"))
    h.apply(nb(2, "PKN", tag="2"))
    assert h.snapshot(frozenset({"PKN", "PKO", "CDR"})) == [b"PKN2", b"PKO1"]
    assert h.snapshot(ALL) == [b"PKN2", b"PKO1"]


def test_last_match_finds_the_newest_batch_for_a_key():
    h = History(5)
    for seq, symbol in enumerate(("PKN", "PKO", "KGH"), 1):
        h.apply(nb(seq, symbol))
    assert h.last_match(frozenset({"PKN"})) == 1
    assert h.last_match(frozenset({"PKN", "PKO"})) == 2
    assert h.last_match(ALL) == 3
    assert h.last_match(frozenset({"CDR"})) == 0


def test_groups_share_one_key_object_and_chain_prev_seq_per_key():
    h = History(10)
    h.apply(nb(1, "PKN"))  # before anyone subscribed
    groups: Groups[str] = Groups(h)
    key = groups.join("a", frozenset({"PKN", "PKO"}))
    assert groups.join("b", frozenset({"PKO", "PKN"})) is key and len(groups) == 1
    groups.join("c", frozenset({"KGH"}))

    def plan(batch):
        h.apply(batch)
        return [(sorted(g.members), quotes, prev) for g, quotes, prev in groups.plan(batch)]

    assert plan(nb(2, "PKO", "CDR")) == [(["a", "b"], [b"PKO"], 1)]
    assert plan(nb(3, "CDR")) == []  # nothing for anyone
    assert plan(nb(4, "PKN", "KGH")) == [(["a", "b"], [b"PKN"], 2), (["c"], [b"KGH"], 0)]
    assert [sorted(g.members) for g in groups.following("KGH")] == [["c"]]
    groups.leave("c", frozenset({"KGH"}))
    assert len(groups) == 1 and list(groups.following("KGH")) == []
    h.apply(nb(1, "KGH", epoch="e2"))
    groups.restart()  # a new epoch: each chain starts at its key's newest kept batch
    assert [g.last_seq for g in groups] == [0]
