"""
Acknowledge each read of an XMPP stream at once (Linux C{TCP_QUICKACK}).

A server that keeps Nagle's algorithm on (Prosody's default) sends a small
stanza only once its previous one is acknowledged, and Linux delays the ACK
of data received on an interactive connection (up to 40 ms): a stanza
that follows another within that time waits for it. The option is not
sticky, so it is set after every read: setting it sends the ACK that is due
at once. One system call per read is cheaper than a timer per session.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol, cast

from twisted.words.xish.xmlstream import XmlStream

# Linux only; elsewhere this module does nothing.
TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_OPTION = TCP_QUICKACK or 0


class _Socket(Protocol):
    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...


class QuickAck:
    """
    The stream's C{rawDataInFn}: sets C{TCP_QUICKACK} on C{sock}, then
    hands the data to the C{rawDataInFn} it replaced, if any.
    """

    def __init__(self, sock: _Socket, then: Callable[[bytes], object] | None) -> None:
        self.socket = sock
        self._set = sock.setsockopt
        self._then = then

    def __call__(self, data: bytes) -> None:
        try:
            self._set(socket.IPPROTO_TCP, _OPTION, 1)
        except OSError:
            pass  # closed meanwhile: there is nothing left to acknowledge
        if self._then is not None:
            self._then(data)


def ackEachRead(xs: XmlStream) -> QuickAck | None:
    """
    Make C{xs} acknowledge what it reads at once, on the socket under its
    transport (the TCP connection under TLS, if any; C{getHandle} of the
    TLS layer is its OpenSSL connection). A transport without a socket of
    its own (BOSH's) is left alone.
    """
    if TCP_QUICKACK is None:
        return None
    if isinstance(xs.rawDataInFn, QuickAck):
        return xs.rawDataInFn
    transport = xs.transport
    while transport is not None:
        getHandle = getattr(transport, "getHandle", None)
        handle = getHandle() if getHandle is not None else None
        if callable(getattr(handle, "setsockopt", None)):
            hook = QuickAck(cast(_Socket, handle), xs.rawDataInFn)
            xs.rawDataInFn = hook
            return hook
        transport = getattr(transport, "transport", None)
    return None
