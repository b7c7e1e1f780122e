"""One local Ray instance shared by the Ray contenders (tasks, actors, Compiled Graphs): Ray runs once per process.

Actors hold a logical ``actor`` resource instead of CPUs, so the tasks keep both CPU slots while the actors exist:
on this machine every one of them is a process of its own either way, which is what the comparison is about.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import ModuleType

#: The logical resource each actor holds, and how many actors the contenders start together.
ACTOR_RESOURCE = "actor"
ACTOR_SLOTS = 8

_users = 0


@contextlib.contextmanager
def session(cpus: int, *modules: ModuleType) -> Iterator[ModuleType]:
    """Yields the ``ray`` module with Ray started (by the first user; stopped by the last).

    Args:
        cpus: The CPU slots Ray's tasks get.
        modules: The contender's modules, whose functions and classes travel to the workers by value (they need not
            find this project on their path).

    Raises:
        ImportError: Ray is not installed.
    """
    global _users
    import ray  # Ray is optional
    from ray import cloudpickle

    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    if _users == 0:
        # The dashboard is off: it is not on the call path, and its processes would only add background load.
        ray.init(
            num_cpus=cpus,
            resources={ACTOR_RESOURCE: ACTOR_SLOTS},
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    _users += 1
    try:
        yield ray
    finally:
        _users -= 1
        if _users == 0:
            ray.shutdown()
