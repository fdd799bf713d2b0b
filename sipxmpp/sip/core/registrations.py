"""
The contacts phones registered through this proxy, for routing back to them.

When the registrar accepts a REGISTER that came through us, each contact of
the phone is remembered with the flow it came from (transport, source
address and port), so requests the registrar later routes back to that
contact go to the phone's real address — never to a host merely named in a
message. Lookups check expiry lazily; expired bindings are swept by the
next update at most every C{PURGE_INTERVAL} seconds (so contacts that are
never looked up again do not pile up), and are never counted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from sipxmpp.sip.core.peer import DEFAULT_PORTS, Peer
from sipxmpp.sip.wire.headers import NameAddr
from sipxmpp.sip.wire.message import SIPResponse
from sipxmpp.sip.wire.uri import SIPURI, URI

ContactKey = tuple[str, str, int, str]

# Seconds between sweeps of expired bindings, done by the next update.
PURGE_INTERVAL = 60.0

# The lifetime of a registration that names none (RFC 3261 §10.2.1.1).
DEFAULT_EXPIRES = 3600


def grantedContacts(response: SIPResponse) -> list[tuple[NameAddr, int]]:
    """
    Read a registrar's 2xx to REGISTER: every contact it lists with the
    lifetime it granted, in seconds.

    The answer lists all current bindings of the AoR (RFC 3261 §10.3 step
    8); a contact without an C{expires} parameter takes the Expires header,
    and without that the default of §10.2.1.1. A wildcard is never a
    binding. The proxy and the observer both read the answer here, so they
    agree on which contacts are registered and for how long.
    """
    default = response.expires
    if default is None:
        default = DEFAULT_EXPIRES
    return [
        (contact, contact.expires if contact.expires is not None else default)
        for contact in response.contacts
        if not contact.isWildcard
    ]


def contactKey(uri: URI) -> ContactKey | None:
    """
    The part of a contact URI that identifies it for routing: user, host
    (lower-cased), port and GRUU (the C{gr} parameter, RFC 5627); C{None}
    for non-SIP URIs.

    A public GRUU differs from the other devices' of its user only in
    C{gr}: without it two devices would share one route, and a request for
    one would reach the other.
    """
    if not isinstance(uri, SIPURI):
        return None
    transport = str(uri.params.get("transport") or "").upper()
    default = DEFAULT_PORTS["TLS"] if uri.secure or transport == "TLS" else 5060
    host = uri.host.lower().strip("[]")
    gruu = str(uri.params.get("gr") or "").lower()
    return (uri.user or "", host, uri.port or default, gruu)


@dataclass
class Binding:
    """
    One registered contact.

    @ivar aor: the normalised address of record it belongs to.
    @ivar contact: the contact URI as registered.
    @ivar flow: where the phone's REGISTER came from; requests go there.
    @ivar expiresAt: clock time after which the binding is gone.
    """

    aor: str
    contact: str
    flow: Peer
    expiresAt: float


class Registrations:
    """
    Contact key -> L{Binding}, with lazy expiry on an injected clock.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._bindings: dict[ContactKey, Binding] = {}
        self._nextPurge = 0.0  # the first update sweeps (an empty table)

    def __len__(self) -> int:
        """
        The number of live bindings (expired ones are dropped first).
        """
        self.purge()
        return len(self._bindings)

    def __iter__(self) -> Iterator[Binding]:
        now = self._clock.seconds()
        return iter([b for b in self._bindings.values() if b.expiresAt > now])

    def update(self, key: ContactKey, binding: Binding) -> None:
        """
        Add or refresh a binding.
        """
        self._bindings[key] = binding
        now = self._clock.seconds()
        if now >= self._nextPurge:
            self._nextPurge = now + PURGE_INTERVAL
            self.purge()

    def remove(self, key: ContactKey) -> None:
        """
        Forget a binding (de-registration).
        """
        self._bindings.pop(key, None)

    def retain(self, aor: str, keys: Collection[ContactKey]) -> list[Binding]:
        """
        Forget the bindings of C{aor} whose key is not among C{keys} (the
        registrar no longer lists them); return the live ones forgotten.
        """
        now = self._clock.seconds()
        gone = [k for k, b in self._bindings.items() if b.aor == aor and k not in keys]
        dropped = [self._bindings.pop(k) for k in gone]
        return [b for b in dropped if b.expiresAt > now]

    def lookup(self, uri: URI) -> Binding | None:
        """
        The live binding for contact C{uri}, or C{None}.
        """
        key = contactKey(uri)
        binding = self._bindings.get(key) if key is not None else None
        if binding is None:
            return None
        if binding.expiresAt <= self._clock.seconds():
            del self._bindings[key]  # type: ignore[arg-type]
            return None
        return binding

    def purge(self) -> int:
        """
        Drop expired bindings; return how many were dropped.
        """
        now = self._clock.seconds()
        dead = [k for k, b in self._bindings.items() if b.expiresAt <= now]
        for key in dead:
            del self._bindings[key]
        return len(dead)
