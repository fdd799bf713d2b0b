"""
SUBSCRIBE mode: the gateway subscribes to each user's dialog state at a
SIP server (RFC 6665, C{Event: dialog}, RFC 4235), sans-IO.

For SIP cores that serve dialog state but will not PUBLISH it (Kamailio
presence with presence_dialoginfo, a PBX's hints). L{DialogSubscriptions}
keeps one subscription per AoR it is told of (L{aorsChanged}) and feeds
what the NOTIFYs say to the L{TelephonyStateMachine} like a publication:
one publication key per subscription (dialog), whose lifetime is the
subscription's expiry.

Requests go out as bytes without a Via through an injected C{send(data,
target, user)} (in production L{sipxmpp.sip.core.proxy.Proxy.sendRequest},
which adds the Via and runs the client transaction); the NOTIFYs come in
through the proxy as an L{ILocalHandler}. Timers run on an injected clock.

One subscription's life:

  1. initial SUBSCRIBE (new Call-ID and From tag, Expires as configured),
     paced: at most C{maxInFlight} initial SUBSCRIBEs unanswered and
     C{perSecond} sent per second;
  2. a 2xx (200 or 202) establishes the dialog: the remote tag, the route
     set (its Record-Route, reversed) and the remote target (its Contact);
     a NOTIFY may establish it first (RFC 6665 §4.1.2.4);
  3. refreshed (in-dialog SUBSCRIBE, CSeq + 1) at C{refreshFraction} of
     the Expires granted;
  4. 423 is retried at once with the Min-Expires asked; 481, 408, a
     transaction timeout, any other failure, and a NOTIFY with
     Subscription-State terminated end the dialog, and a new subscription
     follows after a jittered exponential backoff (C{backoffBase} doubling
     up to C{backoffCap}, at least any Retry-After or C{retry-after}, up
     to an hour);
  5. L{stop}, or the AoR removed: unSUBSCRIBE (Expires 0).

A NOTIFY (RFC 4235 §4.1): versions count per subscription; one not newer
than the last is ignored; a partial one that does not follow the last
(none before it, or a gap) is not applied and a refresh asks for full
state. A full state is L{TelephonyStateMachine.publicationSet}; partial
with C{partial=True}; a NOTIFY without a body extends the lifetime only
(L{TelephonyStateMachine.publicationRefreshed}); terminated removes the
publication (L{TelephonyStateMachine.publicationRemoved}). When a
subscription fails otherwise, its publication is left to expire with the
subscription, or is replaced when the next subscription's first full state
comes. A malformed body is answered 400 and the state is kept.

Which NOTIFYs are ours: those of a live subscription dialog (Call-ID and
our From tag as their To tag). One whose To tag has our prefix but no live
dialog (an ended subscription, or one from before a restart) is answered
481, so that the notifier drops it; any other is not accepted, and the
proxy forwards it as before.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import count

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sipxmpp.sip.core.local import ILocalHandler
from sipxmpp.sip.core.metrics import IMetrics
from sipxmpp.sip.core.pacing import Pacer, backoffDelay
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.publications import dialogReports
from sipxmpp.sip.core.transaction import IClientTransactionUser, NullUser
from sipxmpp.sip.wire import dialoginfo
from sipxmpp.sip.wire.dialoginfo import DialogInfo, parseDialogInfo
from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.headers import parseEvent
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.responses import makeResponse
from sipxmpp.telephony.state import TelephonyStateMachine

__all__ = ["TAG_PREFIX", "DialogSubscriptions", "SubscriptionState", "parseSubscriptionState"]

#: The start of every From tag of our subscriptions: stable across
#: restarts, so that a NOTIFY of a subscription from before one gets 481.
TAG_PREFIX = "sxsub-"

Send = Callable[[bytes, Peer, IClientTransactionUser], object]

_EVENT = "dialog"
_METRIC = "sipxmpp_sip_notify_total"


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """
    A Subscription-State value (RFC 6665 §8.2.3).

    @ivar state: C{"active"}, C{"pending"}, C{"terminated"} (lower-cased).
    @ivar expires: the C{expires} parameter, if any.
    @ivar reason: the C{reason} parameter, if any (lower-cased).
    @ivar retryAfter: the C{retry-after} parameter, if any.
    """

    state: str
    expires: int | None = None
    reason: str | None = None
    retryAfter: int | None = None


def parseSubscriptionState(value: str) -> SubscriptionState:
    """
    Read a Subscription-State value.

    @raise SIPParseError: if it is empty or a number parameter is not one.
    """
    parts = [part.strip() for part in value.split(";")]
    state = parts[0].lower()
    if not state:
        raise SIPParseError("empty Subscription-State")
    params: dict[str, str] = {}
    for part in parts[1:]:
        name, _, text = part.partition("=")
        params[name.strip().lower()] = text.strip().strip('"')

    def number(name: str) -> int | None:
        text = params.get(name)
        if text is None:
            return None
        if not (text.isascii() and text.isdigit()) or len(text) > 10:
            raise SIPParseError(f"bad Subscription-State {name}")
        return int(text)

    reason = params.get("reason")
    return SubscriptionState(state, number("expires"), reason.lower() if reason else None,
                             number("retry-after"))  # fmt: skip



@dataclass(eq=False)
class _Dialog:
    """
    One subscription (a SUBSCRIBE dialog) of one AoR.
    """

    aor: str
    callID: str
    localTag: str
    key: tuple[str, int]
    expires: int
    cseq: int = 0
    remoteTag: str | None = None
    remoteTarget: str | None = None
    routes: tuple[str, ...] | None = None
    established: bool = False
    expiresAt: float | None = None
    version: int | None = None
    remoteCSeq: int | None = None
    published: bool = False
    inFlight: bool = False
    stopping: bool = False
    ended: bool = False
    refresh: IDelayedCall | None = None
    cleanup: IDelayedCall | None = None


@dataclass(eq=False)
class _Subscriber:
    """
    The subscriptions of one AoR: the live one, the publications of failed
    ones that still hold state, and the retry timer.
    """

    aor: str
    dialog: _Dialog | None = None
    stale: list[tuple[str, int]] = field(default_factory=list)
    failures: int = 0
    retry: IDelayedCall | None = None
    queued: bool = False


@implementer(IClientTransactionUser)
class _Transaction(NullUser):
    """
    The user of one SUBSCRIBE we sent: tells the subscriptions its final
    response or its timeout.
    """

    __slots__ = ("_owner", "dialog", "expires", "initial")

    def __init__(self, owner: DialogSubscriptions, dialog: _Dialog, expires: int,
                 initial: bool) -> None:  # fmt: skip
        self._owner = owner
        self.dialog = dialog
        self.expires = expires
        self.initial = initial

    def transactionResponse(self, transaction: object, response: SIPResponse) -> None:
        if response.code >= 200:
            self._owner._responseReceived(self, response)

    def transactionTimedOut(self, transaction: object, code: int) -> None:
        self._owner._failed(self, code, None)


@implementer(ILocalHandler)
class DialogSubscriptions:
    """
    Subscribes to C{Event: dialog} of every AoR it is told of at one
    server, and takes the NOTIFYs of those subscriptions.

    @param clock: runs the refresh, retry and pacing timers.
    @param state: the state machine the NOTIFYs feed.
    @param send: sends a request (bytes without Via) to a peer in a client
        transaction whose user it is given.
    @param server: where every SUBSCRIBE goes (the resolved server).
    @param serverURI: the server's SIP URI (its host names the AoR's
        domain nowhere; kept for logs).
    @param contact: our Contact URI, where the server sends NOTIFYs.
    @param fromURI: the subscriber's identity (the From URI).
    @param expires: the Expires asked for.
    @param refreshFraction: refresh at this fraction of the granted Expires.
    @param maxInFlight: initial SUBSCRIBEs unanswered at most.
    @param perSecond: initial SUBSCRIBEs sent per second at most.
    @param backoffBase: the first retry delay, seconds (before jitter).
    @param backoffCap: the longest retry delay, seconds.
    @param jitter: returns a number in [0, 1); the delay is scaled by
        C{0.5 + jitter() / 2}.
    """

    log = Logger()
    methods = frozenset({"NOTIFY"})

    def __init__(
        self,
        clock: IReactorTime,
        state: TelephonyStateMachine,
        send: Send,
        server: Peer,
        serverURI: str,
        contact: str,
        fromURI: str,
        expires: int = 3600,
        refreshFraction: float = 0.8,
        maxInFlight: int = 20,
        perSecond: int = 50,
        backoffBase: float = 2.0,
        backoffCap: float = 300.0,
        jitter: Callable[[], float] = random.random,
        metrics: IMetrics | None = None,
    ) -> None:
        if expires < 1 or not 0 < refreshFraction < 1 or maxInFlight < 1 or perSecond < 1:
            raise ValueError("bad subscription parameters")
        self._clock = clock
        self._state = state
        self._send = send
        self.server = server
        self.serverURI = serverURI
        self.contact = contact
        self.fromURI = fromURI
        self.expires = expires
        self.refreshFraction = refreshFraction
        self.maxInFlight = maxInFlight
        self.perSecond = perSecond
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
        self._jitter = jitter
        self._metrics = metrics
        self._subscribers: dict[str, _Subscriber] = {}
        self._dialogs: dict[tuple[str, str], _Dialog] = {}
        self._initialInFlight = 0
        self._pacer: Pacer[str] = Pacer(clock, maxInFlight, perSecond,
                                        lambda: self._initialInFlight, self._startPaced)
        self._serial = count(1)
        if metrics is not None:
            metrics.describe(_METRIC, "NOTIFY requests answered, by status code")
            metrics.gauge("sipxmpp_sip_subscriptions", lambda: self.active,
                          "dialog subscriptions (SUBSCRIBE) established")  # fmt: skip

    # --- what to subscribe to ---

    @property
    def active(self) -> int:
        """
        The number of established subscriptions.
        """
        return sum(1 for s in self._subscribers.values() if s.dialog and s.dialog.established)

    @property
    def aors(self) -> frozenset[str]:
        """
        The AoRs subscribed to (or to be).
        """
        return frozenset(self._subscribers)

    def subscription(self, aor: str) -> _Dialog | None:
        """
        The live subscription of C{aor}, if any (for tests and status).
        """
        subscriber = self._subscribers.get(aor)
        return subscriber.dialog if subscriber is not None else None

    def aorsChanged(self, added: Iterable[str], removed: Iterable[str]) -> None:
        """
        Subscribe for C{added} AoRs (paced) and unsubscribe C{removed} ones.
        """
        for aor in removed:
            subscriber = self._subscribers.pop(aor, None)
            if subscriber is not None:
                self._drop(subscriber)
        for aor in added:
            if aor not in self._subscribers:
                subscriber = self._subscribers[aor] = _Subscriber(aor)
                self._enqueue(subscriber)

    @property
    def running(self) -> bool:
        """
        Sending (between L{start} and L{stop}).
        """
        return self._pacer.running

    def start(self) -> None:
        """
        Start sending (the transports are ready).
        """
        self._pacer.resume()

    def stop(self) -> None:
        """
        Unsubscribe everything and remove what the subscriptions said.
        """
        self._pacer.stop()
        for subscriber in self._subscribers.values():
            self._drop(subscriber)
            subscriber.queued = False

    def _drop(self, subscriber: _Subscriber) -> None:
        if subscriber.retry is not None and subscriber.retry.active():
            subscriber.retry.cancel()
        subscriber.retry = None
        dialog = subscriber.dialog
        if dialog is not None:
            subscriber.dialog = None
            self._unsubscribe(dialog)
        for key in subscriber.stale:
            self._state.publicationRemoved(subscriber.aor, key)
        subscriber.stale.clear()

    # --- pacing ---

    def _enqueue(self, subscriber: _Subscriber) -> None:
        if not subscriber.queued:
            subscriber.queued = True
            self._pacer.add(subscriber.aor)

    def _startPaced(self, aor: str) -> bool:
        subscriber = self._subscribers.get(aor)
        if subscriber is None or not subscriber.queued:
            return False
        subscriber.queued = False
        if subscriber.dialog is not None:
            return False
        self._subscribe(subscriber)
        return True

    # --- sending ---

    def _subscribe(self, subscriber: _Subscriber) -> None:
        token = secrets.token_hex(8)
        dialog = _Dialog(
            subscriber.aor,
            f"{token}@sipxmpp",
            f"{TAG_PREFIX}{secrets.token_hex(6)}",
            ("subscribe", next(self._serial)),
            self.expires,
        )
        subscriber.dialog = dialog
        self._dialogs[(dialog.callID, dialog.localTag)] = dialog
        self._sendSubscribe(dialog, dialog.expires, initial=True)

    def _sendSubscribe(self, dialog: _Dialog, expires: int, initial: bool = False) -> None:
        dialog.cseq += 1
        dialog.inFlight = expires > 0
        if initial:
            self._initialInFlight += 1
        data = self._request(dialog, expires)
        try:
            self._send(data, self.server, _Transaction(self, dialog, expires, initial))
        except Exception:
            self.log.failure("cannot send SUBSCRIBE for {aor}", aor=dialog.aor)
            if initial:
                self._initialInFlight -= 1
            dialog.inFlight = False
            if not dialog.stopping:
                self._dialogFailed(dialog, None)

    def _request(self, dialog: _Dialog, expires: int) -> bytes:
        target = dialog.remoteTarget or dialog.aor
        lines = [f"SUBSCRIBE {target} SIP/2.0", "Max-Forwards: 70"]
        lines += [f"Route: {route}" for route in dialog.routes or ()]
        lines += [
            f"From: <{self.fromURI}>;tag={dialog.localTag}",
            f"To: <{dialog.aor}>" + (f";tag={dialog.remoteTag}" if dialog.remoteTag else ""),
            f"Call-ID: {dialog.callID}",
            f"CSeq: {dialog.cseq} SUBSCRIBE",
            f"Contact: <{self.contact}>",
            f"Event: {_EVENT}",
            f"Accept: {dialoginfo.CONTENT_TYPE}",
            f"Expires: {expires}",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    def _unsubscribe(self, dialog: _Dialog) -> None:
        self._cancelRefresh(dialog)
        dialog.stopping = True
        if dialog.published:
            dialog.published = False
            self._state.publicationRemoved(dialog.aor, dialog.key)
        if dialog.established and not dialog.ended:
            self._sendSubscribe(dialog, 0)
            # Answer the final NOTIFY 200 for a while, then forget it.
            dialog.cleanup = self._clock.callLater(32.0, self._forget, dialog)
        else:
            self._forget(dialog)

    def _forget(self, dialog: _Dialog) -> None:
        dialog.ended = True
        self._cancelRefresh(dialog)
        if dialog.cleanup is not None and dialog.cleanup.active():
            dialog.cleanup.cancel()
        dialog.cleanup = None
        self._dialogs.pop((dialog.callID, dialog.localTag), None)

    def _cancelRefresh(self, dialog: _Dialog) -> None:
        if dialog.refresh is not None and dialog.refresh.active():
            dialog.refresh.cancel()
        dialog.refresh = None

    def _setExpiry(self, dialog: _Dialog, seconds: int) -> None:
        dialog.expiresAt = self._clock.seconds() + seconds
        self._cancelRefresh(dialog)
        dialog.refresh = self._clock.callLater(
            max(1.0, seconds * self.refreshFraction), self._refresh, dialog
        )

    def _remaining(self, dialog: _Dialog) -> float:
        if dialog.expiresAt is None:
            return float(dialog.expires)
        return dialog.expiresAt - self._clock.seconds()

    def _refresh(self, dialog: _Dialog) -> None:
        dialog.refresh = None
        if dialog.ended or dialog.stopping or dialog.inFlight:
            return
        self._sendSubscribe(dialog, dialog.expires)

    # --- responses ---

    def _current(self, dialog: _Dialog) -> _Subscriber | None:
        subscriber = self._subscribers.get(dialog.aor)
        if subscriber is None or subscriber.dialog is not dialog or dialog.stopping:
            return None
        return subscriber

    def _initialDone(self, transaction: _Transaction) -> None:
        if transaction.initial:
            transaction.initial = False
            self._initialInFlight -= 1
            self._pacer.answered()

    def _responseReceived(self, transaction: _Transaction, response: SIPResponse) -> None:
        self._initialDone(transaction)
        dialog = transaction.dialog
        if self._current(dialog) is None or transaction.expires == 0:
            return
        dialog.inFlight = False
        code = response.code
        if 200 <= code < 300:
            self._established(dialog, response, transaction.expires)
            return
        if code == 423:
            minExpires = response.getHeader("min-expires")
            value = minExpires.strip() if minExpires else ""
            if value.isdigit() and transaction.expires < int(value) <= 7 * 86400:
                dialog.expires = int(value)
                self.log.info("SUBSCRIBE for {aor}: 423, asking {n} s", aor=dialog.aor,
                              n=dialog.expires)  # fmt: skip
                self._sendSubscribe(dialog, dialog.expires, initial=not dialog.established)
                return
        retryAfter = response.getHeader("retry-after")
        self._failed(transaction, code, retryAfter)

    def _established(self, dialog: _Dialog, response: SIPResponse, asked: int) -> None:
        try:
            granted = response.expires
            if dialog.remoteTag is None:
                dialog.remoteTag = response.toTag
            if dialog.routes is None:
                dialog.routes = tuple(r.text for r in reversed(response.recordRoutes))
            contacts = response.contacts
        except SIPParseError as error:
            self.log.info("2xx to SUBSCRIBE for {aor} unreadable: {e}", aor=dialog.aor, e=error)
            granted, contacts = None, []
        if contacts and contacts[0].uriText != "*":
            dialog.remoteTarget = contacts[0].uriText
        if granted is None:
            granted = asked
        if granted == 0:
            self._dialogFailed(dialog, None)
            return
        dialog.established = True
        self._setExpiry(dialog, granted)
        if dialog.published:
            self._state.publicationRefreshed(dialog.aor, dialog.key, granted)

    def _failed(self, transaction: _Transaction, code: int, retryAfter: str | None) -> None:
        self._initialDone(transaction)
        dialog = transaction.dialog
        if self._current(dialog) is None or transaction.expires == 0:
            return
        dialog.inFlight = False
        self.log.info("SUBSCRIBE for {aor} failed: {code}; subscribing again",
                      aor=dialog.aor, code=code)  # fmt: skip
        delay = None
        if retryAfter is not None:
            text = retryAfter.split(";", 1)[0].split("(", 1)[0].strip()
            delay = int(text) if text.isdigit() and len(text) < 8 else None
        self._dialogFailed(dialog, delay)

    def _dialogFailed(self, dialog: _Dialog, retryAfter: float | None) -> None:
        """
        The subscription C{dialog} is over: keep its publication until it
        expires or the next subscription's full state replaces it, and
        subscribe again after a backoff.
        """
        subscriber = self._current(dialog)
        self._forget(dialog)
        if subscriber is None:
            return
        subscriber.dialog = None
        if dialog.published:
            subscriber.stale.append(dialog.key)
        subscriber.failures += 1
        delay = backoffDelay(subscriber.failures, self.backoffBase, self.backoffCap,
                             self._jitter)  # fmt: skip
        if retryAfter is not None:
            # The server's word counts, up to an hour.
            delay = max(delay, min(float(retryAfter), 3600.0))
        subscriber.retry = self._clock.callLater(delay, self._retry, subscriber)

    def _retry(self, subscriber: _Subscriber) -> None:
        subscriber.retry = None
        if self._subscribers.get(subscriber.aor) is subscriber and subscriber.dialog is None:
            self._enqueue(subscriber)

    # --- NOTIFY: ILocalHandler ---

    def accepts(self, request: SIPRequest, source: Peer, forwarding: bool) -> bool:
        """
        A NOTIFY of one of our subscriptions, or with a To tag of ours.
        """
        toTag = request.toTag
        if toTag is None:
            return False
        return (request.callID, toTag) in self._dialogs or toTag.startswith(TAG_PREFIX)

    def answer(self, request: SIPRequest, source: Peer) -> SIPResponse:
        try:
            code, reason, headers = self._notify(request)
        except SIPParseError as error:
            code, reason, headers = 400, error.reason, ()
        if code >= 300:
            self.log.info(
                "NOTIFY {callID} from {source} refused: {code} {reason}",
                callID=request.callID,
                source=source,
                code=code,
                reason=reason,
            )
        if self._metrics is not None:
            self._metrics.increment(_METRIC, code=str(code))
        return makeResponse(request, code, reason, headers=headers)

    def _notify(self, request: SIPRequest) -> tuple[int, str, tuple[tuple[str, str], ...]]:
        toTag = request.toTag or ""
        dialog = self._dialogs.get((request.callID, toTag))
        if dialog is None or dialog.ended:
            return 481, "Subscription Does Not Exist", ()
        if parseEvent(request.getHeader("event"))[0] != _EVENT:
            return 489, "Bad Event", (("Allow-Events", _EVENT),)
        number = request.cseq.number
        if dialog.remoteCSeq is not None and number < dialog.remoteCSeq:
            return 500, "CSeq Out of Order", ()
        stateText = request.getHeader("subscription-state")
        if stateText is None:
            return 400, "Missing Subscription-State", ()
        state = parseSubscriptionState(stateText)
        info: DialogInfo | None = None
        body = request.body
        if body and state.state != "terminated":
            if request.contentType != dialoginfo.CONTENT_TYPE:
                return 415, "Unsupported Media Type", (("Accept", dialoginfo.CONTENT_TYPE),)
            info = parseDialogInfo(body)
        dialog.remoteCSeq = number
        if dialog.stopping:
            if state.state == "terminated":
                self._forget(dialog)
            return 200, "OK", ()
        subscriber = self._current(dialog)
        if subscriber is None:  # pragma: no cover - a live dialog always has one
            return 481, "Subscription Does Not Exist", ()
        if dialog.remoteTag is None:
            # Before the 2xx (RFC 6665 §4.1.2.4): the NOTIFY makes the dialog.
            dialog.remoteTag = request.fromTag
        if not dialog.established:
            dialog.established = True
            if dialog.routes is None:
                dialog.routes = tuple(r.text for r in request.recordRoutes)
            contacts = request.contacts
            if contacts and contacts[0].uriText != "*":
                dialog.remoteTarget = contacts[0].uriText
        if state.state == "terminated":
            self.log.info("subscription of {aor} terminated ({reason})", aor=dialog.aor,
                          reason=state.reason)  # fmt: skip
            if dialog.published:
                dialog.published = False
                self._state.publicationRemoved(dialog.aor, dialog.key)
            self._dialogFailed(dialog, state.retryAfter)
            return 200, "OK", ()
        if state.expires is not None:
            if state.expires == 0:
                self._dialogFailed(dialog, None)
                return 200, "OK", ()
            self._setExpiry(dialog, state.expires)
        if state.state != "active":
            return 200, "OK", ()
        remaining = self._remaining(dialog)
        if info is None:
            self.log.debug("NOTIFY for {aor}: no body, {state}", aor=dialog.aor, state=stateText)
            if dialog.published:
                self._state.publicationRefreshed(dialog.aor, dialog.key, remaining)
            return 200, "OK", ()
        self._apply(subscriber, dialog, info, remaining)
        return 200, "OK", ()

    def _apply(self, subscriber: _Subscriber, dialog: _Dialog, info: DialogInfo,
               remaining: float) -> None:  # fmt: skip
        if dialog.version is not None and info.version <= dialog.version:
            self.log.debug("NOTIFY for {aor}: version {v} not newer than {last}, ignored",
                           aor=dialog.aor, v=info.version, last=dialog.version)  # fmt: skip
            return
        if not info.full and (dialog.version is None or info.version != dialog.version + 1):
            # RFC 4235 §4.1.2: a partial state that does not follow the
            # last one cannot be applied; a refresh brings full state.
            self.log.info("NOTIFY for {aor}: partial version {v} after {last}; asking full state",
                          aor=dialog.aor, v=info.version, last=dialog.version)  # fmt: skip
            dialog.version = None
            if not dialog.inFlight:
                self._cancelRefresh(dialog)
                self._sendSubscribe(dialog, dialog.expires)
            return
        dialog.version = info.version
        dialog.published = True
        self.log.debug(
            "NOTIFY for {aor}: version {v}, {kind} state, dialogs {dialogs}",
            aor=dialog.aor, v=info.version, kind="full" if info.full else "partial",
            dialogs=[f"{d.id}={d.state}" for d in info.dialogs],
        )  # fmt: skip
        self._state.publicationSet(dialog.aor, dialog.key, remaining, dialogReports(info),
                                   partial=not info.full)  # fmt: skip
        if info.full:
            subscriber.failures = 0
            for key in subscriber.stale:
                self._state.publicationRemoved(dialog.aor, key)
            subscriber.stale.clear()
