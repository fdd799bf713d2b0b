"""
The one thing the observer needs from SDP: is this offer putting the call
on hold?

RFC 3264 §8.4: a stream is held when it is marked C{a=sendonly} or
C{a=inactive}; a session-level direction applies to every stream that has
none of its own; RFC 2543 phones hold with C{c=0.0.0.0}. A call is held when
every active stream (port not 0) is held.
"""

from __future__ import annotations

_DIRECTIONS = (b"sendrecv", b"sendonly", b"recvonly", b"inactive")


class _Stream:
    __slots__ = ("active", "direction", "zero")

    def __init__(self, active: bool) -> None:
        self.active = active
        self.direction: bytes | None = None
        self.zero: bool | None = None


def isHold(body: bytes) -> bool | None:
    """
    Return C{True} if the SDP C{body} holds the call, C{False} if it is
    active, or C{None} if it is not SDP with at least one active stream.
    """
    sessionDirection = b"sendrecv"
    sessionZero = False
    streams: list[_Stream] = []
    for raw in body.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1:2] != b"=":
            continue
        kind, value = line[:1], line[2:]
        if kind == b"m":
            fields = value.split()
            port = fields[1].split(b"/")[0] if len(fields) > 1 else b""
            streams.append(_Stream(port.isdigit() and int(port) != 0))
        elif kind == b"a" and value in _DIRECTIONS:
            if streams:
                streams[-1].direction = value
            else:
                sessionDirection = value
        elif kind == b"c":
            zero = value.split()[-1:] == [b"0.0.0.0"]
            if streams:
                streams[-1].zero = zero
            else:
                sessionZero = zero
    active = [s for s in streams if s.active]
    if not active:
        return None
    for stream in active:
        held = (stream.direction or sessionDirection) in (b"sendonly", b"inactive")
        if not held and not (stream.zero if stream.zero is not None else sessionZero):
            return False
    return True
