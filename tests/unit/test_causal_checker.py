"""The consistency checker on hand-made histories: it must find each kind of anomaly, and only those."""

from __future__ import annotations

from cloudburst.testing.causal_checker import (
    AnomalyKind,
    CausalChecker,
    ObservedRead,
    ObservedWrite,
    RequestRecord,
    summarize,
)

POST = ObservedWrite("p1", (("tl", "t0"),))  # the post was written after its author read timeline version t0
TIMELINE_0 = ObservedWrite("t0")
TIMELINE_1 = ObservedWrite("t1", (("tl", "t0"), ("post", "p1")))  # the timeline then listed the post
REPLY = ObservedWrite("r1", (("tl", "t1"), ("post", "p1")))  # someone read that timeline and the post, and replied


def read(stage, key, *writes):
    return ObservedRead(stage, key, tuple(writes))


def kinds(*records):
    checker = CausalChecker()
    for record in records:
        checker.add(record)
    return summarize(checker.check())


def test_a_consistent_history_has_no_anomalies():
    record = RequestRecord("ok", (read(0, "tl", TIMELINE_1), read(0, "post", POST), read(1, "tl", TIMELINE_1)))
    assert set(kinds(record).values()) == {0}


def test_an_effect_read_without_its_cause_is_found():
    # The timeline lists the post, but the post reads as missing.
    record = RequestRecord("bad", (read(0, "tl", TIMELINE_1), read(1, "post")))
    assert kinds(record)[AnomalyKind.MISSING_CAUSE] == 1


def test_transitive_causes_count():
    # The reply follows t1, which follows the post: reading the reply and a missing post is an anomaly.
    record = RequestRecord("bad", (read(0, "reply", REPLY), read(0, "post")))
    assert kinds(record)[AnomalyKind.MISSING_CAUSE] == 1


def test_a_later_stage_reading_an_older_version_went_backwards():
    record = RequestRecord("bad", (read(0, "tl", TIMELINE_1), read(1, "tl", TIMELINE_0)))
    counts = kinds(record)
    assert counts[AnomalyKind.WENT_BACKWARDS] == 1
    assert counts[AnomalyKind.NON_REPEATABLE_READ] == 1


def test_a_key_read_twice_at_two_versions_is_not_repeatable_even_going_forward():
    record = RequestRecord("bad", (read(0, "tl", TIMELINE_0), read(1, "tl", TIMELINE_1)))
    counts = kinds(record)
    assert counts[AnomalyKind.NON_REPEATABLE_READ] == 1
    assert counts[AnomalyKind.WENT_BACKWARDS] == 0


def test_concurrent_siblings_cover_the_causes_of_either():
    other = ObservedWrite("t1b", (("tl", "t0"),))
    record = RequestRecord("ok", (read(0, "tl", TIMELINE_1, other), read(0, "post", POST)))
    assert set(kinds(record).values()) == {0}


def test_causes_learned_from_other_requests_writes_are_used():
    writer = RequestRecord("w", (), (("reply", REPLY), ("tl", TIMELINE_1)))
    reader = RequestRecord("r", (read(0, "reply", ObservedWrite("r1")), read(0, "tl", TIMELINE_0)))
    assert kinds(writer, reader)[AnomalyKind.MISSING_CAUSE] == 1


def test_long_causal_chains_do_not_exhaust_the_stack():
    checker = CausalChecker()
    writes = [ObservedWrite("w0")] + [ObservedWrite(f"w{i}", (("k", f"w{i - 1}"),)) for i in range(1, 5000)]
    checker.add(RequestRecord("chain", (), tuple(("k", write) for write in writes)))
    assert "w0" in checker.past("w4999")
    assert len(checker.past("w4999")) == 4999


def test_reading_a_key_again_after_writing_it_is_not_a_non_repeatable_read_but_missing_the_write_is_found():
    profile_0 = ObservedWrite("pr0")
    profile_1 = ObservedWrite("pr1", (("profile", "pr0"),))
    status = ObservedWrite("st1", (("profile", "pr1"),))  # written after the profile, depending on it
    writes = (("profile", profile_1), ("status", status))
    good = RequestRecord(
        "cascade",
        (
            read(0, "profile", profile_0),
            ObservedRead(0, "profile", (profile_1,), own=("pr1",)),
            ObservedRead(1, "status", (status,), own=("st1",)),
            ObservedRead(1, "profile", (profile_1,), own=("pr1",)),
        ),
        writes,
    )
    assert set(kinds(good).values()) == {0}
    # The re-read answered from the version kept before the write.
    stale = RequestRecord(
        "stale",
        (read(0, "profile", profile_0), ObservedRead(0, "profile", (profile_0,), own=("pr1",))),
        writes,
    )
    assert kinds(stale)[AnomalyKind.MISSED_OWN_WRITE] == 1
