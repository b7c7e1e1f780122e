"""Endpoint parsing and the reply-address policy.

Servers push responses to an address named inside the request. Without a check, a forged request could make a
server connect anywhere, so a server bound to loopback only ever answers loopback addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cloudburst.errors import TransportError


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    """A parsed ``tcp://host:port`` endpoint."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"tcp://{self.host}:{self.port}"


def parse_endpoint(address: str) -> TcpEndpoint:
    """Parses ``tcp://host:port``.

    Raises:
        TransportError: The address is not a TCP endpoint with a host and a port in 1..65535.
    """
    if not address.startswith("tcp://"):
        raise TransportError(f"endpoint {address!r} is not of the form tcp://host:port")
    host, sep, port_text = address[len("tcp://") :].rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TransportError(f"endpoint {address!r} is not of the form tcp://host:port")
    return TcpEndpoint(host.strip("[]"), int(port_text))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ReplyPolicy:
    """Which reply addresses a server accepts.

    Attributes:
        loopback_only: Only answer loopback addresses; the default for a server bound to loopback, where any other
            reply address can only come from a forged or corrupted request.
    """

    loopback_only: bool

    @classmethod
    def for_bind_host(cls, host: str) -> ReplyPolicy:
        """The policy for a server bound to ``host``."""
        return cls(loopback_only=is_loopback(host))

    def check(self, address: str) -> str:
        """Validates a reply address and returns it in canonical form.

        Raises:
            TransportError: The address is malformed, or not loopback while the policy requires loopback.
        """
        endpoint = parse_endpoint(address)
        if self.loopback_only and not is_loopback(endpoint.host):
            raise TransportError(f"reply address {address!r} is not on loopback; this server only answers loopback")
        return str(endpoint)
