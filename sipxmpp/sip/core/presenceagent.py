"""
The presence agent: SIP watchers subscribe to a provisioned user's
presence at the gateway (RFC 3856, RFC 6665 notifier), sans-IO.

L{PresenceAgent} is an L{ILocalHandler} for SUBSCRIBE C{Event: presence}
to a provisioned AoR. What it shows comes from an L{IPresenceSource} (the
user's XMPP presence), written as PIDF with RPID by
L{sipxmpp.sip.core.presence.presenceDocument}. NOTIFYs go out as bytes
without a Via through an injected C{send(data, target, user)} (in
production L{sipxmpp.sip.core.proxy.Proxy.sendRequest}) to the flow the
SUBSCRIBE came from; timers run on an injected clock.

Which SUBSCRIBEs are taken: an in-dialog one whose To tag is ours
(L{TAG_PREFIX}: one of a dialog that no longer lives gets 481); an initial
one for C{Event: presence} whose Request-URI is a provisioned AoR; and,
when the proxy forwards nothing, every SUBSCRIBE (other events get 489,
other users 404). With an upstream, SUBSCRIBEs of other events or users
(message-summary, dialog, ...) are forwarded as before.

An initial SUBSCRIBE, in this order: a source outside C{watchers}: 403;
no From tag, no Contact or an unreadable header: 400; not C{presence}:
489 with Allow-Events; not a provisioned AoR: 404; an Accept without
PIDF: 406; Expires below C{minExpires} (and not 0): 423 with Min-Expires,
above C{maxExpires} lowered, absent C{defaultExpires}; then
C{authorise(watcherAoR, userAoR)}: C{"rejected"} 403, C{"pending"} 202 and
a NOTIFY C{pending} without a body, C{"active"} 200 and a NOTIFY
C{active} with the document. Expires 0 is a fetch: one NOTIFY, terminated.

The dialog (RFC 6665 §4.2, RFC 3261 §12.1.1): our To tag, the watcher's
From tag, its Contact as the remote target, the Record-Route set (also
copied into the 2xx), our own CSeq for the NOTIFYs, the watcher's checked
to rise. A refresh gets 200 and a NOTIFY; Expires 0 ends it with a final
NOTIFY C{terminated;reason=timeout}; so does the lifetime running out.
While a NOTIFY is unanswered the next waits and only the latest state
goes (one in flight per dialog). A NOTIFY answered 481 or with any other
failure, or timing out, ends the dialog (RFC 6665 §4.2.2).

Changes: the source's listener sends each of the user's active watchers a
NOTIFY when the document changed; L{reauthorise} asks C{authorise} again
(a roster or allow-list change: pending to active, or rejected ends it
with C{reason=rejected}); L{aorsChanged} ends the subscriptions of users
no longer provisioned (C{reason=noresource}); L{stop} ends all
(C{reason=deactivated}: the watcher may subscribe again at once).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sipxmpp.sip.core.local import ILocalHandler, checkLifetimes, grantedExpires
from sipxmpp.sip.core.metrics import IMetrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.presence import IPresenceSource, presenceDocument
from sipxmpp.sip.core.proxy import Network, isInNetworks
from sipxmpp.sip.core.transaction import IClientTransactionUser, NullUser
from sipxmpp.sip.wire import pidf
from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.headers import parseEvent
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.responses import makeResponse
from sipxmpp.sip.wire.uri import URI

__all__ = ["TAG_PREFIX", "Authorisation", "Authorise", "PresenceAgent"]

#: The start of every To tag of our presence dialogs: stable across
#: restarts, so that a refresh of a dialog from before one gets 481.
TAG_PREFIX = "sxpa-"

Authorisation = Literal["active", "pending", "rejected"]
Authorise = Callable[[str, str], Authorisation]
Send = Callable[[bytes, Peer, IClientTransactionUser], object]

_EVENT = "presence"
_METRIC = "sipxmpp_sip_presence_subscribe_total"
# Accept values under which a PIDF body may be sent.
_ACCEPTABLE = frozenset((pidf.CONTENT_TYPE, "application/*", "*/*"))



class _Refused(Exception):
    def __init__(self, code: int, reason: str, *headers: tuple[str, str]) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.headers = headers


@dataclass(eq=False)
class _Dialog:
    """
    One watcher's subscription to one user.
    """

    aor: str
    watcher: str
    callID: str
    localTag: str
    localURI: str
    remote: str
    remoteTarget: str
    routes: tuple[str, ...]
    peer: Peer
    eventID: str | None
    state: Authorisation
    remoteCSeq: int
    expiresAt: float = 0.0
    cseq: int = 0
    timer: IDelayedCall | None = None
    inFlight: bool = False
    again: bool = False
    lastBody: bytes | None = None
    ended: bool = False


@implementer(IClientTransactionUser)
class _Notify(NullUser):
    """
    The user of one NOTIFY we sent.
    """

    __slots__ = ("_agent", "dialog", "final")

    def __init__(self, agent: PresenceAgent, dialog: _Dialog, final: bool) -> None:
        self._agent = agent
        self.dialog = dialog
        self.final = final

    def transactionResponse(self, transaction: object, response: SIPResponse) -> None:
        if response.code >= 200:
            self._agent._notifyAnswered(self, response.code)

    def transactionTimedOut(self, transaction: object, code: int) -> None:
        self._agent._notifyAnswered(self, code)


@implementer(ILocalHandler)
class PresenceAgent:
    """
    Answers SUBSCRIBE C{Event: presence} for provisioned users and keeps
    their watchers notified.

    @param clock: runs the expiry timers.
    @param source: the users' presence.
    @param send: sends a request (bytes without Via) to a peer in a client
        transaction whose user it is given.
    @param aorOf: normalises a URI into an AoR, or returns L{None}.
    @param isProvisioned: whether an AoR is provisioned; answers at once.
    @param authorise: C{authorise(watcherAoR, userAoR)}: C{"active"},
        C{"pending"} or C{"rejected"}; answers at once. The watcher's AoR
        is that of the From URI (or its text when it names no user).
    @param contact: our Contact URI (in the 2xx and every NOTIFY).
    @param watchers: the networks SUBSCRIBEs may come from; L{None}: any.
    @param minExpires: shorter non-zero lifetimes are answered 423.
    @param maxExpires: longer ones are lowered to this.
    @param defaultExpires: the lifetime of a SUBSCRIBE without Expires.
    @raise ValueError: for bounds that are not 0 < min <= default <= max.
    """

    log = Logger()
    methods = frozenset({"SUBSCRIBE"})

    def __init__(
        self,
        clock: IReactorTime,
        source: IPresenceSource,
        send: Send,
        aorOf: Callable[[URI], str | None],
        isProvisioned: Callable[[str], bool],
        authorise: Authorise,
        contact: str,
        watchers: Iterable[Network] | None = None,
        minExpires: int = 60,
        maxExpires: int = 3600,
        defaultExpires: int = 3600,
        metrics: IMetrics | None = None,
    ) -> None:
        checkLifetimes("SUBSCRIBE", minExpires, defaultExpires, maxExpires)
        self._clock = clock
        self._source = source
        self._send = send
        self._aorOf = aorOf
        self._isProvisioned = isProvisioned
        self._authorise = authorise
        self.contact = contact
        self.watchers = None if watchers is None else tuple(watchers)
        self.minExpires = minExpires
        self.maxExpires = maxExpires
        self.defaultExpires = defaultExpires
        self._metrics = metrics
        self._dialogs: dict[tuple[str, str], _Dialog] = {}
        self._byAoR: dict[str, dict[tuple[str, str], _Dialog]] = {}
        source.addListener(self.presenceChanged)
        if metrics is not None:
            metrics.describe(_METRIC, "SUBSCRIBE (Event: presence) answered, by status code")
            metrics.gauge("sipxmpp_sip_presence_watchers", lambda: len(self._dialogs),
                          "SIP watchers subscribed to users' presence")  # fmt: skip

    def __len__(self) -> int:
        """
        The number of live subscriptions.
        """
        return len(self._dialogs)

    def watchersOf(self, aor: str) -> list[_Dialog]:
        """
        The live subscriptions to C{aor} (for tests and status).
        """
        return list(self._byAoR.get(aor, {}).values())

    # --- ILocalHandler ---

    def accepts(self, request: SIPRequest, source: Peer, forwarding: bool) -> bool:
        """
        In-dialog SUBSCRIBEs of ours; initial C{presence} ones for a
        provisioned user; every SUBSCRIBE when the proxy forwards nothing.
        """
        if not forwarding:
            return True
        toTag = request.toTag
        if toTag is not None:
            return toTag.startswith(TAG_PREFIX)
        if parseEvent(request.getHeader("event"))[0] != _EVENT:
            return False
        aor = self._aorOf(request.uri)
        return aor is not None and self._isProvisioned(aor)

    def answer(self, request: SIPRequest, source: Peer) -> SIPResponse:
        after: Callable[[], None] | None = None
        try:
            response, after = self._subscribe(request, source)
        except _Refused as refusal:
            response = makeResponse(request, refusal.code, refusal.reason, headers=refusal.headers)
        except SIPParseError as error:
            response = makeResponse(request, 400, error.reason)
        if response.code >= 300:
            self.log.info("SUBSCRIBE {uri} from {source} refused: {code} {reason}",
                          uri=request.uriText, source=source, code=response.code,
                          reason=response.reason)  # fmt: skip
        if self._metrics is not None:
            self._metrics.increment(_METRIC, code=str(response.code))
        if after is not None:
            # The NOTIFY follows the 2xx (the proxy sends the answer as
            # soon as this returns; the clock runs it after that).
            self._clock.callLater(0, after)
        return response

    # --- SUBSCRIBE ---

    def _subscribe(self, request: SIPRequest,
                   source: Peer) -> tuple[SIPResponse, Callable[[], None] | None]:  # fmt: skip
        if self.watchers is not None and not self._fromWatchers(source):
            raise _Refused(403, "Forbidden")
        if request.fromTag is None:
            raise _Refused(400, "SUBSCRIBE without a From tag")
        package, eventID = parseEvent(request.getHeader("event"))
        toTag = request.toTag
        if toTag is not None:
            return self._inDialog(request, source, toTag, package)
        if package != _EVENT:
            raise _Refused(489, "Bad Event", ("Allow-Events", _EVENT))
        aor = self._aorOf(request.uri)
        if aor is None or not self._isProvisioned(aor):
            raise _Refused(404, "Not Found")
        contacts = request.contacts
        if len(contacts) != 1 or contacts[0].isWildcard:
            raise _Refused(400, "SUBSCRIBE needs one Contact")
        self._checkAccept(request)
        expires = self._expires(request)
        watcher = self._aorOf(request.fromAddr.uri) or request.fromAddr.uriText
        state = self._authorise(watcher, aor)
        if state == "rejected":
            raise _Refused(403, "Forbidden")
        dialog = _Dialog(
            aor=aor, watcher=watcher, callID=request.callID,
            localTag=f"{TAG_PREFIX}{secrets.token_hex(6)}",
            localURI=request.toAddr.text, remote=request.fromAddr.text,
            remoteTarget=contacts[0].uriText,
            routes=tuple(r.text for r in request.recordRoutes),
            peer=source, eventID=eventID, state=state, remoteCSeq=request.cseq.number,
            cseq=secrets.randbelow(1 << 16),
        )  # fmt: skip
        response = self._accepted(request, dialog, expires)
        if expires == 0:
            # A fetch (RFC 6665 §4.4.3): the state once, and no dialog.
            return response, lambda: self._sendNotify(dialog, "timeout")
        self._dialogs[(dialog.callID, dialog.localTag)] = dialog
        self._byAoR.setdefault(aor, {})[(dialog.callID, dialog.localTag)] = dialog
        self._setExpiry(dialog, expires)
        self.log.info("{watcher} subscribed to {aor}: {state}, {expires} s",
                      watcher=watcher, aor=aor, state=state, expires=expires)  # fmt: skip
        return response, lambda: self._sendNotify(dialog)

    def _inDialog(self, request: SIPRequest, source: Peer, toTag: str,
                  package: str | None) -> tuple[SIPResponse, Callable[[], None] | None]:  # fmt: skip
        dialog = self._dialogs.get((request.callID, toTag))
        if dialog is None or dialog.ended:
            raise _Refused(481, "Subscription Does Not Exist")
        if package != _EVENT:
            raise _Refused(489, "Bad Event", ("Allow-Events", _EVENT))
        number = request.cseq.number
        if number <= dialog.remoteCSeq:
            raise _Refused(500, "CSeq Out of Order")
        expires = self._expires(request)
        dialog.remoteCSeq = number
        dialog.peer = source
        contacts = request.contacts
        if contacts and not contacts[0].isWildcard:
            dialog.remoteTarget = contacts[0].uriText
        response = self._accepted(request, dialog, expires)
        if expires == 0:
            self.log.info("{watcher} unsubscribed from {aor}", watcher=dialog.watcher,
                          aor=dialog.aor)  # fmt: skip
            self._end(dialog)
            return response, lambda: self._sendNotify(dialog, "timeout")
        self._setExpiry(dialog, expires)
        return response, lambda: self._sendNotify(dialog, force=True)

    def _fromWatchers(self, source: Peer) -> bool:
        assert self.watchers is not None
        try:
            return isInNetworks(source.host.strip("[]"), self.watchers)
        except ValueError:
            return False

    def _checkAccept(self, request: SIPRequest) -> None:
        accept = request.getHeaderValues("accept")
        if not accept:
            return
        types = {value.split(";", 1)[0].strip().lower() for value in accept}
        if types.isdisjoint(_ACCEPTABLE):
            raise _Refused(406, "Not Acceptable", ("Accept", pidf.CONTENT_TYPE))

    def _expires(self, request: SIPRequest) -> int:
        expires = grantedExpires(request.expires, self.minExpires, self.defaultExpires,
                                 self.maxExpires)  # fmt: skip
        if expires is None:
            raise _Refused(423, "Interval Too Brief", ("Min-Expires", str(self.minExpires)))
        return expires

    def _accepted(self, request: SIPRequest, dialog: _Dialog, expires: int) -> SIPResponse:
        headers = [("Record-Route", route) for route in dialog.routes]
        headers += [("Contact", f"<{self.contact}>"), ("Expires", str(expires))]
        code, reason = (200, "OK") if dialog.state == "active" else (202, "Accepted")
        return makeResponse(request, code, reason, toTag=dialog.localTag, headers=headers)

    # --- the dialogs ---

    def _setExpiry(self, dialog: _Dialog, expires: int) -> None:
        dialog.expiresAt = self._clock.seconds() + expires
        if dialog.timer is not None and dialog.timer.active():
            dialog.timer.cancel()
        dialog.timer = self._clock.callLater(expires, self._expired, dialog)

    def _expired(self, dialog: _Dialog) -> None:
        dialog.timer = None
        if dialog.ended:
            return
        self.log.info("subscription of {watcher} to {aor} expired", watcher=dialog.watcher,
                      aor=dialog.aor)  # fmt: skip
        self._terminate(dialog, "timeout")

    def _terminate(self, dialog: _Dialog, reason: str) -> None:
        self._end(dialog)
        self._sendNotify(dialog, reason)

    def _end(self, dialog: _Dialog) -> None:
        dialog.ended = True
        if dialog.timer is not None and dialog.timer.active():
            dialog.timer.cancel()
        dialog.timer = None
        key = (dialog.callID, dialog.localTag)
        self._dialogs.pop(key, None)
        users = self._byAoR.get(dialog.aor)
        if users is not None:
            users.pop(key, None)
            if not users:
                del self._byAoR[dialog.aor]

    # --- NOTIFY ---

    def presenceChanged(self, aor: str) -> None:
        """
        The presence of C{aor} may have changed: notify its active
        watchers whose document differs.
        """
        for dialog in self.watchersOf(aor):
            if dialog.state == "active":
                self._sendNotify(dialog)

    def reauthorise(self, aor: str | None = None) -> None:
        """
        Ask C{authorise} again for the watchers of C{aor} (of everyone by
        default): pending may become active, either may be rejected.
        """
        dialogs = list(self._dialogs.values()) if aor is None else self.watchersOf(aor)
        for dialog in dialogs:
            state = self._authorise(dialog.watcher, dialog.aor)
            if state == dialog.state:
                continue
            self.log.info("{watcher} for {aor}: {old} -> {new}", watcher=dialog.watcher,
                          aor=dialog.aor, old=dialog.state, new=state)  # fmt: skip
            dialog.state = state
            if state == "rejected":
                self._terminate(dialog, "rejected")
            else:
                self._sendNotify(dialog, force=True)

    def aorsChanged(self, added: Iterable[str], removed: Iterable[str]) -> None:
        """
        Users no longer provisioned: end their subscriptions
        (C{reason=noresource}).
        """
        for aor in removed:
            for dialog in self.watchersOf(aor):
                self._terminate(dialog, "noresource")

    def stop(self) -> None:
        """
        End every subscription (C{reason=deactivated}), at shutdown.
        """
        for dialog in list(self._dialogs.values()):
            self._terminate(dialog, "deactivated")

    def _sendNotify(self, dialog: _Dialog, terminated: str | None = None,
                    force: bool = False) -> None:  # fmt: skip
        """
        Send C{dialog} its state: active with the document (unless it did
        not change, and not C{force}), pending without a body, or with
        C{terminated} the final NOTIFY (with the document when active).
        """
        body = b""
        if dialog.state == "active":
            body = presenceDocument(dialog.aor, self._source.presenceOf(dialog.aor))
        if terminated is None:
            if dialog.ended:
                return
            if dialog.inFlight:
                dialog.again = True
                return
            if dialog.state == "active" and body == dialog.lastBody and not force:
                return
            remaining = max(0, round(dialog.expiresAt - self._clock.seconds()))
            state = f"{dialog.state};expires={remaining}"
        else:
            state = f"terminated;reason={terminated}"
        if dialog.state == "active":
            dialog.lastBody = body
        dialog.cseq += 1
        dialog.inFlight = terminated is None
        dialog.again = False
        data = self._request(dialog, state, body)
        try:
            self._send(data, dialog.peer, _Notify(self, dialog, terminated is not None))
        except Exception:
            self.log.failure("cannot send NOTIFY to {watcher}", watcher=dialog.watcher)
            dialog.inFlight = False
            if not dialog.ended:
                self._end(dialog)

    def _request(self, dialog: _Dialog, state: str, body: bytes) -> bytes:
        event = _EVENT + (f";id={dialog.eventID}" if dialog.eventID else "")
        lines = [f"NOTIFY {dialog.remoteTarget} SIP/2.0", "Max-Forwards: 70"]
        lines += [f"Route: {route}" for route in dialog.routes]
        lines += [
            f"From: {dialog.localURI};tag={dialog.localTag}",
            f"To: {dialog.remote}",
            f"Call-ID: {dialog.callID}",
            f"CSeq: {dialog.cseq} NOTIFY",
            f"Contact: <{self.contact}>",
            f"Event: {event}",
            f"Subscription-State: {state}",
        ]
        if body:
            lines.append(f"Content-Type: {pidf.CONTENT_TYPE}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body

    def _notifyAnswered(self, notify: _Notify, code: int) -> None:
        dialog = notify.dialog
        if notify.final:
            return
        dialog.inFlight = False
        if dialog.ended:
            return
        if code >= 300:
            self.log.info("NOTIFY to {watcher} for {aor} failed: {code}; subscription ended",
                          watcher=dialog.watcher, aor=dialog.aor, code=code)  # fmt: skip
            self._end(dialog)
            return
        if dialog.again:
            self._sendNotify(dialog, force=True)

