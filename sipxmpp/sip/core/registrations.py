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

from collections.abc import Callable, Collection, Iterator
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
    @ivar source: where the REGISTER came from, when that differs from
        C{flow} only in the port (a UDP phone listening on another port
        than it sends from); L{None}: the same as C{flow}. The phone's
        requests come from here, so they are attributed to C{aor}.
    """

    aor: str
    contact: str
    flow: Peer
    expiresAt: float
    source: Peer | None = None

    @property
    def sentFrom(self) -> Peer:
        """
        Where the phone sends from (C{source}, or else C{flow}).
        """
        return self.flow if self.source is None else self.source


class Registrations:
    """
    Contact key -> L{Binding}, with lazy expiry on an injected clock, and
    indexes of the keys by the address the phone sends from and by AoR.

    @ivar onChange: called with the key of every binding added, refreshed
        or forgotten (not with those that merely expire): the persister's
        hook. Must return quickly and never raise.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._bindings: dict[ContactKey, Binding] = {}
        self._bySource: dict[Peer, set[ContactKey]] = {}
        # Each 2xx to REGISTER retains the AoR's listed keys: without this
        # index that was a scan of every binding per REGISTER.
        self._byAor: dict[str, set[ContactKey]] = {}
        self._nextPurge = 0.0  # the first update sweeps (an empty table)
        self.onChange: Callable[[ContactKey], None] | None = None

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
        self.restore(key, binding)
        if self.onChange is not None:
            self.onChange(key)
        now = self._clock.seconds()
        if now >= self._nextPurge:
            self._nextPurge = now + PURGE_INTERVAL
            self.purge()

    def restore(self, key: ContactKey, binding: Binding) -> None:
        """
        Add a binding saved before a restart (not reported to C{onChange}).
        """
        old = self._bindings.get(key)
        if old is not None:
            self._unindex(key, old)
        self._bindings[key] = binding
        sources = self._bySource.get(binding.sentFrom)
        if sources is None:
            sources = self._bySource[binding.sentFrom] = set()
        sources.add(key)
        keys = self._byAor.get(binding.aor)
        if keys is None:
            keys = self._byAor[binding.aor] = set()
        keys.add(key)

    def _drop(self, key: ContactKey) -> Binding | None:
        binding = self._bindings.pop(key, None)
        if binding is not None:
            self._unindex(key, binding)
        return binding

    def _unindex(self, key: ContactKey, binding: Binding) -> None:
        sources = self._bySource.get(binding.sentFrom)
        if sources is not None:
            sources.discard(key)
            if not sources:
                del self._bySource[binding.sentFrom]
        keys = self._byAor.get(binding.aor)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._byAor[binding.aor]

    def remove(self, key: ContactKey) -> None:
        """
        Forget a binding (de-registration).
        """
        if self._drop(key) is not None and self.onChange is not None:
            self.onChange(key)

    def retain(self, aor: str, keys: Collection[ContactKey]) -> list[Binding]:
        """
        Forget the bindings of C{aor} whose key is not among C{keys} (the
        registrar no longer lists them); return the live ones forgotten.
        """
        now = self._clock.seconds()
        gone = [k for k in self._byAor.get(aor, ()) if k not in keys]
        dropped = []
        for key in gone:
            binding = self._drop(key)
            if binding is not None:
                dropped.append(binding)
                if self.onChange is not None:
                    self.onChange(key)
        return [b for b in dropped if b.expiresAt > now]

    def get(self, key: ContactKey) -> Binding | None:
        """
        The live binding under C{key}, or C{None}.
        """
        binding = self._bindings.get(key)
        if binding is None:
            return None
        if binding.expiresAt <= self._clock.seconds():
            self._drop(key)
            return None
        return binding

    def lookup(self, uri: URI) -> Binding | None:
        """
        The live binding for contact C{uri}, or C{None}.
        """
        key = contactKey(uri)
        return self.get(key) if key is not None else None

    def aorsFrom(self, source: Peer) -> set[str]:
        """
        The AoRs with a live binding registered from C{source} (where the
        phone sends from): the users a phone's request from there is of.
        """
        keys = self._bySource.get(source)
        if not keys:
            return set()
        now = self._clock.seconds()
        bindings = self._bindings
        return {bindings[k].aor for k in keys if bindings[k].expiresAt > now}

    def items(self) -> list[tuple[ContactKey, Binding]]:
        """
        Every live binding with its key.
        """
        now = self._clock.seconds()
        return [(k, b) for k, b in self._bindings.items() if b.expiresAt > now]

    def purge(self) -> int:
        """
        Drop expired bindings; return how many were dropped.
        """
        now = self._clock.seconds()
        dead = [k for k, b in self._bindings.items() if b.expiresAt <= now]
        for key in dead:
            self._drop(key)
        return len(dead)
