"""
Free loopback ports for test servers.

A port is drawn at random below the kernel's ephemeral range
(C{net.ipv4.ip_local_port_range}) and checked free, then handed to a
server started right after.  Below that range, no outgoing connection or
C{bind(0)} of any process can take the number in between; when the number
came from the kernel (the ephemeral range), one did: a phone registered
from a port, and the sipp UAS meant to answer on it found it taken.
Another test may still pick the same number in the same moment, so
launchers whose ports were chosen here retry with fresh ones when the
server fails to start (see L{sipxmpp.testing.process.ServerProcess}).
"""

from __future__ import annotations

import random
import socket
from collections import deque
from collections.abc import Callable

LOOPBACK = "127.0.0.1"

#: Where the drawn ports start: above the well-known servers' ports.
LOWEST = 20000

_EPHEMERAL_FILE = "/proc/sys/net/ipv4/ip_local_port_range"

#: Numbers handed out lately by this process, not drawn again: a caller
#: may ask twice before it starts the first server.
_recent: deque[int] = deque(maxlen=256)
_draw = random.SystemRandom()


def _bound(kind: int, host: str, port: int, reuse: bool = False) -> socket.socket:
    """
    Bind a socket of C{kind} to C{(host, port)}; the caller closes it.

    @param reuse: set C{SO_REUSEADDR} first.  Servers set it on their TCP
        listeners, so a TCP port whose only users are connections in
        TIME_WAIT (a server stopped a moment ago) is free for them; only a
        listener makes it busy.  Never for UDP: there it would let two
        sockets share the port.
    """
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def ephemeralRange(path: str = _EPHEMERAL_FILE) -> tuple[int, int]:
    """
    Return the kernel's ephemeral port range (first and last), or Linux's
    default when it cannot be read.
    """
    try:
        with open(path) as f:
            low, high = (int(field) for field in f.read().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _drawPort(isFree: Callable[[int], bool], attempts: int = 200) -> int | None:
    """
    Draw a number below the ephemeral range for which C{isFree} holds, not
    handed out lately; C{None} when the range is too small or full.
    """
    low, _ = ephemeralRange()
    if low - LOWEST < 1000:
        return None
    for _ in range(attempts):
        port = _draw.randrange(LOWEST, low)
        if port not in _recent and isFree(port):
            _recent.append(port)
            return port
    return None


def _bindable(kind: int, host: str, port: int, reuse: bool = False) -> bool:
    try:
        _bound(kind, host, port, reuse).close()
    except OSError:
        return False
    return True


def _freePort(kind: int, host: str) -> int:
    """
    A drawn port that a socket of C{kind} can bind now, else the kernel's.
    """
    drawn = _drawPort(lambda p: _bindable(kind, host, p))
    if drawn is not None:
        return drawn
    with _bound(kind, host, 0) as sock:
        port: int = sock.getsockname()[1]
    return port


def freeTCPPort(host: str = LOOPBACK) -> int:
    """
    Return a TCP port on C{host} that nothing listens on right now.
    """
    return _freePort(socket.SOCK_STREAM, host)


def freeUDPPort(host: str = LOOPBACK) -> int:
    """
    Return a UDP port on C{host} that nothing is bound to right now.
    """
    return _freePort(socket.SOCK_DGRAM, host)


def _bindableSIP(host: str, port: int) -> bool:
    return _bindable(socket.SOCK_STREAM, host, port) and _bindable(socket.SOCK_DGRAM, host, port)


def freeSIPPort(host: str = LOOPBACK, attempts: int = 50) -> int:
    """
    Return a port free for both UDP and TCP on C{host}.

    SIP servers listen on the same number for both transports, so the
    number must be free for both.

    @raise OSError: when no such port was found in C{attempts} tries.
    """
    drawn = _drawPort(lambda p: _bindableSIP(host, p))
    if drawn is not None:
        return drawn
    for _ in range(attempts):
        with _bound(socket.SOCK_STREAM, host, 0) as tcp:
            port: int = tcp.getsockname()[1]
            if _bindable(socket.SOCK_DGRAM, host, port):
                return port
    raise OSError(f"no port free for both UDP and TCP on {host}")


def freeSIPPortRange(count: int, host: str = LOOPBACK, attempts: int = 50) -> int:
    """
    Return the first of C{count} consecutive ports free for both UDP and
    TCP on C{host} (a gateway's SIP workers, C{[sip] worker_ports}).

    @raise OSError: when no such range was found in C{attempts} tries.
    """
    for _ in range(attempts):
        base = freeSIPPort(host)
        rest = range(base + 1, base + count)
        if all(p not in _recent and _bindableSIP(host, p) for p in rest):
            _recent.extend(rest)
            return base
    raise OSError(f"no {count} consecutive ports free for UDP and TCP on {host}")


def freePorts(count: int, host: str = LOOPBACK) -> list[int]:
    """
    Return C{count} distinct TCP ports on C{host}, free right now.
    """
    return [freeTCPPort(host) for _ in range(count)]


def isTCPPortFree(port: int, host: str = LOOPBACK) -> bool:
    """
    Tell whether a server can listen on TCP C{port} of C{host} right now
    (nothing listens there; connections in TIME_WAIT do not count).
    """
    return _bindable(socket.SOCK_STREAM, host, port, reuse=True)


def isUDPPortFree(port: int, host: str = LOOPBACK) -> bool:
    """
    Tell whether C{port} on C{host} can be bound for UDP right now.
    """
    return _bindable(socket.SOCK_DGRAM, host, port)


def tcpAccepting(host: str, port: int, timeout: float = 0.5) -> bool:
    """
    Tell whether something accepts TCP connections on C{(host, port)}.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
