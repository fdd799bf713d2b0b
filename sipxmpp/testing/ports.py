"""
Free loopback ports for test servers.

The kernel picks a free port when one binds port 0; we close the socket at
once and hand the number to a server started right after.  Another process
may grab the port in between: launchers whose ports were chosen here retry
with fresh ones when the server fails to start (see
L{sipxmpp.testing.process.ServerProcess}).
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


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


def freeTCPPort(host: str = LOOPBACK) -> int:
    """
    Return a TCP port on C{host} that nothing listens on right now.
    """
    with _bound(socket.SOCK_STREAM, host, 0) as sock:
        port: int = sock.getsockname()[1]
    return port


def freeUDPPort(host: str = LOOPBACK) -> int:
    """
    Return a UDP port on C{host} that nothing is bound to right now.
    """
    with _bound(socket.SOCK_DGRAM, host, 0) as sock:
        port: int = sock.getsockname()[1]
    return port


def freeSIPPort(host: str = LOOPBACK, attempts: int = 50) -> int:
    """
    Return a port free for both UDP and TCP on C{host}.

    SIP servers listen on the same number for both transports, so the
    number the kernel gives for TCP must also be free for UDP.

    @raise OSError: when no such port was found in C{attempts} tries.
    """
    for _ in range(attempts):
        with _bound(socket.SOCK_STREAM, host, 0) as tcp:
            port: int = tcp.getsockname()[1]
            try:
                _bound(socket.SOCK_DGRAM, host, port).close()
            except OSError:
                continue
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
        if all(isUDPPortFree(p, host) and isTCPPortFree(p, host)
               for p in range(base + 1, base + count)):
            return base
    raise OSError(f"no {count} consecutive ports free for UDP and TCP on {host}")


def freePorts(count: int, host: str = LOOPBACK) -> list[int]:
    """
    Return C{count} distinct TCP ports on C{host}, free right now.

    All sockets stay bound until every number is known, so the kernel
    cannot hand out the same number twice.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_bound(socket.SOCK_STREAM, host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def isTCPPortFree(port: int, host: str = LOOPBACK) -> bool:
    """
    Tell whether a server can listen on TCP C{port} of C{host} right now
    (nothing listens there; connections in TIME_WAIT do not count).
    """
    try:
        _bound(socket.SOCK_STREAM, host, port, reuse=True).close()
    except OSError:
        return False
    return True


def isUDPPortFree(port: int, host: str = LOOPBACK) -> bool:
    """
    Tell whether C{port} on C{host} can be bound for UDP right now.
    """
    try:
        _bound(socket.SOCK_DGRAM, host, port).close()
    except OSError:
        return False
    return True


def tcpAccepting(host: str, port: int, timeout: float = 0.5) -> bool:
    """
    Tell whether something accepts TCP connections on C{(host, port)}.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
