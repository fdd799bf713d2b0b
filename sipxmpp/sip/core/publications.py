"""
The event state compositor for SIP PUBLISH (RFC 3903), sans-IO.

L{EventStateCompositor.publishReceived} takes a parsed PUBLISH and its
source and returns the L{PublishAnswer} to send; the publications it
accepts feed the L{TelephonyStateMachine}, and they expire on an injected
clock. Two event packages are accepted: C{dialog} with
C{application/dialog-info+xml} (RFC 4235) and C{presence} with
C{application/pidf+xml} (RFC 3863 with RFC 4480 RPID).

Processing follows RFC 3903 §6, after a policy check of our own:

  1. a source outside the allowed publisher networks: 403 (nothing else is
     told to it, not even whether the user exists);
  2. a Request-URI that is not a provisioned AoR: 404;
  3. no Event, or one we do not accept: 489 with Allow-Events;
  4. a SIP-If-Match naming no live publication of that AoR and event: 412
     (publications are saved with the rest of the runtime state and
     restored with their entity-tags, L{EventStateCompositor.restore}; one
     whose last change was not saved yet when the gateway died gets 412,
     and its publisher publishes afresh);
  5. Expires below the minimum (and not 0): 423 with Min-Expires; above
     the maximum: lowered to it; absent: the default;
  6. no SIP-If-Match and no body: 400; a body of another type than the
     event's: 415 with Accept; a body that does not parse: 400, and the
     publication keeps its earlier state;
  7. otherwise 200 with a new, unguessable SIP-ETag and the Expires
     granted: an initial publication (no SIP-If-Match), a refresh
     (SIP-If-Match, no body), a modification (SIP-If-Match and a body) or
     a removal (SIP-If-Match and Expires 0; answered with Expires 0).

What a publication says, for the state machine (L{dialogReports},
L{isOnThePhone}): a dialog trying, proceeding or early is ringing (an
outgoing one, direction C{initiator}, shows as on the phone), confirmed is
on the phone, confirmed with the local target's C{+sip.rendering} "no" is
on hold, terminated ends the dialog; a PIDF whose RPID activities include
C{on-the-phone} or C{busy} is on the phone, any other says nothing about
calls. Dialogs are named by Call-ID and id, never by tags: Kamailio's
pua_dialoginfo sends the tags only while the dialog is early. Its other
habits need nothing special: one dialog per PUBLISH and full state each
time (a later publication's full state ends the dialogs it no longer
lists), version always 0 (versions are not compared: RFC 3903 orders
publications by entity-tag), "confirmed" for any request inside an early
dialog such as PRACK (shown as on the phone; the "terminated" that ends an
unanswered call still ends it), "terminated" with Expires 10 or 11 (the
default minimum accepts it: a minimum above 10 would answer 423 to the
PUBLISH that ends the call), and Expires 43201 while the call is up
(lowered to the maximum, so a publisher that dies leaves at most that).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sipxmpp.sip.core.local import ILocalHandler, checkLifetimes, grantedExpires
from sipxmpp.sip.core.metrics import IMetrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.wire import dialoginfo, pidf
from sipxmpp.sip.wire.dialoginfo import DialogInfo, parseDialogInfo
from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.headers import parseEvent
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.pidf import Presence, parsePresence
from sipxmpp.sip.wire.responses import makeResponse
from sipxmpp.sip.wire.uri import URI
from sipxmpp.telephony.events import DialogPhase, DialogReport
from sipxmpp.telephony.state import TelephonyStateMachine

__all__ = [
    "CALL_ACTIVITIES",
    "CONTENT_TYPES",
    "EventStateCompositor",
    "PublishAnswer",
    "dialogReports",
    "isOnThePhone",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The content type each accepted event package publishes.
CONTENT_TYPES: dict[str, str] = {
    "dialog": dialoginfo.CONTENT_TYPE,
    "presence": pidf.CONTENT_TYPE,
}
#: RPID activities (RFC 4480 §3.2) that mean the user is on the phone.
CALL_ACTIVITIES = frozenset(("on-the-phone", "busy"))

_ALLOW_EVENTS = ", ".join(CONTENT_TYPES)
# Bytes of randomness in an entity-tag: unguessable, so that no one can
# refresh, change or remove a publication that is not theirs.
_ETAG_BYTES = 16
# Hosts whose allowed-or-not answer is remembered (see allows).
_ALLOWS_CACHED = 1024
_METRIC = "sipxmpp_sip_publish_total"


@dataclass(frozen=True, slots=True)
class PublishAnswer:
    """
    What to answer a PUBLISH with.

    @ivar code: the status code.
    @ivar reason: the reason phrase.
    @ivar headers: extra header fields (SIP-ETag, Expires, Min-Expires,
        Accept, Allow-Events), as C{(name, value)} pairs.
    """

    code: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """
        The value of extra header C{name} (case-insensitive), or L{None}.
        """
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def response(self, request: SIPRequest) -> SIPResponse:
        """
        Build the response to C{request} (the PUBLISH this answers).
        """
        return makeResponse(request, self.code, self.reason, headers=self.headers)


@dataclass(eq=False, slots=True)
class _Publication:
    """
    One live publication. C{key} names it to the state machine and stays
    the same while C{etag} changes with every refresh or modification.
    """

    aor: str
    event: str
    etag: str
    key: tuple[str, str]
    timer: IDelayedCall


def dialogReports(info: DialogInfo) -> tuple[DialogReport, ...]:
    """
    What a dialog-info document says about each of its dialogs, keyed by
    Call-ID and id.
    """
    return tuple(
        DialogReport((dialog.callID, dialog.id), _phase(dialog), dialog.outgoing)
        for dialog in info.dialogs
    )


def _phase(dialog: dialoginfo.Dialog) -> DialogPhase:
    if dialog.early:
        return DialogPhase.EARLY
    if dialog.state == "terminated":
        return DialogPhase.TERMINATED
    return DialogPhase.HELD if dialog.localRendering is False else DialogPhase.CONFIRMED


def isOnThePhone(presence: Presence) -> bool:
    """
    Does a PIDF document say its user is on the phone (RPID activity
    C{on-the-phone} or C{busy})?
    """
    return not CALL_ACTIVITIES.isdisjoint(presence.activities)


def _network(value: str | Network) -> Network:
    if isinstance(value, str):
        return ipaddress.ip_network(value.strip(), strict=False)
    return value



@implementer(ILocalHandler)
class EventStateCompositor:
    """
    Accepts PUBLISH for provisioned users from allowed publishers, keeps
    the publications by (AoR, event, entity-tag) until they expire, and
    feeds what they say to the telephony state.

    @param clock: runs the expiry timers.
    @param state: the state machine the publications feed.
    @param aorOf: normalises the Request-URI into an AoR, or returns
        L{None} (the function the proxy uses).
    @param isProvisioned: tells whether an AoR is provisioned; called on
        every PUBLISH, so it must answer at once (a cache, never I/O).
    @param publishers: the networks allowed to publish, as
        C{ipaddress} networks or strings (C{"192.0.2.0/24"}); empty
        refuses every PUBLISH.
    @param minExpires: shorter non-zero lifetimes are answered 423.
    @param maxExpires: longer lifetimes are lowered to this.
    @param defaultExpires: the lifetime of a PUBLISH without Expires.
    @param metrics: counts answers as C{sipxmpp_sip_publish_total} by code
        and event, and shows the live publications as
        C{sipxmpp_sip_publications}.
    @raise ValueError: for bounds that are not 0 < min <= default <= max,
        or a network that does not parse.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        state: TelephonyStateMachine,
        aorOf: Callable[[URI], str | None],
        isProvisioned: Callable[[str], bool],
        publishers: Iterable[str | Network],
        minExpires: int = 10,
        maxExpires: int = 3600,
        defaultExpires: int = 3600,
        metrics: IMetrics | None = None,
    ) -> None:
        checkLifetimes("PUBLISH", minExpires, defaultExpires, maxExpires)
        self._clock = clock
        self._state = state
        self._aorOf = aorOf
        self._isProvisioned = isProvisioned
        self.publishers: tuple[Network, ...] = tuple(_network(p) for p in publishers)
        self._allowsFor: tuple[Network, ...] = self.publishers
        self._allows: dict[str, bool] = {}
        self.minExpires = minExpires
        self.maxExpires = maxExpires
        self.defaultExpires = defaultExpires
        self._metrics = metrics
        self._publications: dict[tuple[str, str, str], _Publication] = {}
        if metrics is not None:
            metrics.describe(_METRIC, "PUBLISH requests answered, by status code and event")
            metrics.gauge("sipxmpp_sip_publications", lambda: len(self._publications),
                          "publications (PUBLISH) alive")  # fmt: skip

    def __len__(self) -> int:
        """
        The number of live publications.
        """
        return len(self._publications)

    # -- ILocalHandler ------------------------------------------------------

    methods = frozenset({"PUBLISH"})

    def accepts(self, request: SIPRequest, source: Peer, forwarding: bool) -> bool:
        """
        A PUBLISH from an allowed publisher is telephony state for us; so is
        every PUBLISH when the proxy forwards nothing (those from elsewhere
        get 403). A phone's PUBLISH of its own presence goes on to the
        upstream.
        """
        return not forwarding or self.allows(source.host)

    def answer(self, request: SIPRequest, source: Peer) -> SIPResponse:
        return self.publishReceived(request, source).response(request)

    def publishReceived(self, request: SIPRequest, source: Peer) -> PublishAnswer:
        """
        Process one PUBLISH from C{source} and tell what to answer. Never
        raises for anything in the request.

        @raise ValueError: if C{request} is not a PUBLISH (a caller's bug).
        """
        if request.method != "PUBLISH":
            raise ValueError(f"not a PUBLISH: {request.method}")
        event = "other"
        try:
            event, answer = self._process(request, source)
        except SIPParseError as error:
            # A header needed here (Request-URI, Expires, Content-Type)
            # turned out malformed when read.
            answer = PublishAnswer(400, error.reason)
        if answer.code >= 300:
            self.log.info(
                "PUBLISH {uri} from {source} refused: {code} {reason}",
                uri=request.uriText, source=source, code=answer.code, reason=answer.reason,
            )
        if self._metrics is not None:
            self._metrics.increment(_METRIC, code=str(answer.code), event=event)
        return answer

    def _process(self, request: SIPRequest, source: Peer) -> tuple[str, PublishAnswer]:
        if not self.allows(source.host):
            return "other", PublishAnswer(403, "Forbidden")
        aor = self._aorOf(request.uri)
        try:
            known = aor is not None and self._isProvisioned(aor)
        except Exception:
            self.log.failure("provisioning lookup failed for {aor}", aor=aor)
            return "other", PublishAnswer(500, "Server Internal Error")
        if aor is None or not known:
            return "other", PublishAnswer(404, "Not Found")
        event = parseEvent(request.getHeader("event"))[0]
        if event is None or event not in CONTENT_TYPES:
            return "other", PublishAnswer(489, "Bad Event", (("Allow-Events", _ALLOW_EVENTS),))
        return event, self._publish(request, aor, event)

    def _publish(self, request: SIPRequest, aor: str, event: str) -> PublishAnswer:
        publication: _Publication | None = None
        ifMatch = request.getHeader("sip-if-match")
        if ifMatch is not None:
            publication = self._publications.get((aor, event, ifMatch.strip()))
            if publication is None:
                return PublishAnswer(412, "Conditional Request Failed")
        expires = grantedExpires(request.expires, self.minExpires, self.defaultExpires,
                                 self.maxExpires)  # fmt: skip
        if expires is None:
            return PublishAnswer(423, "Interval Too Brief",
                                 (("Min-Expires", str(self.minExpires)),))  # fmt: skip
        body = request.body
        if publication is None and not body:
            return PublishAnswer(400, "Initial PUBLISH without a body")
        content: DialogInfo | Presence | None = None
        if body and (expires > 0 or publication is None):
            contentType = CONTENT_TYPES[event]
            if request.contentType != contentType:
                return PublishAnswer(415, "Unsupported Media Type", (("Accept", contentType),))
            try:
                content = parseDialogInfo(body) if event == "dialog" else parsePresence(body)
            except SIPParseError as error:
                return PublishAnswer(400, error.reason)
        if expires == 0:
            if publication is not None:
                self._remove(publication)
            return PublishAnswer(200, "OK", (("Expires", "0"),))
        if publication is None:
            publication = self._create(aor, event, expires)
        else:
            self._renew(publication, expires)
        etag = publication.etag
        if content is None:
            self._state.publicationRefreshed(aor, publication.key, expires, tag=etag)
        elif isinstance(content, DialogInfo):
            self._state.publicationSet(aor, publication.key, expires, dialogReports(content),
                                       partial=not content.full, tag=etag)  # fmt: skip
        else:
            self._state.publicationSet(aor, publication.key, expires,
                                       busy=isOnThePhone(content), tag=etag)  # fmt: skip
        return PublishAnswer(200, "OK", (("SIP-ETag", publication.etag),
                                         ("Expires", str(expires))))  # fmt: skip

    # --- the publications ---

    def _create(self, aor: str, event: str, expires: float,
                etag: str | None = None, key: tuple[str, str] | None = None) -> _Publication:
        etag = etag or self._newETag()
        # Named by its first entity-tag: unique across restarts too.
        key = key or (event, etag)
        publication = _Publication(aor, event, etag, key, self._clock.callLater(
            expires, self._expired, (aor, event, etag)
        ))  # fmt: skip
        self._publications[(aor, event, etag)] = publication
        return publication

    def restore(self, aor: str, key: Hashable, etag: str, expiresAt: float) -> bool:
        """
        Bring back a publication saved before a restart, which the state
        machine has restored under C{key}: a refresh, modification or
        removal naming C{etag} finds it again. Return whether it was
        restored (not if it has expired, or C{key} is not one of ours).
        """
        remaining = expiresAt - self._clock.seconds()
        if (not isinstance(key, tuple) or len(key) != 2 or key[0] not in CONTENT_TYPES
                or not isinstance(key[1], str) or remaining <= 0
                or (aor, key[0], etag) in self._publications):
            return False
        self._create(aor, key[0], remaining, etag, (key[0], key[1]))
        return True

    def _renew(self, publication: _Publication, expires: int) -> None:
        # RFC 3903 §6 step 7: every successful PUBLISH gets a new entity-tag.
        del self._publications[(publication.aor, publication.event, publication.etag)]
        publication.etag = self._newETag()
        publication.timer.cancel()
        index = (publication.aor, publication.event, publication.etag)
        publication.timer = self._clock.callLater(expires, self._expired, index)
        self._publications[index] = publication

    def _remove(self, publication: _Publication) -> None:
        del self._publications[(publication.aor, publication.event, publication.etag)]
        publication.timer.cancel()
        self._state.publicationRemoved(publication.aor, publication.key)

    def _expired(self, index: tuple[str, str, str]) -> None:
        publication = self._publications.pop(index)
        self.log.debug("publication {key} of {aor} expired", key=publication.key,
                       aor=publication.aor)  # fmt: skip
        self._state.publicationRemoved(publication.aor, publication.key)

    def _newETag(self) -> str:
        # 128 random bits: unique without a check, and URL-safe base64 is
        # made of token characters (RFC 3261 §25.1).
        return secrets.token_urlsafe(_ETAG_BYTES)

    def allows(self, host: str) -> bool:
        """
        Is C{host} (an IP address literal) among the allowed publishers?

        The answer is remembered per host (a publisher sends many PUBLISHes;
        parsing its address each time is a measurable part of one) for as
        long as C{publishers} is the same tuple.
        """
        if self._allowsFor is not self.publishers or len(self._allows) >= _ALLOWS_CACHED:
            self._allowsFor = self.publishers
            self._allows = {}
        allowed = self._allows.get(host)
        if allowed is None:
            allowed = self._allows[host] = self._checkAllows(host)
        return allowed

    def _checkAllows(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # An IPv4 publisher seen on a dual-stack socket.
            address = address.ipv4_mapped
        return any(address in network for network in self.publishers)
