"""Config files of the roles a multi-host deployment runs: one TOML table per role, read at the command-line edge.

A file holds a table per role (``[kvs]``, ``[scheduler]``, ``[node]``, ``[management]``), so that one file can
describe a whole deployment and every host runs its role with ``--config FILE``. A table's keys are the role's
options, with underscores for dashes (``report_period`` for ``--report-period``); repeatable options take a list
under a plural name (``peers`` for ``--peer``, ``schedulers`` for ``--scheduler``). Options given on the command
line override the file. Relative paths are relative to the file's directory.

What this module does is pure apart from reading the file: validate a table against the role's keys and merge
it under the command line. The result feeds the same code as flags do, which builds the roles' frozen
configuration dataclasses.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path

from cloudburst.errors import ConfigError

#: What ``cloudburst management --provisioner`` accepts.
PROVISIONERS = ("none", "kubernetes", "local")
#: What ``cloudburst scheduler --policy`` accepts.
SCHEDULER_POLICIES = ("locality", "random", "round-robin")
#: What ``cloudburst kvs --durability`` accepts.
DURABILITY_LEVELS = ("NORMAL", "FULL")


class Kind(enum.Enum):
    """The TOML type a key takes, and what it becomes."""

    STRING = "a string"
    INTEGER = "an integer"
    NUMBER = "a number"
    BOOLEAN = "true or false"
    PATH = "a path (a string)"
    STRINGS = "a list of strings"


@dataclass(frozen=True, slots=True)
class Choice:
    """A key that takes one of a few strings."""

    values: tuple[str, ...]


OptionKind = Kind | Choice

#: The CURVE key files every role takes (see ``docs/security.md``).
CURVE_OPTIONS: Mapping[str, OptionKind] = {
    "curve_server_secret": Kind.PATH,
    "curve_client_secret": Kind.PATH,
    "curve_authorized": Kind.PATH,
}

#: Each role's keys: the option's destination on the command line, and its kind.
ROLE_OPTIONS: Mapping[str, Mapping[str, OptionKind]] = {
    "kvs": {
        "host": Kind.STRING,
        "advertise_host": Kind.STRING,
        "routing_port": Kind.INTEGER,
        "routing_ports": Kind.INTEGER,
        "storage_port": Kind.INTEGER,
        "trigger_port": Kind.INTEGER,
        "threads": Kind.INTEGER,
        "data_dir": Kind.PATH,
        "in_memory": Kind.BOOLEAN,
        "engine": Kind.STRING,
        "durability": Choice(DURABILITY_LEVELS),
        **CURVE_OPTIONS,
    },
    "scheduler": {
        "host": Kind.STRING,
        "kvs": Kind.STRING,
        "report_period": Kind.NUMBER,
        "peers": Kind.STRINGS,
        "policy": Choice(SCHEDULER_POLICIES),
        "management": Kind.STRING,
        **CURVE_OPTIONS,
    },
    "node": {
        "host": Kind.STRING,
        "kvs": Kind.STRING,
        "report_period": Kind.NUMBER,
        "schedulers": Kind.STRINGS,
        "management": Kind.STRING,
        "executors": Kind.INTEGER,
        "gpu_executors": Kind.INTEGER,
        "work_dir": Kind.PATH,
        **CURVE_OPTIONS,
    },
    "management": {
        "host": Kind.STRING,
        "schedulers": Kind.STRINGS,
        "provisioner": Choice(PROVISIONERS),
        "provisioner_endpoint": Kind.STRING,
        "watch_only": Kind.BOOLEAN,
        "k8s_namespace": Kind.STRING,
        "k8s_deployment": Kind.STRING,
        "k8s_selector": Kind.STRING,
        "k8s_ready_timeout": Kind.NUMBER,
        "report_period": Kind.NUMBER,
        "thread_timeout": Kind.NUMBER,
        "min_nodes": Kind.INTEGER,
        "max_nodes": Kind.INTEGER,
        "scale_increase": Kind.INTEGER,
        "grace_period": Kind.NUMBER,
        "max_utilization": Kind.NUMBER,
        "min_utilization": Kind.NUMBER,
        "max_pinned_ratio": Kind.NUMBER,
        "scale_up_load": Kind.NUMBER,
        "scale_down_load": Kind.NUMBER,
        "max_latency_deviation": Kind.NUMBER,
        "min_replicas": Kind.INTEGER,
        "replica_cooldown": Kind.NUMBER,
        "hot_thread_utilization": Kind.NUMBER,
        "hot_thread_replicas": Kind.INTEGER,
        "node_join_timeout": Kind.NUMBER,
        **CURVE_OPTIONS,
    },
}

#: Keys of a role of which a table, or the command line, may give only one: the command line's choice replaces
#: the file's whole group, as the flags exclude each other.
EXCLUSIVE_OPTIONS: Mapping[str, tuple[frozenset[str], ...]] = {
    "kvs": (frozenset({"data_dir", "in_memory", "engine"}),),
}


def load_role_options(path: Path, role: str) -> dict[str, object]:
    """Reads ``role``'s table from the TOML file at ``path``.

    Args:
        path: The config file.
        role: One of :data:`ROLE_OPTIONS`.

    Returns:
        The table's options by destination, converted (paths resolved against the file's directory, numbers as
        floats, lists as lists).

    Raises:
        ConfigError: The file cannot be read, is not TOML, has no table for ``role``, or has an unknown table or
            key, or a value of the wrong kind; the message names the file and the key.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    return role_options(document, role, source=str(path), base=path.parent)


def role_options(document: Mapping[str, object], role: str, *, source: str, base: Path) -> dict[str, object]:
    """Validates and converts ``role``'s table of a parsed config file.

    Args:
        document: The parsed TOML document.
        role: One of :data:`ROLE_OPTIONS`.
        source: Names the file in errors.
        base: What relative paths are relative to.

    Returns:
        The table's options by destination, converted.

    Raises:
        ConfigError: ``role`` takes no config file, the document has an unknown table or none for ``role``, or
            the table has an unknown key, a value of the wrong kind, or more than one key of an exclusive group.
    """
    known = ROLE_OPTIONS.get(role)
    if known is None:
        raise ConfigError(f"{role} takes no config file; roles that do: {', '.join(ROLE_OPTIONS)}")
    for name in document:
        if name not in ROLE_OPTIONS:
            raise ConfigError(f"unknown table [{name}] in {source}; the tables are: {', '.join(ROLE_OPTIONS)}")
    table = document.get(role)
    if table is None:
        raise ConfigError(f"{source} has no [{role}] table")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{role} in {source} must be a table ([{role}]), not {_describe(table)}")
    options: dict[str, object] = {}
    for key, value in table.items():
        kind = known.get(key)
        if kind is None:
            raise ConfigError(f"unknown key {key!r} in the [{role}] table of {source}; known keys: {', '.join(known)}")
        options[key] = _convert(value, kind, f"{key} in the [{role}] table of {source}", base)
    for group in EXCLUSIVE_OPTIONS.get(role, ()):
        chosen = sorted(key for key in group if options.get(key, False) is not False)
        if len(chosen) > 1:
            raise ConfigError(
                f"the [{role}] table of {source} sets {' and '.join(chosen)}; only one of "
                f"{', '.join(sorted(group))} may be set"
            )
    return options


def apply_file_options(
    parsed: Mapping[str, object], file_options: Mapping[str, object], given: Set[str], role: str
) -> dict[str, object]:
    """The options a role runs with: the command line's, then the file's, then the defaults.

    Args:
        parsed: Every option as the command line parsed it, defaults included.
        file_options: The file's options for the role (:func:`role_options`).
        given: The options the command line gave explicitly.
        role: The role, for its exclusive groups.

    Returns:
        ``parsed`` with the file's options in place of the defaults.
    """
    overridden = set(given)
    for group in EXCLUSIVE_OPTIONS.get(role, ()):
        if group & given:
            overridden |= group
    return {**parsed, **{key: value for key, value in file_options.items() if key not in overridden}}


def _convert(value: object, kind: OptionKind, where: str, base: Path) -> object:
    """``value`` as the command line would have parsed it.

    Raises:
        ConfigError: ``value`` is not of ``kind``.
    """
    if isinstance(kind, Choice):
        if value not in kind.values:
            raise ConfigError(f"{where} must be one of {', '.join(kind.values)}, not {value!r}")
        return value
    # bool is an int to Python, never a number to a reader of the file.
    if kind is Kind.BOOLEAN and isinstance(value, bool):
        return value
    if kind is Kind.INTEGER and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is Kind.NUMBER and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is Kind.STRING and isinstance(value, str):
        return value
    if kind is Kind.PATH and isinstance(value, str) and value:
        return base / Path(value).expanduser()
    if kind is Kind.STRINGS and isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ConfigError(f"{where} must be {kind.value}, not {_describe(value)}")


def _describe(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"
