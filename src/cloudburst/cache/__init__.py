"""The per-node cache: the executors' nearby copy of recently used KVS keys.

:mod:`cloudburst.cache.state` is its pure core (events in, instructions out) and :mod:`cloudburst.cache.policy`
its eviction policy. The server that owns the sockets, and the executor wiring, live elsewhere.
"""
