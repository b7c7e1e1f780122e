"""ZeroMQ CURVE: authenticated, encrypted connections between the roles of a deployment and its clients.

Every role of a deployment holds the *cluster* keypair and uses it as the CURVE server key of every socket it binds
(and of its pushes to reply addresses). Everyone who connects, roles included, holds a *client* keypair whose public
key must be in the deployment's allow-list: a ZAP handler in each role refuses any other key during the handshake,
so an unauthorized peer's messages never reach a decoder, let alone an unpickler. See ``docs/security.md``.

Reply sockets (where servers push responses, at an address named in the request) are bound by the client but act
as CURVE *clients*: the server pushing to them proves it holds the cluster key, and the handshake is authorized by
the server's allow-list like any other connection.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from cloudburst.errors import ConfigError

logger = logging.getLogger(__name__)

#: The ZAP domain every server socket names, so that the handler is always consulted.
ZAP_DOMAIN = "cloudburst"
#: File names ``cloudburst keys generate`` writes (``NAME.key`` public, ``NAME.key_secret`` secret).
DEFAULT_KEY_NAME = "cloudburst"
_REPORTED_KEYS = 1024


def _load_keypair(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    """Reads a ZeroMQ certificate file (``zmq.auth`` format).

    Raises:
        ConfigError: The file is missing, not a certificate, or has no secret key while one is needed.
    """
    if not path.is_file():
        raise ConfigError(f"CURVE key file {path} does not exist")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"CURVE key file {path} is not a ZeroMQ certificate: {error}") from None
    for key in (public, secret):
        if key is not None and len(key) != 40:
            raise ConfigError(f"CURVE key file {path} holds a malformed key (expected 40 Z85 characters)")
    if need_secret and secret is None:
        raise ConfigError(f"CURVE key file {path} holds no secret key (give the .key_secret file)")
    return public, secret


def _load_authorized(directory: Path) -> frozenset[bytes]:
    """The public keys of every ``*.key`` certificate in ``directory``.

    Raises:
        ConfigError: The directory is missing, or holds no readable certificate.
    """
    if not directory.is_dir():
        raise ConfigError(f"CURVE authorized-keys directory {directory} does not exist")
    keys = frozenset(_load_keypair(path, need_secret=False)[0] for path in sorted(directory.glob("*.key")))
    if not keys:
        raise ConfigError(f"CURVE authorized-keys directory {directory} holds no *.key certificate")
    return keys


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """The CURVE keys of one process; built with :meth:`for_role` or :meth:`for_client`.

    Attributes:
        server_key_file: The cluster certificate: its secret file for a role, its public file for a client.
        client_secret_file: This process's client certificate (secret file).
        authorized_dir: A role's directory of authorized client certificates (public ``*.key`` files).
        server_public: The cluster's public key (loaded).
        server_secret: The cluster's secret key (roles only).
        client_public: This process's client public key.
        client_secret: This process's client secret key.
        authorized: The client public keys a role accepts.
    """

    server_key_file: Path
    client_secret_file: Path
    authorized_dir: Path | None = None
    server_public: bytes = field(init=False, repr=False)
    server_secret: bytes | None = field(init=False, repr=False)
    client_public: bytes = field(init=False, repr=False)
    client_secret: bytes = field(init=False, repr=False)
    authorized: frozenset[bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        is_role = self.authorized_dir is not None
        server_public, server_secret = _load_keypair(self.server_key_file, need_secret=is_role)
        client_public, client_secret = _load_keypair(self.client_secret_file, need_secret=True)
        assert client_secret is not None  # checked by need_secret
        authorized = _load_authorized(self.authorized_dir) if self.authorized_dir is not None else frozenset()
        if is_role and client_public not in authorized:
            raise ConfigError(
                f"the client key {self.client_secret_file} is not among the authorized keys in {self.authorized_dir}:"
                " the other roles would refuse this one"
            )
        # Frozen: the loaded keys are derived once, here.
        object.__setattr__(self, "server_public", server_public)
        object.__setattr__(self, "server_secret", server_secret)
        object.__setattr__(self, "client_public", client_public)
        object.__setattr__(self, "client_secret", client_secret)
        object.__setattr__(self, "authorized", authorized)

    @classmethod
    def for_role(cls, server_secret: Path, client_secret: Path, authorized: Path) -> SecurityConfig:
        """The keys of a server role: the cluster keypair, its own client keypair and the allow-list.

        Raises:
            ConfigError: A file is missing or malformed, or the role's client key is not authorized.
        """
        return cls(server_secret, client_secret, authorized)

    @classmethod
    def for_client(cls, server_key: Path, client_secret: Path) -> SecurityConfig:
        """The keys of a client: the cluster's public key and its own client keypair.

        Raises:
            ConfigError: A file is missing or malformed.
        """
        return cls(server_key, client_secret)

    @property
    def is_role(self) -> bool:
        """Whether this process serves (holds the cluster secret and an allow-list)."""
        return self.server_secret is not None and self.authorized_dir is not None

    def role_arguments(self) -> list[str]:
        """The command-line flags that give a child role the same keys."""
        if self.authorized_dir is None:
            raise ConfigError("only a role's keys (with an authorized-keys directory) can be passed to a child role")
        return [
            "--curve-server-secret",
            str(self.server_key_file),
            "--curve-client-secret",
            str(self.client_secret_file),
            "--curve-authorized",
            str(self.authorized_dir),
        ]


def curve_server(socket: zmq.Socket[bytes], security: SecurityConfig | None) -> None:
    """Makes ``socket`` a CURVE server with the cluster key (no-op without ``security``); its context must run a ZAP
    handler (:func:`new_context`), which decides who may connect.

    Raises:
        ConfigError: ``security`` holds no cluster secret key (a client's keys).
    """
    if security is None:
        return
    if security.server_secret is None:
        raise ConfigError("serving with CURVE needs the cluster's secret key (--curve-server-secret)")
    socket.setsockopt(zmq.CURVE_SERVER, 1)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, security.server_public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, security.server_secret)
    socket.setsockopt_string(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
    # Without a handler a CURVE server would accept every key; enforcing the domain refuses instead.
    socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def curve_client(socket: zmq.Socket[bytes], security: SecurityConfig | None) -> None:
    """Makes ``socket`` a CURVE client of the cluster, with this process's client keypair (no-op without
    ``security``)."""
    if security is None:
        return
    socket.setsockopt(zmq.CURVE_SERVERKEY, security.server_public)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, security.client_public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, security.client_secret)


class _AllowList:
    """The ZAP handler's decision: a key on the allow-list passes; refusals are counted."""

    def __init__(self, authorized: frozenset[bytes]) -> None:
        self._authorized = authorized
        self._reported: set[bytes] = set()
        self.denied = 0

    def callback(self, domain: str, key: bytes) -> bool:
        """Called by the authenticator with the Z85 public key of each connecting client."""
        if key in self._authorized:
            return True
        self.denied += 1
        # A refused peer reconnects every few hundred milliseconds: log each key once, count every refusal.
        if key not in self._reported and len(self._reported) < _REPORTED_KEYS:
            self._reported.add(key)
            logger.warning("refused a CURVE handshake: key %s... is not authorized", key.decode("ascii", "replace")[:8])
        return False


class SecureContext(zmq.Context[zmq.Socket[bytes]]):
    """A ZeroMQ context running a ZAP handler that admits only the authorized client keys.

    Terminating it stops the handler first (its sockets would otherwise keep ``term`` waiting).
    """

    # Class-level, as pyzmq turns unknown attributes of a context into socket options.
    _authenticator: ThreadAuthenticator | None = None
    _allow: _AllowList | None = None

    def start_authenticator(self, authorized: frozenset[bytes]) -> None:
        """Starts the ZAP handler; call before binding any CURVE server socket."""
        self._allow = _AllowList(authorized)
        self._authenticator = ThreadAuthenticator(self, log=logger)
        self._authenticator.start()
        self._authenticator.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self._allow)

    @property
    def denied_handshakes(self) -> int:
        """How many connections the ZAP handler refused (unknown client keys)."""
        return self._allow.denied if self._allow is not None else 0

    def term(self) -> None:
        """Stops the ZAP handler, then terminates the context."""
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        super().term()


def new_context(security: SecurityConfig | None) -> zmq.Context[zmq.Socket[bytes]]:
    """A context for a server: with a role's keys, one whose ZAP handler admits only authorized client keys."""
    if security is None or not security.is_role:
        return zmq.Context()
    context = SecureContext()
    context.start_authenticator(security.authorized)
    return context


def denied_handshakes(context: zmq.Context[zmq.Socket[bytes]]) -> int:
    """How many handshakes ``context``'s ZAP handler refused (0 without one)."""
    return context.denied_handshakes if isinstance(context, SecureContext) else 0


def generate_keys(directory: Path, name: str = DEFAULT_KEY_NAME) -> tuple[Path, Path]:
    """Writes a new CURVE keypair as ``NAME.key`` (public) and ``NAME.key_secret`` (secret, owner-only).

    Returns:
        The public and secret certificate files.

    Raises:
        ConfigError: The files exist already (keys are never overwritten) or cannot be written.
    """
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise ConfigError(f"{public} or {secret} exists already; keys are never overwritten")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written_public, written_secret = zmq.auth.create_certificates(directory, name)
        os.chmod(written_secret, 0o600)
    except OSError as error:
        raise ConfigError(f"cannot write keys into {directory}: {error}") from None
    return Path(written_public), Path(written_secret)
