"""
PUBLISH mode of back-publishing: each provisioned user's XMPP presence
goes to a SIP presence server as PIDF (RFC 3903 publication of RFC 3863
with RFC 4480 RPID), sans-IO.

L{PresencePublisher} keeps one publication per AoR it is told of
(L{aorsChanged}) at one server, reading the user's presence from an
L{IPresenceSource} whenever it tells of a change. Requests go out as bytes
without a Via through an injected C{send(data, target, user)} (in
production L{sipxmpp.sip.core.proxy.Proxy.sendRequest}); timers run on an
injected clock.

One publication's life (RFC 3903 §4):

  1. initial PUBLISH with the document, no SIP-If-Match; the 2xx gives
     the entity-tag (SIP-ETag) and the Expires granted;
  2. refreshed (SIP-If-Match, no body) at C{refreshFraction} of what was
     granted; modified (SIP-If-Match and the new document) on a change;
  3. 412 (the server forgot it, e.g. after a restart): published afresh
     at once; 423: again at once with the Min-Expires asked; any other
     failure or a timeout: again after a jittered exponential backoff
     (C{backoffBase} doubling up to C{backoffCap});
  4. removed (SIP-If-Match, Expires 0) when the user leaves SIP's view:
     the source knows no presence for them any more (no session), or they
     are no longer provisioned; and for everyone at L{stop}.

What is published: unavailable is basic closed; L{None} from the source
removes the publication. A presence marked C{fromSIP} (the gateway's own
C{dnd} during a call, or anything else SIP caused) is never published: the
SIP core knows the call already, and publishing it would bring SIP's own
state back to SIP (issue 18, "no loops"); the publication keeps what the
user last set themselves, refreshed as usual.

Pacing: at most C{maxInFlight} PUBLISHes unanswered and C{perSecond} sent
a second, refreshes included; one PUBLISH in flight per AoR, and what goes
next is decided when it is sent, so a burst of changes collapses into the
latest presence.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sipxmpp.sip.core.metrics import IMetrics
from sipxmpp.sip.core.pacing import Pacer, backoffDelay
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.presence import IPresenceSource, presenceDocument
from sipxmpp.sip.core.transaction import IClientTransactionUser, NullUser
from sipxmpp.sip.wire import pidf
from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.message import SIPResponse

__all__ = ["PresencePublisher"]

Send = Callable[[bytes, Peer, IClientTransactionUser], object]

_METRIC = "sipxmpp_sip_presence_publish_total"
# The longest lifetime a 423's Min-Expires may ask for.
_LONGEST = 7 * 86400



@dataclass(eq=False)
class _Publication:
    """
    The publication of one AoR: what the server has, what we want it to
    have, and the timers.
    """

    aor: str
    callID: str
    fromTag: str
    expires: int
    cseq: int = 0
    etag: str | None = None
    published: bytes | None = None
    wanted: bytes | None = None
    provisioned: bool = True
    inFlight: bool = False
    queued: bool = False
    refreshDue: bool = False
    failures: int = 0
    refresh: IDelayedCall | None = None
    retry: IDelayedCall | None = None


@implementer(IClientTransactionUser)
class _Transaction(NullUser):
    __slots__ = ("_owner", "body", "expires", "publication")

    def __init__(self, owner: PresencePublisher, publication: _Publication, expires: int,
                 body: bytes) -> None:  # fmt: skip
        self._owner = owner
        self.publication = publication
        self.expires = expires
        self.body = body

    def transactionResponse(self, transaction: object, response: SIPResponse) -> None:
        if response.code >= 200:
            self._owner._answered(self, response.code, response)

    def transactionTimedOut(self, transaction: object, code: int) -> None:
        self._owner._answered(self, code, None)


class PresencePublisher:
    """
    Publishes the presence of every AoR it is told of at one server.

    @param clock: runs the refresh, retry and pacing timers.
    @param source: the users' presence; its listener is added here.
    @param send: sends a request (bytes without Via) to a peer in a client
        transaction whose user it is given.
    @param server: where every PUBLISH goes (the resolved server).
    @param expires: the Expires asked for.
    @param refreshFraction: refresh at this fraction of the granted Expires.
    @param maxInFlight: PUBLISHes unanswered at most.
    @param perSecond: PUBLISHes sent per second at most.
    @param backoffBase: the first retry delay, seconds (before jitter).
    @param backoffCap: the longest retry delay, seconds.
    @param jitter: returns a number in [0, 1).
    @raise ValueError: for parameters out of range.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        source: IPresenceSource,
        send: Send,
        server: Peer,
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
            raise ValueError("bad publication parameters")
        self._clock = clock
        self._source = source
        self._send = send
        self.server = server
        self.expires = expires
        self.refreshFraction = refreshFraction
        self.maxInFlight = maxInFlight
        self.perSecond = perSecond
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
        self._jitter = jitter
        self._metrics = metrics
        self._publications: dict[str, _Publication] = {}
        self._inFlight = 0
        self._pacer: Pacer[_Publication] = Pacer(clock, maxInFlight, perSecond,
                                                 lambda: self._inFlight, self._startPaced)
        source.addListener(self.presenceChanged)
        if metrics is not None:
            metrics.describe(_METRIC, "PIDF PUBLISH sent to the presence server, by answer")
            metrics.gauge("sipxmpp_sip_presence_publications",
                          lambda: sum(1 for p in self._publications.values() if p.etag),
                          "presence publications held at the presence server")  # fmt: skip

    def publication(self, aor: str) -> _Publication | None:
        """
        The publication of C{aor}, if any (for tests and status).
        """
        return self._publications.get(aor)

    # --- what to publish ---

    def aorsChanged(self, added: Iterable[str], removed: Iterable[str]) -> None:
        """
        Publish for C{added} AoRs and remove the publications of
        C{removed} ones.
        """
        for aor in removed:
            publication = self._publications.get(aor)
            if publication is not None:
                publication.provisioned = False
                self._want(publication)
        for aor in added:
            publication = self._publications.get(aor)
            if publication is None:
                publication = self._publications[aor] = _Publication(
                    aor, f"{secrets.token_hex(8)}@sipxmpp", secrets.token_hex(6), self.expires
                )
            publication.provisioned = True
            self._want(publication)

    def presenceChanged(self, aor: str) -> None:
        """
        The source's listener: publish what C{aor} shows now.
        """
        publication = self._publications.get(aor)
        if publication is not None:
            self._want(publication)

    def _want(self, publication: _Publication) -> None:
        presence = self._source.presenceOf(publication.aor) if publication.provisioned else None
        if presence is None:
            publication.wanted = None
        elif presence.fromSIP:
            # No loops: what SIP caused never goes back to SIP.
            self.log.debug("presence of {aor} came from SIP: not published", aor=publication.aor)
        else:
            publication.wanted = presenceDocument(publication.aor, presence)
        self._kick(publication)

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
        for publication in self._publications.values():
            self._kick(publication)

    def stop(self) -> None:
        """
        Remove every publication at the server (Expires 0), at shutdown.
        """
        self._pacer.stop()
        for publication in list(self._publications.values()):
            publication.queued = False
            self._cancel(publication)
            publication.wanted = None
            if publication.etag is not None:
                self._publish(publication, 0, b"")

    # --- pacing ---

    def _action(self, publication: _Publication) -> tuple[int, bytes] | None:
        """
        The PUBLISH C{publication} needs now, as (Expires, body), if any.
        """
        if publication.wanted is None:
            return (0, b"") if publication.etag is not None else None
        if publication.etag is None or publication.wanted != publication.published:
            return publication.expires, publication.wanted
        if publication.refreshDue:
            return publication.expires, b""
        return None

    def _kick(self, publication: _Publication) -> None:
        if publication.inFlight or publication.queued or not self.running:
            return
        if publication.retry is not None and publication.retry.active():
            return
        if self._action(publication) is None:
            self._forgetIfDone(publication)
            return
        publication.queued = True
        self._pacer.add(publication)

    def _startPaced(self, publication: _Publication) -> bool:
        publication.queued = False
        action = self._action(publication)
        if action is None or publication.inFlight:
            return False
        self._publish(publication, *action)
        return True

    # --- sending ---

    def _publish(self, publication: _Publication, expires: int, body: bytes) -> None:
        publication.cseq += 1
        publication.inFlight = True
        publication.refreshDue = False
        self._inFlight += 1
        data = self._request(publication, expires, body)
        try:
            self._send(data, self.server, _Transaction(self, publication, expires, body))
        except Exception:
            self.log.failure("cannot send PUBLISH for {aor}", aor=publication.aor)
            self._answered(_Transaction(self, publication, expires, body), 503, None)

    def _request(self, publication: _Publication, expires: int, body: bytes) -> bytes:
        aor = publication.aor
        lines = [
            f"PUBLISH {aor} SIP/2.0",
            "Max-Forwards: 70",
            f"From: <{aor}>;tag={publication.fromTag}",
            f"To: <{aor}>",
            f"Call-ID: {publication.callID}",
            f"CSeq: {publication.cseq} PUBLISH",
            "Event: presence",
            f"Expires: {expires}",
        ]
        if publication.etag is not None:
            lines.append(f"SIP-If-Match: {publication.etag}")
        if body:
            lines.append(f"Content-Type: {pidf.CONTENT_TYPE}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body

    # --- answers ---

    def _answered(self, transaction: _Transaction, code: int,
                  response: SIPResponse | None) -> None:  # fmt: skip
        publication = transaction.publication
        if not publication.inFlight:  # pragma: no cover - one answer per PUBLISH
            return
        publication.inFlight = False
        self._inFlight -= 1
        self._pacer.answered()
        if self._metrics is not None:
            self._metrics.increment(_METRIC, code=str(code))
        if 200 <= code < 300 and response is not None:
            self._accepted(publication, transaction, response)
        elif code == 412:
            self.log.info("PUBLISH for {aor}: 412, publishing afresh", aor=publication.aor)
            publication.etag = publication.published = None
        elif code == 423 and response is not None and self._minExpires(publication, response):
            pass
        elif transaction.expires == 0 and not self.running:
            publication.etag = None
        else:
            self._failed(publication, code, transaction.expires)
            return
        self._kick(publication)

    def _accepted(self, publication: _Publication, transaction: _Transaction,
                  response: SIPResponse) -> None:  # fmt: skip
        publication.failures = 0
        if transaction.expires == 0:
            publication.etag = publication.published = None
            self._cancel(publication)
            return
        try:
            granted = response.expires
        except SIPParseError:
            granted = None
        if granted is None or granted > transaction.expires:
            granted = transaction.expires
        etag = (response.getHeader("sip-etag") or "").strip()
        publication.etag = etag or None
        if transaction.body:
            publication.published = transaction.body
        if not etag:
            self.log.warn("PUBLISH for {aor}: 2xx without SIP-ETag", aor=publication.aor)
            publication.published = None
        if granted <= 0:
            publication.etag = publication.published = None
            return
        self._cancel(publication)
        publication.refresh = self._clock.callLater(
            max(1.0, granted * self.refreshFraction), self._refreshDue, publication
        )

    def _minExpires(self, publication: _Publication, response: SIPResponse) -> bool:
        value = (response.getHeader("min-expires") or "").strip()
        if value.isdigit() and publication.expires < int(value) <= _LONGEST:
            publication.expires = int(value)
            self.log.info("PUBLISH for {aor}: 423, asking {n} s", aor=publication.aor,
                          n=publication.expires)  # fmt: skip
            return True
        return False

    def _failed(self, publication: _Publication, code: int, expires: int) -> None:
        publication.failures += 1
        delay = backoffDelay(publication.failures, self.backoffBase, self.backoffCap,
                             self._jitter)  # fmt: skip
        self.log.info("PUBLISH for {aor} failed: {code}; again in {delay:.0f} s",
                      aor=publication.aor, code=code, delay=delay)  # fmt: skip
        if not self.running:
            return
        publication.retry = self._clock.callLater(delay, self._retry, publication)

    def _retry(self, publication: _Publication) -> None:
        publication.retry = None
        self._kick(publication)

    def _refreshDue(self, publication: _Publication) -> None:
        publication.refresh = None
        publication.refreshDue = True
        self._kick(publication)

    def _cancel(self, publication: _Publication) -> None:
        for timer in (publication.refresh, publication.retry):
            if timer is not None and timer.active():
                timer.cancel()
        publication.refresh = publication.retry = None

    def _forgetIfDone(self, publication: _Publication) -> None:
        if not publication.provisioned and publication.etag is None and not publication.inFlight:
            self._cancel(publication)
            if self._publications.get(publication.aor) is publication:
                del self._publications[publication.aor]
