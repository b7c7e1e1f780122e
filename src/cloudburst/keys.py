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
