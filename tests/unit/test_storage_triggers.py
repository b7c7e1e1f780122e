"""Storage triggers at the KVS node, without sockets: the registry, the owed runs, and the messages' wire form.

The scheduler's placement of runs and the executor's acknowledgements are tested with those states.
"""

import itertools

import pytest

from cloudburst import keys
from cloudburst.errors import DecodeError
from cloudburst.kvs.engine import MemoryEngine
from cloudburst.kvs.state import KvsState, StorageTopology, firing_key
from cloudburst.kvs.triggers import FIRST_RETRY_PAUSE, DeadFiring, TriggerOutbox, TriggerRegistry
from cloudburst.lattices import LwwLattice, SetLattice
from cloudburst.protocol import codec, values
from cloudburst.protocol.messages import KeyRequest, KeyTuple, LatticeType, RequestType
from cloudburst.protocol.runtime_messages import FunctionCall
from cloudburst.protocol.trigger_messages import TriggerAck, TriggerFiring, TriggerSpec
from cloudburst.testing import FakeClock

ACK = "tcp://10.0.0.9:6960"
SCHEDULERS = ("tcp://10.0.0.1:5007", "tcp://10.0.0.2:5007")


def spec(name="t", function="f", *, key="", prefix="in/", ack_timeout=5.0, max_attempts=3):
    return TriggerSpec(
        name, function, SCHEDULERS, key=key, prefix="" if key else prefix, ack_timeout=ack_timeout,
        max_attempts=max_attempts,
    )  # fmt: skip


def sequential_ids():
    counter = itertools.count(1)
    return lambda: f"id{next(counter)}"


# -- the registry ------------------------------------------------------------------------------------------------


def test_the_registry_matches_exact_keys_and_prefixes_and_forgets_removed_triggers():
    registry = TriggerRegistry()
    registry.put(spec("exact", key="in/1"))
    registry.put(spec("prefix", prefix="in/"))
    registry.put(spec("other", prefix="out/"))
    assert [s.name for s in registry.matching("in/1")] == ["exact", "prefix"]
    assert [s.name for s in registry.matching("in/2")] == ["prefix"]
    assert registry.matching("elsewhere") == []
    registry.remove("exact")
    registry.put(spec("prefix", prefix="zzz/"))  # replacing a trigger drops its old prefix
    assert registry.matching("in/1") == []
    assert len(registry) == 2


# -- the outbox --------------------------------------------------------------------------------------------------


def make_outbox():
    return TriggerOutbox(ACK, sequential_ids())


def test_a_run_is_owed_until_acknowledged():
    outbox = make_outbox()
    firing = outbox.fire(spec(), "in/1", LatticeType.LWW, b"p")
    dispatch = outbox.deliver(firing, spec(), now=0.0)
    assert dispatch.address == SCHEDULERS[0]
    assert dispatch.firing == TriggerFiring("id1", "t", "f", "in/1", LatticeType.LWW, b"p", 1, ACK)
    assert outbox.due(4.9) == ([], [])
    assert outbox.acknowledge(TriggerAck("id1"), 1.0) == firing
    assert len(outbox) == 0
    assert outbox.acknowledge(TriggerAck("id1"), 1.0) is None  # a duplicate acknowledgement is harmless
    assert outbox.due(100.0) == ([], [])


def test_an_unacknowledged_run_is_delivered_again_to_the_next_scheduler_and_given_up_after_its_attempts():
    outbox = make_outbox()
    outbox.deliver(outbox.fire(spec(), "in/1", LatticeType.LWW, b"p"), spec(), now=0.0)
    again, dead = outbox.due(5.0)
    assert dead == []
    assert [(d.address, d.firing.attempt) for d in again] == [(SCHEDULERS[1], 2)]
    again, _ = outbox.due(10.0)
    assert [(d.address, d.firing.attempt) for d in again] == [(SCHEDULERS[0], 3)]
    again, dead = outbox.due(15.0)
    assert again == []
    assert [(d.firing.id, d.firing.attempt) for d in dead] == [("id1", 3)]
    assert "no acknowledgement within 5.0 s" in dead[0].reason
    assert len(outbox) == 0


def test_a_failed_run_is_retried_after_a_growing_pause_and_set_aside_after_the_last_attempt():
    outbox = make_outbox()
    outbox.deliver(outbox.fire(spec(), "in/1", LatticeType.LWW, b"p"), spec(), now=0.0)
    assert outbox.acknowledge(TriggerAck("id1", "ValueError: no"), 1.0) is None
    assert outbox.due(1.0 + FIRST_RETRY_PAUSE / 2) == ([], [])
    (again,), _ = outbox.due(1.0 + FIRST_RETRY_PAUSE)
    assert again.firing.attempt == 2
    assert again.firing.last_error == "ValueError: no"
    assert outbox.acknowledge(TriggerAck("id1", "still no"), 2.0) is None
    assert outbox.due(2.0 + FIRST_RETRY_PAUSE) == ([], [])  # the pause doubled
    (again,), _ = outbox.due(2.0 + 2 * FIRST_RETRY_PAUSE)
    assert again.firing.attempt == 3
    dead = outbox.acknowledge(TriggerAck("id1", "never"), 3.0)
    assert isinstance(dead, DeadFiring)
    assert dead.reason == "never"
    assert len(outbox) == 0


def test_restored_runs_are_delivered_at_once_and_those_of_deleted_triggers_are_dead():
    registry = TriggerRegistry()
    registry.put(spec())
    outbox = TriggerOutbox("tcp://new:6960", sequential_ids())
    kept = TriggerFiring("a", "t", "f", "in/1", LatticeType.LWW, b"p", 1, "tcp://old:6960")
    orphan = TriggerFiring("b", "gone", "f", "in/2", LatticeType.LWW, b"p", 1, "tcp://old:6960")
    dead = outbox.restore([kept, orphan], registry, now=10.0)
    assert [d.firing.id for d in dead] == ["b"]
    (again,), _ = outbox.due(10.0)
    assert again.firing.acknowledge_to == "tcp://new:6960"  # acknowledgements come to this process now
    assert again.firing.attempt == 2


# -- the KVS node ------------------------------------------------------------------------------------------------


def put(key, lattice):
    lattice_type, payload = codec.encode_lattice(lattice)
    return KeyRequest(RequestType.PUT, (KeyTuple(key, lattice_type, payload=payload),), "tcp://c:1", "p")


def define(trigger):
    return put(keys.trigger_key(trigger.name), LwwLattice(1, codec.encode_trigger_spec(trigger)))


class Node:
    def __init__(self, engine=None):
        self.engine = engine or MemoryEngine()
        self.clock = FakeClock()
        self.state = KvsState(
            StorageTopology("10.0.0.9", (6200,)), self.engine, trigger_endpoint=ACK, clock=self.clock,
            new_id=sequential_ids(),
        )  # fmt: skip

    def write(self, *requests):
        return self.state.handle_batch(0, list(requests))


def test_a_matching_write_is_stored_as_owed_before_it_is_acknowledged_and_dispatched():
    node = Node()
    node.write(define(spec()))
    value = LwwLattice(5, values.serialize("hello"))
    result = node.write(put("in/1", value), put("out/1", value))
    assert [r.tuples[0].error for r in result.responses] == [0, 0]
    (dispatch,) = result.dispatches
    firing = dispatch.firing
    assert (firing.key, firing.function, firing.acknowledge_to) == ("in/1", "f", ACK)
    assert codec.decode_lattice(firing.lattice_type, firing.payload) == value
    (stored,) = node.engine.get_many([firing_key(firing.id)])
    assert stored is not None
    node.state.handle_trigger_acks([TriggerAck(firing.id)])
    assert node.engine.get_many([firing_key(firing.id)]) == [None]


def test_each_write_of_a_batch_fires_and_rejected_and_metadata_writes_do_not():
    node = Node()
    node.write(define(spec(prefix="")), define(spec("all", prefix="A")))  # the first is invalid: ignored
    node.write(put("Ak", LwwLattice(1, b"x")))
    result = node.write(
        put("Ak", LwwLattice(2, b"y")),
        put("Ak", LwwLattice(3, b"z")),
        put("Ak", SetLattice(frozenset())),  # a type mismatch: not a write
        put(keys.cache_key_set_key("10.0.0.3"), LwwLattice(1, codec.encode_string_set(["Ak"]))),
    )
    assert [d.firing.attempt for d in result.dispatches] == [1, 1]
    assert [codec.decode_lattice(d.firing.lattice_type, d.firing.payload).value for d in result.dispatches] == [
        b"y",
        b"z",
    ]


def test_deleting_a_trigger_stops_it_and_a_restarted_node_still_owes_its_runs():
    engine = MemoryEngine()
    node = Node(engine)
    node.write(define(spec()))
    owed = node.write(put("in/1", LwwLattice(1, b"x"))).dispatches[0].firing
    node.write(put(keys.trigger_key("t"), LwwLattice(2, b"")))
    assert node.write(put("in/2", LwwLattice(1, b"x"))).dispatches == ()
    node.write(define(spec()))  # an older definition does not bring it back: the deletion's timestamp wins
    assert node.write(put("in/3", LwwLattice(1, b"x"))).dispatches == ()

    node.write(put(keys.trigger_key("t"), LwwLattice(3, codec.encode_trigger_spec(spec()))))
    restarted = Node(engine)
    (again,) = restarted.state.due_trigger_runs()
    assert (again.firing.id, again.firing.key) == (owed.id, "in/1")
    assert len(restarted.write(put("in/4", LwwLattice(1, b"x"))).dispatches) == 1


def test_a_run_failing_on_every_attempt_is_kept_as_dead():
    node = Node()
    node.write(define(spec(max_attempts=1)))
    firing = node.write(put("in/1", LwwLattice(1, b"x"))).dispatches[0].firing
    node.state.handle_trigger_acks([TriggerAck(firing.id, "ValueError: bad")])
    assert node.engine.get_many([firing_key(firing.id)]) == [None]
    (dead,) = node.engine.get_many([keys.TRIGGER_DEAD_PREFIX + firing.id])
    kept = codec.decode_trigger_firing(codec.decode_lattice(dead.lattice_type, dead.payload).value)
    assert kept.last_error == "ValueError: bad"


# -- the wire ----------------------------------------------------------------------------------------------------


def test_trigger_messages_round_trip_and_bad_ones_are_refused():
    firing = TriggerFiring("id1", "t", "f", "in/1", LatticeType.SET, b"\x01", 3, ACK, "boom")
    assert codec.decode_trigger_firing(codec.encode_trigger_firing(firing)) == firing
    assert codec.decode_scheduler_message(codec.encode_scheduler_message(firing)) == firing
    call = FunctionCall("f", trigger=firing)
    assert codec.decode_executor_request(codec.encode_executor_request(call)) == call
    assert codec.decode_trigger_spec(codec.encode_trigger_spec(spec())) == spec()
    assert codec.decode_trigger_ack(codec.encode_trigger_ack(TriggerAck("id1", "e"))) == TriggerAck("id1", "e")
    with pytest.raises(DecodeError, match="exactly one of key and prefix"):
        codec.decode_trigger_spec(codec.encode_trigger_spec(TriggerSpec("t", "f", SCHEDULERS)))
    with pytest.raises(DecodeError, match="names no scheduler"):
        codec.decode_trigger_spec(codec.encode_trigger_spec(TriggerSpec("t", "f", (), key="k")))
    with pytest.raises(DecodeError, match="positive"):
        codec.decode_trigger_spec(codec.encode_trigger_spec(spec(ack_timeout=-1.0)))
    with pytest.raises(DecodeError, match="names no firing"):
        codec.decode_trigger_ack(b"")
    with pytest.raises(DecodeError):
        codec.decode_trigger_firing(b"\xff\xff")
