"""
Listening endpoint descriptions for SIP transports.

Twisted parses ``tcp:`` and ``ssl:`` server endpoint strings but has no UDP
endpoint, so this module reads all three forms the configuration accepts::

    udp:5060:interface=127.0.0.1
    tcp:port=5060:interface=127.0.0.1
    ssl:5061:interface=127.0.0.1:privateKey=key.pem:certKey=cert.pem

A colon inside a value (an IPv6 interface) is escaped with a backslash, as
in Twisted's own syntax: ``udp:5060:interface=\\:\\:1``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# SIP transport names as they appear in a Via header, by endpoint type.
TRANSPORTS = {"udp": "UDP", "tcp": "TCP", "ssl": "TLS"}

_KNOWN_KEYS = {
    "udp": {"port", "interface"},
    "tcp": {"port", "interface", "backlog"},
    "ssl": {
        "port",
        "interface",
        "backlog",
        "privateKey",
        "certKey",
        "extraCertChain",
        "sslmethod",
        "dhParameters",
    },
}


class EndpointSyntaxError(ValueError):
    """
    A listen description could not be understood; the message says why.
    """


@dataclass(frozen=True)
class ListenSpec:
    """
    One parsed listen description.

    @ivar transport: C{"UDP"}, C{"TCP"} or C{"TLS"}, as written in Via.
    @ivar port: the port to bind (0 lets the OS choose, for tests).
    @ivar interface: the address to bind; C{""} means all interfaces.
    @ivar options: the remaining C{key=value} options (TLS files, backlog).
    @ivar description: the original text, for Twisted's C{serverFromString}.
    """

    transport: str
    port: int
    interface: str
    options: tuple[tuple[str, str], ...]
    description: str

    def option(self, name: str, default: str = "") -> str:
        """
        Return the value of option C{name}, or C{default}.
        """
        for key, value in self.options:
            if key == name:
                return value
        return default


def _splitEscaped(text: str) -> list[str]:
    """
    Split on unescaped colons, removing the backslash escapes.
    """
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parseListen(description: str) -> ListenSpec:
    """
    Parse one listen description.

    @raise EndpointSyntaxError: if the type is not C{udp}, C{tcp} or C{ssl},
        the port is missing or out of range, an option is unknown or the
        interface is not an IP address.
    """
    parts = _splitEscaped(description.strip())
    kind = parts[0].lower()
    if kind not in TRANSPORTS:
        raise EndpointSyntaxError(
            f"unknown endpoint type {parts[0]!r} (use udp:, tcp: or ssl:)"
        )
    positional: list[str] = []
    options: dict[str, str] = {}
    for part in parts[1:]:
        if "=" in part:
            key, value = part.split("=", 1)
            if key not in _KNOWN_KEYS[kind]:
                raise EndpointSyntaxError(f"unknown option {key!r} for {kind}:")
            options[key] = value
        else:
            positional.append(part)
    if positional:
        if "port" in options or len(positional) > 1:
            raise EndpointSyntaxError("give the port once, as PORT or port=PORT")
        options["port"] = positional[0]
    portText = options.pop("port", "")
    if not portText.isdigit() or not 0 <= int(portText) <= 65535:
        raise EndpointSyntaxError(f"port {portText!r} is not a number 0-65535")
    interface = options.pop("interface", "")
    if interface:
        try:
            ipaddress.ip_address(interface)
        except ValueError:
            raise EndpointSyntaxError(
                f"interface {interface!r} is not an IP address"
            ) from None
    if kind == "ssl" and "privateKey" not in options:
        raise EndpointSyntaxError("ssl: needs privateKey=FILE (and certKey=FILE)")
    return ListenSpec(
        transport=TRANSPORTS[kind],
        port=int(portText),
        interface=interface,
        options=tuple(sorted(options.items())),
        description=description.strip(),
    )
