"""
The user's presence as SIP sees it: the seam between back-publishing
(XMPP presence to SIP watchers and presence servers) and whatever knows
the user's XMPP presence.

SIP owns the seam: L{IPresenceSource} is what the presence agent
(L{sipxmpp.sip.core.presenceagent}) and the PUBLISH client
(L{sipxmpp.sip.core.presencepublisher}) read, and L{UserPresence} the plain
value it gives. The XMPP side implements the source from the gateway's
session of each user; L{InMemoryPresenceSource} is the one the tests feed.

Which resource decides (L{combine}): the available resource of highest
priority; among equals the first given. The gateway's own resource (a
negative priority) therefore decides only when no client of the user's is
online.

No loops: a presence that SIP caused (the gateway's own C{dnd} during a
call, on a client by remote control or on its own resource, or anything
else marked as coming from SIP) carries C{fromSIP}. Watchers are shown it;
the PUBLISH client never publishes it (the SIP core knows the call
already, and publishing it would feed the gateway's own ingest).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from zope.interface import Interface, implementer

from sipxmpp.sip.wire.pidfbuild import buildPresence

__all__ = [
    "SHOWS",
    "UNAVAILABLE",
    "IPresenceSource",
    "InMemoryPresenceSource",
    "PresenceListener",
    "ResourcePresence",
    "UserPresence",
    "activitiesOf",
    "combine",
    "presenceDocument",
]

#: The values of L{UserPresence.show}: XMPP's C{<show/>} (RFC 6121 §4.7.2.1),
#: L{None} for plain available, and C{"unavailable"}.
SHOWS = frozenset((None, "away", "chat", "dnd", "xa", "unavailable"))

PresenceListener = Callable[[str], object]


@dataclass(frozen=True, slots=True)
class UserPresence:
    """
    One user's presence, as the resource that decides shows it.

    @ivar show: L{None} (available), C{"away"}, C{"chat"}, C{"dnd"},
        C{"xa"} or C{"unavailable"}.
    @ivar status: the status text (empty: none).
    @ivar fromSIP: SIP caused it (the gateway's own C{dnd} during a call,
        or a state that came from SIP): shown to watchers, never published.
    """

    show: str | None = None
    status: str = ""
    fromSIP: bool = False

    def __post_init__(self) -> None:
        if self.show not in SHOWS:
            raise ValueError(f"not an XMPP show value: {self.show!r}")

    @property
    def available(self) -> bool:
        """
        Can the user be reached (anything but unavailable)?
        """
        return self.show != "unavailable"


#: Nobody online: what L{combine} gives for no available resource.
UNAVAILABLE = UserPresence("unavailable")


@dataclass(frozen=True, slots=True)
class ResourcePresence:
    """
    The presence of one of the user's XMPP resources.

    @ivar priority: its priority (-128 to 127).
    @ivar presence: what it shows.
    """

    priority: int
    presence: UserPresence


def combine(resources: Iterable[ResourcePresence]) -> UserPresence:
    """
    The user's presence: that of the available resource of highest
    priority (the first given among equals), or unavailable.
    """
    best: ResourcePresence | None = None
    for resource in resources:
        if resource.presence.available and (best is None or resource.priority > best.priority):
            best = resource
    return best.presence if best is not None else UNAVAILABLE


class IPresenceSource(Interface):
    """
    Knows each provisioned user's presence (on XMPP) and tells of changes.
    Called on the SIP path: both answer from memory, at once.
    """

    def presenceOf(aor: str) -> UserPresence | None:
        """
        The presence of the user C{aor} (an AoR in normal form), or L{None}
        when it is not known (no session for that user): nothing to show,
        and nothing to publish.
        """

    def addListener(listener: PresenceListener) -> None:
        """
        Call C{listener(aor)} after the presence of C{aor} may have changed
        (L{presenceOf} has the new one).
        """


@implementer(IPresenceSource)
class InMemoryPresenceSource:
    """
    An L{IPresenceSource} whose presences are set by hand (tests, and a
    stand-in until the XMPP side provides one).
    """

    def __init__(self) -> None:
        self._presences: dict[str, UserPresence] = {}
        self._listeners: list[PresenceListener] = []

    def presenceOf(self, aor: str) -> UserPresence | None:
        return self._presences.get(aor)

    def addListener(self, listener: PresenceListener) -> None:
        self._listeners.append(listener)

    def set(self, aor: str, presence: UserPresence | None) -> None:
        """
        Set (or with L{None}, forget) the presence of C{aor} and tell the
        listeners.
        """
        if presence is None:
            self._presences.pop(aor, None)
        else:
            self._presences[aor] = presence
        for listener in list(self._listeners):
            listener(aor)


def activitiesOf(presence: UserPresence) -> tuple[str, ...]:
    """
    The RPID activities (RFC 4480 §3.2) that show C{presence}: C{away} for
    away and xa, C{on-the-phone} for the gateway's own dnd (a call),
    C{busy} for any other dnd, none otherwise.
    """
    if presence.show in ("away", "xa"):
        return ("away",)
    if presence.show == "dnd":
        return ("on-the-phone",) if presence.fromSIP else ("busy",)
    return ()


def presenceDocument(aor: str, presence: UserPresence | None) -> bytes:
    """
    The PIDF document (RFC 3863 with RFC 4480 RPID) of C{aor}: basic open
    while available, closed otherwise (and when not known); the activities
    of L{activitiesOf}; the status text as the note.
    """
    if presence is None or not presence.available:
        return buildPresence(aor, basic="closed",
                             note=presence.status if presence else "")  # fmt: skip
    return buildPresence(aor, basic="open", activities=activitiesOf(presence),
                         note=presence.status)  # fmt: skip
