"""
The routes back to the phones: what the proxy learns from a phone's
REGISTER and dialogs, so that requests from the upstream reach the right
phone at the address it sends from.

On the way out a phone's REGISTER gets the gateway's Path (C{register_mode
= path}), or its contacts are rewritten to point here (C{contact}). On the
registrar's 2xx the contacts it lists become the AoR's bindings, each with
the flow it came from (L{Registrations}); a phone's dialog contact (its
INVITE's, or its 2xx's) becomes a dialog target. A GRUU (RFC 5627) is a
contact of its own: two devices of one user never share a route.

A phone's request is attributed to its user (L{PhoneRoutes.callerAoR}) by
its From, or, when the From is anonymous (RFC 3323), by the AoR registered
from the address it sends from; a P-Asserted-Identity from a phone is never
believed (RFC 3325 §5: it is not from the trust domain).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.registrations import (
    Binding,
    ContactKey,
    Registrations,
    contactKey,
    grantedContacts,
)
from sipxmpp.sip.wire.headers import NameAddr, parseNameAddr
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.uri import SIPURI, URI, parseURI

# How long a phone's dialog contact (from INVITE or its 2xx) stays routable.
DIALOG_TARGET_LIFETIME = 4 * 3600.0

# A phone's contact, with what the registrar sees instead (contact mode).
Registered = list[tuple[NameAddr, NameAddr | None]]


@functools.lru_cache(maxsize=4096)
def ipAddress(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """
    L{ipaddress.ip_address}, memoised: the same few peers send every
    message, and parsing an address costs more than the rest of the policy
    checks. Raises C{ValueError} (not cached) like the original.
    """
    return ipaddress.ip_address(host)


def shortHash(*parts: object) -> str:
    """
    A short stable digest of C{parts} (branches, loop hashes, tokens).
    """
    digest = hashlib.blake2b(repr(parts).encode("utf-8", "surrogateescape"), digest_size=8)
    return digest.hexdigest()


def localURI(local: Peer, transport: str) -> str:
    """
    The gateway's own URI on C{transport} (for Path and Record-Route).
    """
    param = "" if transport == "UDP" else f";transport={transport.lower()}"
    return f"sip:{local.hostPort}{param};lr"


def isAnonymous(uri: URI) -> bool:
    """
    Does From C{uri} hide its user (RFC 3323 §4.1.1.3: the recommended
    C{sip:anonymous@anonymous.invalid}, or any user C{anonymous}, or any
    host in the reserved C{.invalid} domain)?
    """
    if not isinstance(uri, SIPURI):
        return False
    host = uri.host.lower().rstrip(".")
    return host == "invalid" or host.endswith(".invalid") or (uri.user or "").lower() == "anonymous"


def _sourceIfOther(flow: Peer, source: Peer) -> Peer | None:
    return None if flow == source else source


def flowFor(contact: URI, source: Peer) -> Peer:
    """
    Where to reach the phone that registered C{contact} from C{source}.

    A phone behind NAT is reached where its requests come from (the flow).
    A UDP phone that sends from one port but names another port of the same
    address in its Contact (no rport support, or separate sockets) listens
    there. The address is always the source's: a host merely named in a
    message is never contacted.
    """
    if source.transport != "UDP" or not isinstance(contact, SIPURI) or contact.port is None:
        return source
    try:
        named = ipAddress(contact.host.strip("[]"))
    except ValueError:
        return source
    if named == ipAddress(source.host):
        return source._replace(port=contact.port)
    return source


class PhoneRoutes:
    """
    The registered contacts and dialog targets of the phones behind us.

    @param local: the gateway's address per transport.
    @param registerMode: C{"path"} or C{"contact"}.
    @ivar registrations: the contacts the registrar granted.
    @ivar dialogTargets: the phones' dialog contacts.
    """

    def __init__(self, clock: IReactorTime, local: dict[str, Peer], registerMode: str) -> None:
        self._clock = clock
        self._local = local
        self._registerMode = registerMode
        self.registrations = Registrations(clock)
        self.dialogTargets = Registrations(clock)

    def bindingFor(self, uri: URI) -> Binding | None:
        """
        The phone contact C{uri} names, registered or in a dialog.
        """
        return self.registrations.lookup(uri) or self.dialogTargets.lookup(uri)

    def prepareRegister(self, outgoing: SIPRequest, source: Peer, upstream: Peer) -> Registered:
        """
        Add our Path, or rewrite the contacts to point here; return the
        phone's contacts with what the registrar will see instead.
        """
        contacts = outgoing.contacts
        upstreamTransport = upstream.transport
        local = self._local[upstreamTransport]
        if self._registerMode == "path":
            outgoing.addPath(f"<{localURI(local, upstreamTransport)}>")
            return [(contact, None) for contact in contacts]
        pairs: Registered = []
        rewritten: list[str] = []
        for contact in contacts:
            if contact.isWildcard:
                rewritten.append(contact.text)
                pairs.append((contact, None))
                continue
            token = "sx" + shortHash(contact.uriText, source)
            param = "" if upstreamTransport == "UDP" else f";transport={upstreamTransport.lower()}"
            mine = f"<sip:{token}@{local.hostPort}{param}>"
            params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in contact.params.items())
            rewritten.append(mine + params)
            pairs.append((contact, parseNameAddr(mine + params)))
        outgoing.setContacts(rewritten)
        return pairs

    def registered(self, aor: str, source: Peer, pairs: Registered,
                   response: SIPResponse) -> list[Binding]:
        """
        The registrar accepted a phone's REGISTER (C{pairs} from
        L{prepareRegister}): update the routes back to the phone, and in
        contact mode show the phone its own contacts.

        The answer lists every binding of the AoR (RFC 3261 §10.3 step 8):
        the AoR keeps exactly the contacts it lists. Any other, such as the
        contact a TCP phone had before it reconnected from a new port (which
        the registrar replaced by C{+sip.instance}), is forgotten and
        returned.
        """
        now = self._clock.seconds()
        granted: dict[ContactKey, int] = {}
        for contact, expires in grantedContacts(response):
            key = contactKey(contact.uri)
            if key is not None:
                granted[key] = expires
        replaced: dict[str, str] = {}
        for original, mine in pairs:
            if original.isWildcard:
                for binding in list(self.registrations):
                    if binding.aor == aor:
                        key = contactKey(parseURI(binding.contact))
                        if key is not None:
                            self.registrations.remove(key)
                continue
            routed = mine if mine is not None else original
            key = contactKey(routed.uri)
            if key is None:
                continue
            expires = granted.get(key, 0)
            if expires > 0:
                flow = flowFor(original.uri, source)
                self.registrations.update(key, Binding(aor, original.uriText, flow, now + expires,
                                                       _sourceIfOther(flow, source)))
            else:
                self.registrations.remove(key)
            if mine is not None:
                replaced[mine.uriText] = original.uriText
        stale = self.registrations.retain(
            aor, {key for key, expires in granted.items() if expires > 0})
        if replaced:
            restored = []
            for contact in response.contacts:
                text = contact.text
                if contact.uriText in replaced:
                    text = text.replace(contact.uriText, replaced[contact.uriText], 1)
                restored.append(text)
            response.setContacts(restored)
        return stale

    def learnDialogTargets(self, message: SIPRequest | SIPResponse, flow: Peer,
                           aor: str | None) -> None:
        """
        A phone's dialog contact may differ from its registered one; in-
        dialog requests from the upstream are routed to it too.
        """
        if aor is None:
            return
        for contact in message.contacts:
            if contact.isWildcard:
                continue
            key = contactKey(contact.uri)
            if key is not None:
                target = flowFor(contact.uri, flow)
                self.dialogTargets.update(key, Binding(
                    aor, contact.uriText, target,
                    self._clock.seconds() + DIALOG_TARGET_LIFETIME,
                    _sourceIfOther(target, flow),
                ))

    def callerAoR(self, request: SIPRequest, source: Peer,
                  aorOf: Callable[[URI], str | None]) -> str | None:
        """
        The user of ours a phone's C{request} from C{source} is of: its
        From, unless that is anonymous (RFC 3323); then the AoR registered
        from C{source}, where the phone sends from (the registrar accepted
        that REGISTER). A phone with several AoRs registered from one
        address may name the line in P-Preferred-Identity (RFC 3325 §9.2),
        believed only among those AoRs; otherwise the request is of no
        user. The phone's P-Asserted-Identity is never read.
        """
        fromURI = request.fromAddr.uri
        if not isAnonymous(fromURI):
            aor = aorOf(fromURI)
            if aor is not None:
                return aor
        registered = self.registrations.aorsFrom(source)
        if len(registered) == 1:
            return next(iter(registered))
        if not registered:
            return None
        try:
            for value in request.getHeaderValues("P-Preferred-Identity"):
                preferred = aorOf(parseNameAddr(value).uri)
                if preferred in registered:
                    return preferred
        except ValueError:  # SIPParseError: a malformed header names no one
            pass
        return None
