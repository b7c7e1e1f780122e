"""The original's locality placement policy, ported to the pure scheduler: status processing, the periodic metadata
update (pruning and the caches' key sets), locality with seeded exploration, load shedding, the ``random`` and
``round-robin`` options (which now honour the filters) and the GPU pool.

The status and metadata tests are the original policy tests (``test_process_status``, ``test_process_status_not_
running``, ``test_process_status_restart``, ``test_metadata_update``) rewritten for events in, instructions out.
"""

import dataclasses
import itertools
import random
from collections import Counter

import pytest

from cloudburst.config import SchedulerConfig
from cloudburst.errors import DeadlineExceeded
from cloudburst.keys import cache_key_set_key
from cloudburst.lattices import LwwLattice, SetLattice
from cloudburst.protocol import codec
from cloudburst.protocol.messages import SerializerType
from cloudburst.protocol.runtime_messages import (
    Continuation,
    Dag,
    DagCall,
    DagSchedule,
    EncodedValue,
    ExecutorType,
    Function,
    FunctionCall,
    FunctionReference,
    GenericResponse,
    Link,
    PinFunction,
    ThreadStatus,
)
from cloudburst.scheduler.policy import (
    ExecutorCandidate,
    PlacementPolicy,
    PolicyOptions,
    key_locations_from_key_sets,
)
from cloudburst.scheduler.state import (
    DagCallEvent,
    DagCreateEvent,
    FunctionCallEvent,
    FunctionCreateEvent,
    InternalMessageEvent,
    KvsReadDoneEvent,
    KvsReadInstruction,
    KvsWriteDoneEvent,
    KvsWriteInstruction,
    PushInstruction,
    ReplyInstruction,
    SchedulerState,
    SchedulerTickEvent,
)
from cloudburst.testing import FakeClock

PERIOD = 5.0
IP = "127.0.0.1"


class Driver:
    """Runs one :class:`SchedulerState` against an in-memory KVS (a dict of lattices) and a fake clock."""

    def __init__(self, options=None, seed=3):
        self.clock = FakeClock(start=100.0)
        self.kvs = {}
        self.kvs_error = None
        self.reads = []
        self.replies = {}
        self.last_status = {}
        config = SchedulerConfig(host="10.0.0.1", report_period=PERIOD)
        self.state = SchedulerState(config, random.Random(seed), options=options)
        self._request_ids = itertools.count(1)

    def feed(self, event):
        """Handles ``event`` and the KVS operations it leads to; returns the pushes."""
        pushes, pending = [], [event]
        while pending:
            out = self.state.handle(pending.pop(0), self.clock.now(), self.clock.wall_ns())
            self.state.validate()
            for instruction in out:
                if isinstance(instruction, KvsReadInstruction):
                    self.reads.append(instruction.keys)
                    if self.kvs_error is not None:
                        pending.append(KvsReadDoneEvent(instruction.token, error=self.kvs_error))
                    else:
                        found = {key: self.kvs.get(key) for key in instruction.keys}
                        pending.append(KvsReadDoneEvent(instruction.token, lattices=found))
                elif isinstance(instruction, KvsWriteInstruction):
                    for key, lattice in instruction.items.items():
                        self.kvs[key] = self.kvs[key].merge(lattice) if key in self.kvs else lattice
                    pending.append(KvsWriteDoneEvent(instruction.token))
                elif isinstance(instruction, ReplyInstruction):
                    self.replies[instruction.request_id] = instruction.reply
                else:
                    assert isinstance(instruction, PushInstruction)
                    pushes.append(instruction)
        return pushes

    def status(self, executor, functions=(), *, utilization=0.0, gpu=False, running=True, incarnation="one"):
        kind = ExecutorType.GPU if gpu else ExecutorType.CPU
        message = ThreadStatus(executor[0], executor[1], tuple(functions), utilization, running, kind, incarnation)
        self.last_status[executor] = message
        return self.feed(InternalMessageEvent(message))

    def tick(self, seconds=0.0):
        self.clock.advance(seconds)
        return self.feed(SchedulerTickEvent())

    def ask(self, make_event):
        request_id = next(self._request_ids)
        pushes = self.feed(make_event(request_id))
        return self.replies.pop(request_id), pushes

    def register(self, *names):
        for name in names:
            reply, _ = self.ask(lambda rid, name=name: FunctionCreateEvent(rid, Function(name, b"body")))
            assert reply.success

    def call(self, name, references=()):
        """Calls ``name`` once and has the executor report it done (calls here run one after the other); returns
        the executor it was sent to."""
        reply, pushes = self.ask(lambda rid: FunctionCallEvent(rid, FunctionCall(name, references=references)))
        assert reply.success, reply
        [push] = pushes
        executor = executor_of(push.address)
        done = dataclasses.replace(self.last_status[executor], finished=(reply.response_id,))
        self.feed(InternalMessageEvent(done))
        return executor

    def create_dag(self, dag):
        """Creates ``dag``, every pin accepted; returns where each function was pinned."""
        request_id = next(self._request_ids)
        pushes = self.feed(DagCreateEvent(request_id, dag))
        placements = {}
        while pins := [p for p in pushes if isinstance(p.message, PinFunction)]:
            pushes = []
            for push in pins:
                placements[push.message.name] = executor_of(push.address)
                pushes += self.feed(InternalMessageEvent(GenericResponse(True, push.message.request_id)))
        assert self.replies.pop(request_id).success
        return placements

    def publish_key_sets(self, key_sets):
        """Stores each node's cache key set and runs a periodic update so the scheduler reads them."""
        for ip, cached in key_sets.items():
            self.kvs[cache_key_set_key(ip)] = LwwLattice(1, codec.encode_string_set(cached))
        self.tick()
        self.tick(PERIOD)


def executor_of(address):
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port) - 4000


def schedules_of(pushes):
    return {p.message.target_function: executor_of(p.address) for p in pushes if isinstance(p.message, DagSchedule)}


# -- status processing (the original's process_status) -----------------------------------------------------------


def test_process_status_pins_and_backs_off_a_busy_replica():
    d = Driver(PolicyOptions(random_threshold=0))
    d.status((IP, 1), ["square"], utilization=0.10)
    d.status((IP, 2), ["square"], utilization=0.90)
    assert (IP, 2) not in d.state.unpinned_executors()
    assert d.state.locations("square") == ((IP, 1), (IP, 2))
    assert set(d.state.backed_off()) == {(IP, 2)}


def test_the_only_replica_of_a_function_is_never_backed_off():
    d = Driver()
    d.status((IP, 1), ["square"], utilization=0.95)
    assert d.state.backed_off() == {}
    d.status((IP, 2), [], utilization=0.95)
    assert set(d.state.backed_off()) == {(IP, 2)}


def test_back_off_can_be_switched_off():
    d = Driver(PolicyOptions(back_off=False))
    d.status((IP, 1), utilization=0.99)
    assert d.state.backed_off() == {}


def test_an_executor_without_functions_joins_the_unpinned_pool_of_its_type():
    d = Driver()
    d.status((IP, 0))
    d.status((IP, 1), gpu=True)
    d.status((IP, 2), ["square"])
    assert d.state.unpinned_executors(ExecutorType.CPU) == ((IP, 0),)
    assert d.state.unpinned_executors(ExecutorType.GPU) == ((IP, 1),)


def test_process_status_not_running_forgets_the_executor_everywhere():
    d = Driver()
    d.status((IP, 1), ["square"])
    d.status((IP, 2), utilization=0.9)
    d.status((IP, 1), running=False)
    d.status((IP, 2), running=False)
    assert d.state.executors() == ()
    assert d.state.unpinned_executors() == ()
    assert d.state.locations("square") == ()
    # A departure of an executor never seen is not an error (the original raised on missing entries).
    d.status(("10.9.9.9", 0), running=False)
    assert d.state.executors() == ()


def test_process_status_restart_returns_the_executor_to_the_unpinned_pool():
    d = Driver()
    d.status((IP, 1), ["square"])
    d.status((IP, 1), [])
    assert d.state.locations("square") == ()
    assert (IP, 1) in d.state.unpinned_executors()


def test_a_new_incarnation_loses_the_old_locations_even_if_it_names_functions():
    d = Driver()
    d.status((IP, 1), ["square"])
    d.status((IP, 1), ["cube"], incarnation="two")
    assert d.state.locations("square") == ()
    assert d.state.locations("cube") == ((IP, 1),)
    assert (IP, 1) not in d.state.unpinned_executors()


# -- the periodic update (the original's update()) ----------------------------------------------------------------


def test_metadata_update_prunes_old_entries_and_rebuilds_key_locations():
    old_ip, new_ip = "127.0.0.1", "192.168.0.1"
    old_executor, new_executor = (old_ip, 1), (new_ip, 2)
    d = Driver(PolicyOptions(random_threshold=0))
    d.register("f")
    d.tick()
    # The old executor is a GPU executor so that one-shot calls all go to the new one.
    d.status(old_executor, utilization=0.9, gpu=True)
    d.status(new_executor, utilization=0.1)
    for _ in range(10):
        assert d.call("f") == new_executor
    d.clock.advance(10)
    d.status(new_executor, utilization=0.9)
    for _ in range(10):
        assert d.call("f") == new_executor
    assert set(d.state.backed_off()) == {old_executor, new_executor}
    d.kvs[cache_key_set_key(old_ip)] = LwwLattice(0, codec.encode_string_set(["key1", "key2", "key3"]))
    d.kvs[cache_key_set_key(new_ip)] = LwwLattice(0, codec.encode_string_set(["key3", "key4", "key5"]))

    d.tick()

    assert d.reads[-1] == (cache_key_set_key(old_ip), cache_key_set_key(new_ip))
    assert d.state.backed_off() == {new_executor: 110.0}
    assert d.state.recent_assignments(new_executor) == 10
    assert d.state.key_locations() == {
        "key1": (old_ip,),
        "key2": (old_ip,),
        "key3": (old_ip, new_ip),
        "key4": (new_ip,),
        "key5": (new_ip,),
    }


def test_the_key_sets_are_read_through_a_kvs_instruction_once_per_report_period():
    d = Driver()
    d.status(("10.0.5.2", 0))
    d.status(("10.0.5.1", 0))
    d.status(("10.0.5.1", 1))
    state = d.state
    assert state.handle(SchedulerTickEvent(), 100.0, 0) == []
    assert state.handle(SchedulerTickEvent(), 102.0, 0) == []
    [read] = [i for i in state.handle(SchedulerTickEvent(), 105.0, 0) if isinstance(i, KvsReadInstruction)]
    assert read.keys == ("ANNA_METADATA|cache_ip|10.0.5.1", "ANNA_METADATA|cache_ip|10.0.5.2")
    # The state goes on serving while the read is out; its outcome arrives as an event.
    found = {read.keys[0]: LwwLattice(1, codec.encode_string_set(["k"])), read.keys[1]: None}
    assert state.handle(KvsReadDoneEvent(read.token, lattices=found), 105.5, 0) == []
    assert state.key_locations() == {"k": ("10.0.5.1",)}


def test_missing_empty_and_undecodable_key_sets_are_skipped():
    d = Driver()
    for ip in ("10.0.5.1", "10.0.5.2", "10.0.5.3", "10.0.5.4"):
        d.status((ip, 0))
    d.kvs[cache_key_set_key("10.0.5.2")] = LwwLattice(1, b"\xff\xff not a StringSet")
    d.kvs[cache_key_set_key("10.0.5.3")] = SetLattice(frozenset({b"wrong lattice"}))
    d.publish_key_sets({"10.0.5.4": ["k"]})
    assert d.state.key_locations() == {"k": ("10.0.5.4",)}


def test_a_failed_key_set_read_keeps_the_last_locations():
    d = Driver()
    d.status(("10.0.5.1", 0))
    d.publish_key_sets({"10.0.5.1": ["k"]})
    d.kvs_error = DeadlineExceeded("down")
    d.tick(PERIOD)
    assert d.state.key_locations() == {"k": ("10.0.5.1",)}


def test_key_locations_follow_the_latest_key_sets():
    d = Driver()
    d.status(("10.0.5.1", 0))
    d.publish_key_sets({"10.0.5.1": ["k"]})
    d.publish_key_sets({"10.0.5.1": ["j"]})
    assert d.state.key_locations() == {"j": ("10.0.5.1",)}


def test_cache_key_set_key_is_the_anna_metadata_key():
    assert cache_key_set_key("10.1.2.3") == "ANNA_METADATA|cache_ip|10.1.2.3"


def test_key_locations_invert_the_key_sets():
    located = key_locations_from_key_sets({"b": ["k1", "k2"], "a": ["k2"], "c": []})
    assert located == {"k1": ("b",), "k2": ("a", "b")}


# -- locality through the state ----------------------------------------------------------------------------------

X0, X1, Y0, Z0 = ("10.0.5.1", 0), ("10.0.5.1", 1), ("10.0.5.2", 0), ("10.0.5.3", 0)


@pytest.fixture
def nodes():
    """Three nodes (X with two executors); X caches ``a``, Y caches ``a`` and ``b``, Z nothing."""
    d = Driver(PolicyOptions(random_threshold=0))
    d.register("f")
    for executor in (X0, X1, Y0, Z0):
        d.status(executor)
    d.publish_key_sets({"10.0.5.1": ["a"], "10.0.5.2": ["a", "b"], "10.0.5.3": []})
    return d


def test_a_call_goes_to_the_node_caching_most_of_its_references(nodes):
    assert {nodes.call("f", ("a", "b")) for _ in range(50)} == {Y0}


def test_a_tie_between_nodes_is_broken_by_the_rng_and_all_executors_of_the_node_are_used(nodes):
    picks = Counter(nodes.call("f", ("a",)) for _ in range(300))
    assert set(picks) == {X0, X1, Y0}
    assert picks[Y0] > 100  # Y wins about half the ties, then has one executor


def test_a_call_without_cached_references_is_placed_uniformly(nodes):
    picks = Counter(nodes.call("f", ("nowhere",)) for _ in range(400))
    assert set(picks) == {X0, X1, Y0, Z0}


def test_assignments_are_recorded_for_load_shedding(nodes):
    for _ in range(7):
        nodes.call("f", ("b",))
    assert nodes.state.recent_assignments(Y0) == 7
    nodes.tick(PolicyOptions().load_window)
    assert nodes.state.recent_assignments(Y0) == 0


def test_an_overloaded_best_node_is_shed():
    d = Driver(PolicyOptions(random_threshold=0, shed_limit=3))
    d.register("f")
    d.status(Y0)
    d.publish_key_sets({"10.0.5.2": ["b"]})
    for _ in range(4):
        assert d.call("f", ("b",)) == Y0
    d.status(Z0)
    # Y0 holds the key but has more than shed_limit recent assignments: with threshold 0 it is always shed.
    assert {d.call("f", ("b",)) for _ in range(4)} == {Z0}


def test_a_backed_off_best_node_is_avoided(nodes):
    nodes.status(Y0, utilization=0.95)
    assert {nodes.call("f", ("a", "b")) for _ in range(30)} <= {X0, X1}


def test_dag_functions_use_their_own_references():
    d = Driver(PolicyOptions(random_threshold=0))
    d.register("f", "g")
    d.status(X0)
    d.status(Y0)
    d.create_dag(Dag("pipe", (FunctionReference("f"), FunctionReference("g")), (Link("f", "g"),)))
    d.status(X0, ["f", "g"])
    d.status(Y0, ["f", "g"])
    d.publish_key_sets({"10.0.5.1": ["kx"], "10.0.5.2": ["ky"]})
    call = DagCall("pipe", references={"f": ("kx",), "g": ("ky",)})
    for _ in range(10):
        reply, pushes = d.ask(lambda rid: DagCallEvent(rid, call))
        assert reply.success
        assert schedules_of(pushes) == {"f": X0, "g": Y0}
    # A continuation is placed with the references of the continuation's own call.
    following = DagCall("pipe", references={"f": ("ky",), "g": ("kx",)})
    result = codec.encode_encoded_value(EncodedValue(b"x", SerializerType.STRING))
    pushes = d.feed(InternalMessageEvent(Continuation("pipe", "req-1", result, following)))
    assert schedules_of(pushes) == {"f": Y0, "g": X0}


# -- the locality policy itself ----------------------------------------------------------------------------------


def spread(count, per_node=1):
    """Candidates on ``count`` nodes 10.0.7.<n>, ``per_node`` executors each."""
    return [ExecutorCandidate((f"10.0.7.{n}", tid)) for n in range(count) for tid in range(per_node)]


def test_about_a_fifth_of_picks_ignore_locality():
    policy = PlacementPolicy(random.Random(21), PolicyOptions(random_threshold=0.2))
    pool = spread(10)
    located = {"k": ["10.0.7.0"]}
    picks = Counter(policy.pick_for_call(pool, references=["k"], key_locations=located) for _ in range(2000))
    # Exploring picks are uniform over ten nodes, so 9/10 of them land elsewhere: 0.2 * 0.9 = 18 %.
    elsewhere = 1 - picks[("10.0.7.0", 0)] / 2000
    assert 0.15 < elsewhere < 0.21
    assert len(picks) == 10


def test_without_exploration_the_best_node_always_wins():
    policy = PlacementPolicy(random.Random(21), PolicyOptions(random_threshold=0.0))
    located = {"k1": ["10.0.7.0", "10.0.7.3"], "k2": ["10.0.7.3"], "k3": ["10.0.7.3", "10.0.7.9"]}
    picks = {
        policy.pick_for_call(spread(10, 2), references=["k1", "k2", "k3"], key_locations=located) for _ in range(2000)
    }
    assert picks == {("10.0.7.3", 0), ("10.0.7.3", 1)}


def test_locality_picks_are_reproducible_for_a_seed():
    located = {"k": ["10.0.7.1", "10.0.7.2"]}

    def run(seed):
        policy = PlacementPolicy(random.Random(seed))
        return [policy.pick_for_call(spread(4, 2), references=["k"], key_locations=located) for _ in range(50)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_repeated_references_count_once_and_nodes_without_candidates_do_not_score():
    policy = PlacementPolicy(random.Random(2), PolicyOptions(random_threshold=0.0))
    pool = spread(2)
    located = {"a": ["10.0.7.0"], "b": ["10.0.7.1"], "c": ["10.0.7.1"], "d": ["10.0.8.8"]}
    # Node 0 holds "a" (named three times), node 1 holds "b" and "c"; the node without candidates holds "d".
    references = ["a", "a", "a", "b", "c", "d", "d", "d"]
    assert {policy.pick_for_call(pool, references=references, key_locations=located) for _ in range(100)} == {
        ("10.0.7.1", 0)
    }


def test_colocation_narrows_the_pool_before_locality():
    policy = PlacementPolicy(random.Random(2), PolicyOptions(random_threshold=0.0))
    located = {"k": ["10.0.7.0"]}
    picks = {policy.pick_for_call(spread(3), {"10.0.7.2"}, ["k"], located) for _ in range(50)}
    assert picks == {("10.0.7.2", 0)}


@pytest.mark.parametrize("mode", ["locality", "random", "round-robin"])
def test_every_mode_avoids_backed_off_and_sheds_overloaded_executors(mode):
    """The original's random and round-robin options skipped back-off and load shedding."""
    policy = PlacementPolicy(random.Random(8), PolicyOptions(mode=mode, random_threshold=0.0, shed_limit=10))
    pool = [
        ExecutorCandidate(("10.0.7.0", 0), backed_off=True),
        ExecutorCandidate(("10.0.7.1", 0), recent_assignments=11),
        ExecutorCandidate(("10.0.7.2", 0)),
        ExecutorCandidate(("10.0.7.3", 0)),
    ]
    picks = Counter(policy.pick_for_call(pool, rotation="f") for _ in range(200))
    assert set(picks) == {("10.0.7.2", 0), ("10.0.7.3", 0)}
    # The filters never empty the pool.
    assert policy.pick_for_call(pool[:1]) == ("10.0.7.0", 0)
    assert policy.pick_for_call(pool[1:2]) == ("10.0.7.1", 0)


def test_random_mode_ignores_locality():
    policy = PlacementPolicy(random.Random(8), PolicyOptions(mode="random", random_threshold=0.0))
    located = {"k": ["10.0.7.0"]}
    picks = Counter(policy.pick_for_call(spread(3), references=["k"], key_locations=located) for _ in range(600))
    assert min(picks.values()) > 150


def test_round_robin_rotates_per_function_without_touching_the_candidates():
    policy = PlacementPolicy(random.Random(8), PolicyOptions(mode="round-robin"))
    pool = spread(3)
    before = list(pool)
    f_picks = [policy.pick_for_call(pool, rotation="f")[0] for _ in range(4)]
    assert f_picks == ["10.0.7.0", "10.0.7.1", "10.0.7.2", "10.0.7.0"]
    assert policy.pick_for_call(pool, rotation="g")[0] == "10.0.7.0"
    assert pool == before
    # The rotation goes on after the last pick even when the pool changes under it.
    assert policy.pick_for_call([pool[0], pool[2]], rotation="f")[0] == "10.0.7.2"


def test_round_robin_and_random_modes_through_the_state_honour_back_off():
    for mode in ("round-robin", "random"):
        d = Driver(PolicyOptions(mode=mode))
        d.register("f")
        d.status(X0)
        d.status(Y0, utilization=0.95)
        d.status(Z0)
        picks = [d.call("f") for _ in range(6)]
        assert set(picks) == {X0, Z0}
        if mode == "round-robin":
            assert picks == [X0, Z0] * 3


# -- the GPU pool and colocation ----------------------------------------------------------------------------------


def test_colocation_is_ignored_for_gpu_functions():
    n1, n2 = "10.0.6.1", "10.0.6.2"
    gpu_nodes = Counter()
    for seed in range(12):
        d = Driver(seed=seed)
        d.register("f", "g")
        d.status((n1, 0))
        d.status((n1, 1), gpu=True)
        d.status((n2, 1), gpu=True)
        dag = Dag("vision", (FunctionReference("f"), FunctionReference("g", gpu=True)), (Link("f", "g"),), ("f", "g"))
        placements = d.create_dag(dag)
        assert placements["f"] == (n1, 0)
        assert placements["g"] in {(n1, 1), (n2, 1)}
        gpu_nodes[placements["g"][0]] += 1
        # Calls of the GPU function stay on GPU executors.
        d.status((n2, 1), ["g"], gpu=True)
        d.status((n1, 1), ["g"], gpu=True)
        reply, pushes = d.ask(lambda rid: DagCallEvent(rid, DagCall("vision")))
        assert reply.success
        assert schedules_of(pushes)["g"][1] == 1
    # With colocation applied, g would always have joined f on n1.
    assert set(gpu_nodes) == {n1, n2}


def test_one_shot_calls_use_only_cpu_executors():
    d = Driver()
    d.register("f")
    d.status(("10.0.6.1", 0), gpu=True)
    d.status(("10.0.6.2", 0))
    assert {d.call("f") for _ in range(20)} == {("10.0.6.2", 0)}


def test_the_first_colocated_function_is_pinned_on_an_empty_node():
    busy, empty = "10.0.6.1", "10.0.6.2"
    for seed in range(10):
        d = Driver(seed=seed)
        d.register("f", "g", "other")
        d.status((busy, 0))
        d.status((busy, 1), ["other"])
        d.status((empty, 0))
        d.status((empty, 1))
        dag = Dag("pair", (FunctionReference("f"), FunctionReference("g")), (Link("f", "g"),), ("f", "g"))
        placements = d.create_dag(dag)
        assert placements["f"][0] == empty
        assert placements["g"][0] == empty
