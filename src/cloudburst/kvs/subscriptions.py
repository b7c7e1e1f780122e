"""Which node caches hold which keys, so that the KVS can push every change of a cached key at once.

In the original system a storage thread learned a cache's key set only every 15 s and pushed changes only with
its 10 s gossip, so a cache could serve a stale value for tens of seconds. Here the KVS learns the
key set the moment the cache reports it (a PUT of ``ANNA_METADATA|cache_ip|<ip>``) and pushes each change in the
same turn that merges it. This module is the index behind that: pure bookkeeping, no sockets and no storage.

The index is bounded, because the reports come from the network: at most ``max_caches`` caches (a new cache
beyond that is refused until another unsubscribes; caches already subscribed keep updating their sets, so a
flood of reports cannot evict a real cache) and at most ``max_keys_per_cache`` keys per cache (the rest of a
larger report is ignored, so those keys are not pushed and the cache relies on its own refreshes for them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Set

from cloudburst.keys import is_metadata_key

logger = logging.getLogger(__name__)

#: The port every node cache listens on for pushed updates (the original's 7150).
DEFAULT_CACHE_UPDATE_PORT = 7150
#: Default most caches subscribed at once: far above the node count of a deployment.
DEFAULT_MAX_CACHES = 512
#: Default most keys indexed per cache: well above what one node's cache holds (the original kept 1000).
DEFAULT_MAX_KEYS_PER_CACHE = 10_000

_EMPTY: frozenset[str] = frozenset()


class CacheSubscriptions:
    """Two-way index of cache ip -> keys it holds and key -> cache ips holding it.

    Each report replaces the cache's whole set (the cache reports its full key set, not a delta), and an empty set
    unsubscribes the cache. Both directions are kept so that replacing a set costs the size of the change and
    finding a written key's caches costs one lookup.

    Args:
        max_caches: The most caches subscribed at once.
        max_keys_per_cache: The most keys indexed for one cache.
    """

    def __init__(
        self, max_caches: int = DEFAULT_MAX_CACHES, max_keys_per_cache: int = DEFAULT_MAX_KEYS_PER_CACHE
    ) -> None:
        if max_caches < 1 or max_keys_per_cache < 1:
            raise ValueError("the subscription caps must be at least 1")
        self.max_caches = max_caches
        self.max_keys_per_cache = max_keys_per_cache
        self._keys_by_cache: dict[str, frozenset[str]] = {}
        self._caches_by_key: dict[str, set[str]] = {}

    def __len__(self) -> int:
        """How many caches are subscribed."""
        return len(self._keys_by_cache)

    @property
    def caches(self) -> frozenset[str]:
        """The ips of every subscribed cache."""
        return frozenset(self._keys_by_cache)

    def keys_of(self, ip: str) -> frozenset[str]:
        """The keys cache ``ip`` is subscribed to (none when it is not subscribed)."""
        return self._keys_by_cache.get(ip, _EMPTY)

    def caches_of(self, key: str) -> Set[str]:
        """The ips of the caches subscribed to ``key``; a read-only view, valid until the next change."""
        return self._caches_by_key.get(key, _EMPTY)

    def replace(self, ip: str, keys: Iterable[str]) -> bool:
        """Makes ``keys`` the whole set cache ``ip`` is subscribed to; an empty set unsubscribes it.

        Metadata keys are dropped (they are never pushed), and keys past ``max_keys_per_cache`` are ignored.

        Returns:
            False when the report was refused because ``max_caches`` other caches are subscribed.
        """
        wanted: dict[str, None] = {}
        for key in keys:
            if is_metadata_key(key) or key in wanted:
                continue
            if len(wanted) >= self.max_keys_per_cache:
                logger.warning("cache %s reports more than %d keys; indexing only the first", ip, len(wanted))
                break
            wanted[key] = None
        new = frozenset(wanted)
        old = self._keys_by_cache.get(ip)
        if old is None and new and len(self._keys_by_cache) >= self.max_caches:
            logger.warning("refused the key set of cache %s: %d caches are already subscribed", ip, self.max_caches)
            return False
        old = old or _EMPTY
        for key in old - new:
            holders = self._caches_by_key[key]
            holders.discard(ip)
            if not holders:
                del self._caches_by_key[key]
        for key in new - old:
            self._caches_by_key.setdefault(key, set()).add(ip)
        if new:
            self._keys_by_cache[ip] = new
        else:
            self._keys_by_cache.pop(ip, None)
        return True
