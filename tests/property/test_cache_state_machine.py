"""Random GET/PUT/PUSH/fetch/write interleavings against the node cache, with a model KVS of SET lattices.

Checks after every step that the cache's invariants hold, that it never answers a value the KVS and its writers
never produced, that a cached key holds every member the cache was told about (read-your-writes, pushes), and that
every GET is answered exactly once.
"""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cloudburst.cache.state import (
    CacheConfig,
    CacheFetchDoneEvent,
    CacheFetchInstruction,
    CacheGetEvent,
    CacheGetReplyInstruction,
    CacheKeyResult,
    CachePushEvent,
    CachePutEvent,
    CachePutReplyInstruction,
    CacheState,
    CacheTickEvent,
    CacheWriteDoneEvent,
    CacheWriteInstruction,
)
from cloudburst.kvs.engine import StoredValue
from cloudburst.lattices.sets import SetLattice
from cloudburst.protocol.codec import decode_lattice, encode_lattice
from cloudburst.protocol.messages import AnnaError

KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
MEMBERS = st.sampled_from([b"1", b"2", b"3", b"4"])


def members(value):
    lattice = decode_lattice(value.lattice_type, value.payload)
    assert isinstance(lattice, SetLattice)
    return lattice.values


class CacheMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.state = CacheState("10.0.0.1", CacheConfig(max_keys=3, max_bytes=40, validate=True))
        self.now = 0.0
        self.kvs: dict[str, frozenset[bytes]] = {}
        self.written: dict[str, frozenset[bytes]] = {}  # every member any writer sent, acknowledged or not
        self.fetches: list[CacheFetchInstruction] = []
        self.writes: list[CacheWriteInstruction] = []
        self.open_gets: set[str] = set()
        self.open_puts: set[str] = set()
        self.counter = 0

    def run(self, event):
        for instruction in self.state.handle(event, self.now):
            if isinstance(instruction, CacheFetchInstruction):
                self.fetches.append(instruction)
            elif isinstance(instruction, CacheWriteInstruction):
                self.writes.append(instruction)
            elif isinstance(instruction, CacheGetReplyInstruction):
                self.open_gets.remove(instruction.request_id)
                for result in instruction.results:
                    if result.error == AnnaError.NO_ERROR:
                        assert result.value is not None
                        assert members(result.value) <= self.written.get(result.key, frozenset())
            elif isinstance(instruction, CachePutReplyInstruction):
                self.open_puts.remove(instruction.request_id)

    def next_id(self):
        self.counter += 1
        return str(self.counter)

    @rule(keys=st.lists(KEYS, max_size=3))
    def get(self, keys):
        request_id = self.next_id()
        self.open_gets.add(request_id)
        self.run(CacheGetEvent(request_id, tuple(keys)))

    @rule(key=KEYS, member=MEMBERS)
    def put(self, key, member):
        request_id = self.next_id()
        self.open_puts.add(request_id)
        self.written[key] = self.written.get(key, frozenset()) | {member}
        value = StoredValue(*encode_lattice(SetLattice(frozenset({member}))))
        was_cached = self.state.get_cached(key) is not None
        self.run(CachePutEvent(request_id, key, value.lattice_type, value.payload))
        cached = self.state.get_cached(key)
        if was_cached and cached is not None:
            assert member in members(cached)

    @precondition(lambda self: self.writes)
    @rule(data=st.data())
    def complete_write(self, data):
        write = self.writes.pop(data.draw(st.integers(0, len(self.writes) - 1)))
        self.kvs[write.key] = self.kvs.get(write.key, frozenset()) | members(
            StoredValue(write.lattice_type, write.payload)
        )
        self.run(CacheWriteDoneEvent(write.write_id, AnnaError.NO_ERROR))

    @precondition(lambda self: self.fetches)
    @rule(data=st.data())
    def complete_fetch(self, data):
        fetch = self.fetches.pop(data.draw(st.integers(0, len(self.fetches) - 1)))
        results = []
        for key in fetch.keys:
            if key in self.kvs:
                value = StoredValue(*encode_lattice(SetLattice(self.kvs[key])))
                results.append(CacheKeyResult(key, AnnaError.NO_ERROR, value))
            else:
                results.append(CacheKeyResult(key, AnnaError.KEY_DNE))
        self.run(CacheFetchDoneEvent(fetch.fetch_id, tuple(results)))

    @precondition(lambda self: self.kvs)
    @rule(data=st.data())
    def push(self, data):
        key = data.draw(st.sampled_from(sorted(self.kvs)))
        value = StoredValue(*encode_lattice(SetLattice(self.kvs[key])))
        self.run(CachePushEvent(key, value.lattice_type, value.payload))
        cached = self.state.get_cached(key)
        if cached is not None:
            assert members(cached) >= self.kvs[key]

    @rule(seconds=st.sampled_from([0.0, 0.05, 0.1, 1.0, 6.0]))
    def tick(self, seconds):
        self.now += seconds
        self.run(CacheTickEvent())

    @invariant()
    def consistent(self):
        self.state.validate()
        stats = self.state.statistics()
        assert stats.pending_writes == len(self.writes) == len(self.open_puts)
        if not self.fetches:
            assert self.open_gets == set()
        for key in self.state.cached_keys():
            assert members(self.state.get_cached(key)) <= self.written.get(key, frozenset())


CacheMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestCacheMachine = CacheMachine.TestCase
