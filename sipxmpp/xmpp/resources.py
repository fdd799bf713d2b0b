"""
The user's other resources, as the server tells the gateway's session.

Sans-IO: L{ResourceTracker} is fed presence stanzas and answers what the
user's clients show; L{CommandCache} remembers which remote-control
commands a client offers, per XEP-0115 entity capabilities, so that a user
with ten calls a day costs one disco query per client version, not per call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from sipxmpp.xmpp.jids import parseJID

NS_CAPS = "http://jabber.org/protocol/caps"
SHOWS = ("away", "chat", "dnd", "xa")


@dataclass(frozen=True)
class Caps:
    """
    XEP-0115 entity capabilities of one client.

    @ivar hash: the hash function name (C{sha-1}); empty for legacy caps.
    """

    node: str
    ver: str
    hash: str


@dataclass(frozen=True)
class ResourcePresence:
    """
    What one available resource of the user shows.

    @ivar show: C{away}, C{chat}, C{dnd}, C{xa}, or L{None} (plain online).
    @ivar status: the status message, or L{None}.
    """

    resource: str
    priority: int
    show: str | None
    status: str | None
    caps: Caps | None

    def looksLike(self, show: str | None, status: str | None) -> bool:
        """
        Tell whether this presence shows C{show} with C{status} (what
        contacts see; the priority is not part of it).
        """
        return self.show == show and (self.status or None) == (status or None)


def parsePresence(element: domish.Element, resource: str) -> ResourcePresence:
    """
    Read an available presence stanza.
    """
    priority = 0
    show: str | None = None
    status: str | None = None
    caps: Caps | None = None
    for child in element.elements():
        if child.name == "priority" and child.uri in (None, "jabber:client"):
            try:
                priority = max(-128, min(127, int(str(child).strip())))
            except ValueError:
                priority = 0
        elif child.name == "show" and child.uri in (None, "jabber:client"):
            text = str(child).strip()
            show = text if text in SHOWS else None
        elif child.name == "status" and child.uri in (None, "jabber:client") and status is None:
            status = str(child)
        elif child.name == "c" and child.uri == NS_CAPS:
            node, ver = child.getAttribute("node"), child.getAttribute("ver")
            if node and ver:
                caps = Caps(node, ver, child.getAttribute("hash") or "")
    return ResourcePresence(resource, priority, show, status, caps)


@dataclass(frozen=True)
class ResourceChange:
    """
    A resource of the user came, changed or left.

    @ivar before: its presence before, or L{None} if it was not available.
    @ivar after: its presence now, or L{None} if it is gone.
    """

    resource: str
    before: ResourcePresence | None
    after: ResourcePresence | None


def gatewayResource(base: str, instance: str) -> str:
    """
    The resource gateway instance C{instance} logs in with: C{[xmpp]
    resource} C{base}, a dash and the instance name, so that two instances
    that may serve one user (scale-out, a takeover) never share a full JID
    and kick each other's session. Without an instance name, C{base}.
    """
    return f"{base}-{instance}" if instance else base


def isGatewayResource(base: str, resource: str) -> bool:
    """
    Whether C{resource} is a gateway's (any instance's, by
    L{gatewayResource}, or one without an instance name, like
    C{sipxmpp-admin account check}): such a resource is never one of the
    user's clients.
    """
    return resource == base or resource.startswith(base + "-")


class ResourceTracker:
    """
    The available resources of one account, except the gateways'.
    """

    def __init__(self, ownJID: JID, gatewayBase: str | None = None) -> None:
        """
        @param ownJID: the gateway's full JID: its bare JID says whose
            resources to track, its resource which one to leave out.
        @param gatewayBase: C{[xmpp] resource}: every gateway instance's
            resource (L{isGatewayResource}) is left out too; L{None}: only
            C{ownJID}'s.
        """
        self.ownJID = ownJID
        self.gatewayBase = gatewayBase
        self._ownFull = ownJID.full()
        self._resources: dict[str, ResourcePresence] = {}

    def presenceReceived(self, element: domish.Element) -> ResourceChange | None:
        """
        Update from a presence stanza the session received.

        @return: what changed, or L{None} when the stanza is not about
            another resource of the user (a contact, the gateway itself, a
            subscription request, an error).
        """
        sender = element.getAttribute("from")
        if not sender:
            return None
        if sender == self._ownFull:
            # The server's echo of the gateway's own presence (one per
            # change it sends): skip the JID preparation, the costliest
            # part of the stanza for the gateway.
            return None
        try:
            jid = parseJID(sender)
        except InvalidFormat:
            return None
        if jid.userhost() != self.ownJID.userhost() or not jid.resource:
            return None
        if jid.resource == self.ownJID.resource or (
                self.gatewayBase is not None and isGatewayResource(self.gatewayBase, jid.resource)):
            # Another gateway instance's resource (a takeover overlaps)
            # is no client: never remote-controlled, never shown.
            return None
        kind = element.getAttribute("type") or "available"
        before = self._resources.get(jid.resource)
        if kind == "available":
            presence = parsePresence(element, jid.resource)
            self._resources[jid.resource] = presence
            after: ResourcePresence | None = presence
        elif kind in ("unavailable", "error"):
            after = None
            self._resources.pop(jid.resource, None)
        else:
            return None
        if before == after:
            return None
        return ResourceChange(jid.resource, before, after)

    def get(self, resource: str) -> ResourcePresence | None:
        """
        Return what C{resource} shows, or L{None} if it is not available.
        """
        return self._resources.get(resource)

    def available(self) -> list[ResourcePresence]:
        """
        Return the available resources, highest priority first (ties in the
        order they came online, like most servers route).
        """
        return sorted(self._resources.values(), key=lambda r: -r.priority)

    def highestPriority(self) -> int | None:
        """
        Return the highest priority among the resources, or L{None}.
        """
        return max((r.priority for r in self._resources.values()), default=None)

    def clear(self) -> None:
        """
        Forget everything (the session's stream is gone; the server sends
        the resources' presence again on the next one).
        """
        self._resources.clear()


def cacheKey(jid: JID, caps: Caps | None) -> tuple[str, str, str]:
    """
    Return the L{CommandCache} key shared by every client that advertises
    C{caps} (hash and verification string) when it has hashed caps,
    otherwise C{jid}'s own key (L{jidKey}: legacy or missing caps say
    nothing about other clients). Only answers whose C{ver} was verified
    may be stored under a caps key (L{sipxmpp.xmpp.caps}).
    """
    if caps is not None and caps.hash:
        return ("caps", caps.hash, caps.ver)
    return jidKey(jid)


def jidKey(jid: JID) -> tuple[str, str, str]:
    """
    Return the L{CommandCache} key for what one client (by full JID) said
    of itself.
    """
    return ("jid", jid.full(), "")


# How long a cached command list is trusted.
COMMANDS_TTL = 3600.0


class CommandCache:
    """
    Remote-control commands a client offers (the nodes of its disco#items
    on C{http://jabber.org/protocol/commands}), per L{cacheKey} or
    L{jidKey}, bounded with least-recently-used eviction; an entry expires
    C{ttl} seconds after it was stored.
    """

    def __init__(self, maxEntries: int = 10000, ttl: float = COMMANDS_TTL,
                 now: Callable[[], float] | None = None) -> None:  # fmt: skip
        """
        @param now: the clock (seconds); entries never expire without one.
        """
        self.maxEntries = maxEntries
        self.ttl = ttl
        self.now = now
        self._entries: OrderedDict[tuple[str, str, str], tuple[frozenset[str], float]] = (
            OrderedDict()
        )

    def _time(self) -> float:
        return self.now() if self.now is not None else 0.0

    def get(self, key: tuple[str, str, str]) -> frozenset[str] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        nodes, expires = entry
        if self.now is not None and self._time() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return nodes

    def put(self, key: tuple[str, str, str], nodes: frozenset[str]) -> None:
        expires = self._time() + self.ttl if self.now is not None else float("inf")
        self._entries[key] = (nodes, expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxEntries:
            self._entries.popitem(last=False)

    def forget(self, key: tuple[str, str, str]) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
