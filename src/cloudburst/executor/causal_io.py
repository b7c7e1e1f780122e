"""Causal reads and writes of an executor: :class:`~cloudburst.executor.causal.CausalSession` decisions, carried
out against the node caches."""

from __future__ import annotations

from collections.abc import Iterable

from cloudburst.cache.session_client import CausalCacheClient
from cloudburst.errors import DeadlineExceeded, KvsError, SessionExpired
from cloudburst.executor.causal import CausalSession, WriterCounter
from cloudburst.kvs.client import DataClient
from cloudburst.lattices import MultiKeyCausalLattice
from cloudburst.protocol import codec, values
from cloudburst.protocol.causal_messages import CausalKeyResult
from cloudburst.protocol.messages import AnnaError, LatticeType


class CausalDataClient:
    """Reads and writes for causal sessions.

    Args:
        causal_endpoint: The node cache's causal port.
        sessions: The client of the caches' causal and session ports.
        data: Where writes go (the node cache, which writes through to the KVS).
        counter: This executor's entry in the vector clocks it writes.
        timeout: Deadline of each read or write.
    """

    def __init__(
        self,
        causal_endpoint: str,
        sessions: CausalCacheClient,
        data: DataClient,
        counter: WriterCounter,
        timeout: float,
    ) -> None:
        self._endpoint = causal_endpoint
        self._sessions = sessions
        self._data = data
        self._counter = counter
        self._timeout = timeout

    def read(
        self, session: CausalSession, keys: Iterable[str], future_read_set: Iterable[str] = ()
    ) -> tuple[dict[str, MultiKeyCausalLattice | None], tuple[str, ...]]:
        """Reads ``keys`` in ``session``: versions kept for it from their caches, others through the node cache.

        Returns:
            The value of each key (``None``: it does not exist), and the keys that hold non-causal values.

        Raises:
            SessionExpired: A cache no longer keeps a version the session read.
            CausalConflict: (MULTI) no consistent version of a key is available.
            DeadlineExceeded: A cache did not answer in time.
        """
        wanted = list(dict.fromkeys(keys))
        found = session.already_read(wanted)
        for address, kept_keys in session.kept_reads([key for key in wanted if key not in found]).items():
            kept = self._sessions.kept(address, session.session_id, kept_keys, timeout=self._timeout)
            for result in kept.results:
                if result.error != AnnaError.NO_ERROR:
                    raise SessionExpired(
                        f"the cache at {address} no longer keeps the version of {result.key!r} this request read",
                        request_id=session.session_id,
                    )
                # An empty payload: the key was missing when the session first read it, and stays so for it.
                found[result.key] = self._decode(result) if result.payload else None
                session.absorb(result.key, found[result.key])
        fresh = [key for key in wanted if key not in found]
        future = [key for key in future_read_set if key not in found] if session.multi else []
        future = [key for key in future if not session.kept_reads([key])]
        not_causal: list[str] = []
        if fresh or future:
            read = self._sessions.read(
                self._endpoint,
                session.session_id,
                session.consistency,
                fresh,
                future_read_set=future,
                lower_bounds=session.lower_bounds([*fresh, *future]),
                timeout=self._timeout,
            )
            if session.multi:
                session.note_kept(read.version_address, read.kept)
            for result in read.results:
                if result.error == AnnaError.LATTICE:
                    not_causal.append(result.key)
                    continue
                if result.error == AnnaError.TIMEOUT:
                    raise DeadlineExceeded(f"causal read of {result.key!r}: the KVS did not answer in time")
                if result.error not in (AnnaError.NO_ERROR, AnnaError.KEY_DNE):
                    raise KvsError(f"causal read of {result.key!r} failed with {result.error.name}")
                found[result.key] = None if result.error == AnnaError.KEY_DNE else self._decode(result)
                session.absorb(result.key, found[result.key])
        return found, tuple(not_causal)

    def write(self, session: CausalSession, key: str, value: object) -> None:
        """Writes ``value`` to ``key`` as a new version in ``session``.

        Raises:
            EncodeError: The value cannot be serialized.
            LatticeTypeMismatch: The key holds a non-causal value.
            DeadlineExceeded: The write was not acknowledged in time.
        """
        version = session.new_version(key, values.serialize(value), self._counter)
        self._data.put(key, version, timeout=self._timeout)
        if session.multi:
            # The node cache keeps the write for the session, so the request's later reads, on any node, return it
            # exactly rather than a newer version someone else wrote since.
            _, payload = codec.encode_lattice(version)
            kept = self._sessions.read(
                self._endpoint,
                session.session_id,
                session.consistency,
                (),
                keep=(CausalKeyResult(key, payload),),
                timeout=self._timeout,
            )
            session.note_kept(kept.version_address, kept.kept)

    def end(self, session: CausalSession) -> None:
        """Releases the versions caches keep for the session."""
        for address in session.holders():
            self._sessions.release(address, session.session_id)

    def _decode(self, result: CausalKeyResult) -> MultiKeyCausalLattice:
        value = codec.decode_lattice(LatticeType.MULTI_CAUSAL, result.payload, f"causal value of {result.key!r}")
        assert isinstance(value, MultiKeyCausalLattice)
        return value
