"""What a scheduler's info port answers: the versions a client must match to ship functions to the cluster.

The answer is a small JSON object, not protobuf: it must stay readable by any future client, whatever else the
wire protocol becomes. Readers ignore fields they do not know.
"""

from __future__ import annotations

import functools
import json
import platform
import re
from dataclasses import asdict, dataclass

import cloudpickle

from cloudburst.errors import DecodeError, VersionMismatch

#: Bumped when a change to the wire protocol is not backward compatible (none has been so far).
PROTOCOL_VERSION = 1
#: Largest info answer a client reads; a real one is under 200 bytes.
MAX_INFO_BYTES = 4096
_MAJOR_MINOR = re.compile(r"(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """The versions one side of a connection runs.

    Attributes:
        cloudburst: The ``cloudburst`` package's version.
        python: The Python version (``platform.python_version()``).
        cloudpickle: The cloudpickle version.
        protocol: The wire protocol's version (:data:`PROTOCOL_VERSION`).
        incarnation: Which life of the answering process this is (a scheduler's changes when it restarts, and with
            it the requests it knew of: clients place theirs again); empty when it does not tell.
    """

    cloudburst: str
    python: str
    cloudpickle: str
    protocol: int
    incarnation: str = ""

    def encode(self) -> bytes:
        """The info port's answer."""
        document = asdict(self)
        if not self.incarnation:
            del document["incarnation"]
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> VersionInfo:
        """Reads an info port's answer.

        Raises:
            DecodeError: It is not a JSON object with the four fields (extra fields are ignored).
        """
        if len(data) > MAX_INFO_BYTES:
            raise DecodeError("scheduler info", f"{len(data)} bytes, more than {MAX_INFO_BYTES}")
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, ValueError) as error:
            raise DecodeError("scheduler info", f"not JSON: {error}") from None
        if not isinstance(document, dict):
            raise DecodeError("scheduler info", f"expected a JSON object, got {type(document).__name__}")
        texts = {name: document.get(name) for name in ("cloudburst", "python", "cloudpickle")}
        protocol = document.get("protocol")
        missing = [name for name, value in texts.items() if not isinstance(value, str)]
        # An exact type test: JSON's true would pass isinstance(..., int).
        if type(protocol) is not int:
            missing.append("protocol")
        if missing or type(protocol) is not int:
            raise DecodeError("scheduler info", f"missing or mistyped field(s): {', '.join(missing)}")
        incarnation = document.get("incarnation")
        return cls(
            str(texts["cloudburst"]),
            str(texts["python"]),
            str(texts["cloudpickle"]),
            protocol,
            incarnation if isinstance(incarnation, str) else "",
        )


@functools.cache
def local_version_info() -> VersionInfo:
    """The versions this process runs (computed once)."""
    # Imported here: the package's top level imports the client, which imports this module.
    from cloudburst import __version__

    return VersionInfo(
        cloudburst=__version__,
        python=platform.python_version(),
        cloudpickle=str(cloudpickle.__version__),
        protocol=PROTOCOL_VERSION,
    )


def major_minor(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string such as ``3.11.7`` or ``3.13.0rc1``; ``None`` if it has none."""
    found = _MAJOR_MINOR.match(version)
    return (int(found.group(1)), int(found.group(2))) if found else None


def incompatibilities(client: VersionInfo, cluster: VersionInfo) -> tuple[tuple[str, str, str], ...]:
    """The components whose major.minor versions differ in a way that breaks shipping functions.

    Only Python and cloudpickle count: the cloudburst version and the protocol version may differ, since the wire
    protocol stays backward compatible. A version that cannot be parsed is not held against the connection.

    Returns:
        Each difference as (component, client's version, cluster's version); empty when they are compatible.
    """
    found = []
    for name, ours, theirs in (
        ("Python", client.python, cluster.python),
        ("cloudpickle", client.cloudpickle, cluster.cloudpickle),
    ):
        mine, other = major_minor(ours), major_minor(theirs)
        if mine is not None and other is not None and mine != other:
            found.append((name, ours, theirs))
    return tuple(found)


def check_compatible(client: VersionInfo, cluster: VersionInfo, scheduler: str) -> None:
    """Checks that functions this client ships can run on the cluster.

    Raises:
        VersionMismatch: Python or cloudpickle major.minor versions differ; the message names both sides.
    """
    differences = incompatibilities(client, cluster)
    if differences:
        raise VersionMismatch(scheduler, differences)
