"""The KVS key namespace the runtime uses for its own metadata.

Metadata keys are prefixed so they never collide with user keys (the original stored DAGs under their bare
name).
"""

from __future__ import annotations

FUNCTION_PREFIX = "funcs/"
#: SET lattice of every registered function's key (``funcs/<name>``); union-merged, so concurrent
#: registrations through different schedulers never lose a name.
FUNCTION_INDEX = "funcs/index-allfuncs"
DAG_PREFIX = "dags/"
#: SET lattice of every DAG name ever registered; deleted DAGs stay listed and read as missing.
DAG_INDEX = "dags/index-alldags"


def function_key(name: str) -> str:
    """Where a function's registration (an LWW of its serialized ``Value``) is stored."""
    return FUNCTION_PREFIX + name


def dag_key(name: str) -> str:
    """Where a DAG's registration (an LWW of its serialized ``Dag``; empty once deleted) is stored."""
    return DAG_PREFIX + name


#: Prefix of the KVS's own metadata keys (statistics, key-set reports); caches never hold them.
METADATA_PREFIX = "ANNA_METADATA|"
#: Prefix of the key under which the cache of node ``<ip>`` reports its key set (an LWW of a ``StringSet``).
CACHE_KEY_SET_PREFIX = METADATA_PREFIX + "cache_ip|"


def is_metadata_key(key: str) -> bool:
    """Whether ``key`` is KVS metadata, which caches never hold."""
    return key.startswith(METADATA_PREFIX)


def cache_key_set_key(ip: str) -> str:
    """The key under which the cache of node ``ip`` reports its key set; schedulers read it for locality."""
    return CACHE_KEY_SET_PREFIX + ip


def reporting_cache(key: str) -> str | None:
    """The node ip whose key-set report ``key`` is, or ``None`` when it is no such report (or names no ip)."""
    if not key.startswith(CACHE_KEY_SET_PREFIX):
        return None
    return key[len(CACHE_KEY_SET_PREFIX) :] or None


#: Prefix of the keys storage triggers are defined under (an LWW of a serialized ``TriggerSpec``; empty: deleted).
TRIGGER_PREFIX = METADATA_PREFIX + "trigger|"
#: SET lattice of every trigger name ever registered; deleted triggers stay listed and read as empty.
TRIGGER_INDEX = METADATA_PREFIX + "trigger-index"
#: Prefix of the runs a KVS node owes until they are acknowledged (an LWW of a serialized ``TriggerFiring``).
TRIGGER_FIRING_PREFIX = METADATA_PREFIX + "trigger-firing|"
#: Prefix of the runs given up on after their last attempt, kept for operators.
TRIGGER_DEAD_PREFIX = METADATA_PREFIX + "trigger-dead|"


def trigger_key(name: str) -> str:
    """Where the storage trigger ``name`` is defined."""
    return TRIGGER_PREFIX + name
