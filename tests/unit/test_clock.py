import pytest

from cloudburst.clock import (
    STAGE_SPAN,
    WRITER_BITS,
    RequestTimestamps,
    TimestampGenerator,
    split_timestamp,
    writer_id_for,
)
from cloudburst.errors import DeadlineExceeded
from cloudburst.testing import FakeClock, wait_until


def test_timestamps_embed_time_and_writer():
    clock = FakeClock(wall_start_ns=1_700_000_000_123_456_000)
    stamp = TimestampGenerator(7, clock)()
    assert split_timestamp(stamp) == (1_700_000_000_123_456, 7)
    assert stamp < 2**64


def test_timestamps_strictly_increase_when_the_clock_stalls_or_steps_back():
    clock = FakeClock()
    generate = TimestampGenerator(1, clock)
    first, second = generate(), generate()
    clock.set_wall_ns(clock.wall_ns() - 10**9)
    third = generate()
    assert first < second < third


def test_two_writers_never_collide_in_the_same_microsecond():
    clock = FakeClock()
    a, b = TimestampGenerator(1, clock), TimestampGenerator(2, clock)
    assert len({a(), b(), a(), b()}) == 4


def test_writer_ids_are_stable_and_in_range():
    assert writer_id_for("node-1") == writer_id_for("node-1")
    assert all(0 <= writer_id_for(f"n{i}") < 2**WRITER_BITS for i in range(100))


@pytest.mark.parametrize("writer", [-1, 2**WRITER_BITS])
def test_out_of_range_writer_is_refused(writer):
    with pytest.raises(ValueError, match="writer id"):
        TimestampGenerator(writer)


def test_fake_clock_never_goes_back():
    clock = FakeClock()
    clock.advance(1.5)
    assert clock.now() == 1.5
    with pytest.raises(ValueError, match="back"):
        clock.advance(-1)


def test_wait_until_returns_the_first_true_value_of_the_condition():
    answers = iter([None, 0, "ready"])
    assert wait_until(lambda: next(answers), "the third answer", timeout=5, interval=0) == "ready"


def test_wait_until_gives_up_at_its_timeout_naming_what_it_waited_for():
    with pytest.raises(DeadlineExceeded, match="waiting for the impossible"):
        wait_until(lambda: False, "the impossible", timeout=0.05, interval=0.01)


def test_a_retried_run_of_a_request_writes_with_the_lost_runs_timestamps():
    lost, retry = RequestTimestamps(1_000_000, 0, "req-1"), RequestTimestamps(1_000_000, 0, "req-1")
    assert [lost() for _ in range(3)] == [retry() for _ in range(3)]


def test_a_requests_writes_increase_within_a_run_and_downstream_functions_win():
    source, sink = RequestTimestamps(1_000_000, 0, "req-1"), RequestTimestamps(1_000_000, 2, "req-1")
    first, second = source(), source()
    assert first < second < sink()
    # Someone else's write after the request started wins over the request's retried write.
    later = TimestampGenerator(7, FakeClock(wall_start_ns=2_000_000_000))()
    assert later > RequestTimestamps(1_000_000, 0, "req-1")()


def test_two_requests_started_in_the_same_microsecond_write_distinct_timestamps():
    assert RequestTimestamps(5, 0, "req-1")() != RequestTimestamps(5, 0, "req-2")()


def test_a_run_writing_more_than_its_span_repeats_its_last_timestamp_rather_than_reach_the_next_functions():
    stamps = RequestTimestamps(0, 0, "r")
    issued = [stamps() for _ in range(STAGE_SPAN + 5)]
    assert issued[-1] == issued[STAGE_SPAN - 1] < RequestTimestamps(0, 1, "r")()
