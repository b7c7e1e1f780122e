"""The scheduler's request ledger keeps its indexes in agreement whatever is entered, finished or lost."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudburst.protocol.runtime_messages import DagCall, FunctionCall
from cloudburst.scheduler.ledger import LedgerEntry, RequestLedger

executors = st.sampled_from([("10.0.0.1", 0), ("10.0.0.1", 1), ("10.0.0.2", 0)])
ids = st.sampled_from(["a", "b", "c", "out"])
operations = st.one_of(
    st.tuples(st.just("call"), ids, ids, executors),
    st.tuples(st.just("dag"), ids, ids, st.sets(executors, min_size=1)),
    st.tuples(st.just("finish"), st.lists(ids, max_size=3)),
    st.tuples(st.just("lose"), executors),
    st.tuples(st.just("wait"), ids),
    st.tuples(st.just("due"), st.floats(0, 10)),
)


@settings(max_examples=300)
@given(st.lists(operations, max_size=40))
def test_indexes_agree_after_any_sequence(steps):
    ledger = RequestLedger(max_entries=5)
    for step in steps:
        kind = step[0]
        if kind == "call":
            _, key, attempt, eid = step
            ledger.add(LedgerEntry(key, FunctionCall("f", response_key=key), attempt, {eid: "i"}))
        elif kind == "dag":
            _, key, attempt, eids = step
            ledger.add(LedgerEntry(key, DagCall("d", output_key=key), attempt, dict.fromkeys(eids, "i")))
        elif kind == "finish":
            ledger.finish(step[1])
        elif kind == "lose":
            for entry in ledger.lose(step[1], "gone"):
                ledger.wait(entry, 0.0)
        elif kind == "wait":
            entry = ledger.find(step[1])
            if entry is not None:
                ledger.finish([entry.attempt_id])
                ledger.wait(entry, 0.0)
        else:
            ledger.due(step[1])
        ledger.check()
        for eid in [("10.0.0.1", 0), ("10.0.0.1", 1), ("10.0.0.2", 0)]:
            assert ledger.queued(eid) >= 0
