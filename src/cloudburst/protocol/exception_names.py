"""Which program errors run a call again (``retry_exceptions=``), named so that the names cross the wire.

A caller names exception classes; executors match what a function raised against the names of its class and every
base class, so naming a base class retries its subclasses too, as ``except`` would. Names, not pickled classes:
matching needs nothing the executor might fail to import.
"""

from __future__ import annotations

from collections.abc import Iterable

#: What ``retry_exceptions=True`` means: any exception a program raises (not ``KeyboardInterrupt`` and the like).
ANY_EXCEPTION = "builtins.Exception"

RetryExceptions = bool | Iterable[type[BaseException]] | None


def exception_names(spec: RetryExceptions) -> tuple[str, ...]:
    """The names of the classes a ``retry_exceptions=`` argument names (``True``: any ``Exception``).

    Raises:
        TypeError: Something other than a bool or exception classes.
    """
    if spec is None or spec is False:
        return ()
    if spec is True:
        return (ANY_EXCEPTION,)
    names = []
    for kind in spec:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"retry_exceptions takes True or exception classes, not {kind!r}")
        names.append(qualified_name(kind))
    return tuple(names)


def qualified_name(kind: type) -> str:
    """``module.QualName`` of a class."""
    return f"{kind.__module__}.{kind.__qualname__}"


def matches(error: BaseException, names: Iterable[str]) -> bool:
    """Whether ``error`` is an instance of a class named in ``names``."""
    wanted = set(names)
    return bool(wanted) and any(qualified_name(kind) in wanted for kind in type(error).__mro__)
