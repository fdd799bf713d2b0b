"""
XEP-0198 stream management for the gateway's sessions: acks, so that the
server and the gateway know which stanzas arrived, and resumption, so that
a network blip neither logs the user out and in again (new presence, new
roster get, a command's answer lost) nor shows contacts a flapping
resource.

L{AckQueue} is the sans-IO core: the count of handled inbound stanzas
(C{h}), the outbound stanzas not yet acknowledged, when to ask for an ack.
L{StreamManagement} is the thin XMPP shell one session keeps across its
connections: the initializers that enable (after bind) or resume (after
SASL, instead of bind) the stream, the C{<r/>}/C{<a/>} exchange, the
resumption window. L{ManagedXmlStream} counts what goes through a stream;
L{ResumableStreamManager} keeps wokkel's handlers from seeing a resumed
stream as a new login: their observers move to the new stream, pending iq
requests stay pending, and nothing is told of the lost connection unless
resumption fails.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import client, xmlstream
from twisted.words.xish import domish

from sipxmpp.xmpp.expatnames import releaseParser, shareNames
from sipxmpp.xmpp.initializers import BindInitializer, SessionInitializer
from sipxmpp.xmpp.wokkelcompat import subprotocols

NS_SM = "urn:xmpp:sm:3"
#: Counters wrap at 2**32 (XEP-0198 section 4).
MODULUS = 2**32
STANZAS = frozenset({"iq", "message", "presence"})
#: Ask for an ack once this many stanzas went out since the last ask...
REQUEST_EVERY = 10
#: ...or this many seconds after the first of them: a burst (a call's
#: presence and commands) costs one <r/>, not one per stanza.
REQUEST_DELAY = 2.0
#: Unacknowledged stanzas kept at most: a server that never acks must not
#: grow the queue for ever (a session sends little: presence, commands,
#: pings). Beyond this the oldest could not be sent again on resumption.
MAX_UNACKED = 1000
#: The resumption window asked for, in seconds. Short on purpose: while a
#: session waits to be resumed, the server still shows the gateway's
#: resource (a killed gateway's call shows that long); a blip longer than
#: this ends in a fresh login, as without stream management.
RESUME_MAX = 60


class StreamNotResumed(ConnectionLost):
    """
    The stream was lost and could not be resumed: what an iq request in
    flight fails with (a L{ConnectionLost}, as without XEP-0198).
    """

    def __str__(self) -> str:
        return f"the XMPP stream was lost and not resumed: {': '.join(map(str, self.args))}"


def isStanza(obj: object) -> bool:
    """
    Whether C{obj} is a stanza (counted), not a nonza or raw text.
    """
    return (isinstance(obj, domish.Element) and obj.name in STANZAS
            and obj.uri in (None, "", "jabber:client"))  # fmt: skip


class AckQueue:
    """
    The counters of one managed stream, sans IO.

    @ivar inbound: stanzas handled from the server (our C{h}).
    @ivar outbound: stanzas sent to the server.
    @ivar requestOutstanding: an C{<r/>} awaits its C{<a/>}.
    @ivar dropped: unacknowledged stanzas forgotten beyond C{maxUnacked}.
    """

    def __init__(self, requestEvery: int = REQUEST_EVERY, maxUnacked: int = MAX_UNACKED) -> None:
        self.requestEvery = requestEvery
        self.maxUnacked = maxUnacked
        self.dropped = 0
        self.inbound = 0
        self.outbound = 0
        self.requestOutstanding = False
        self._unrequested = 0
        self._unacked: deque[tuple[int, object]] = deque()

    @property
    def unacked(self) -> list[object]:
        """
        The stanzas sent and not acknowledged, oldest first.
        """
        return [stanza for _, stanza in self._unacked]

    def received(self) -> None:
        """
        A stanza from the server was handled.
        """
        self.inbound = (self.inbound + 1) % MODULUS

    def sent(self, stanza: object) -> str:
        """
        C{stanza} went out: keep it until acknowledged. Return when to ask
        for an ack: C{"now"}, C{"later"} (within L{REQUEST_DELAY}) or
        C{"no"} (an ask is outstanding: its answer decides).
        """
        self.outbound = (self.outbound + 1) % MODULUS
        self._unacked.append((self.outbound, stanza))
        if len(self._unacked) > self.maxUnacked:
            self._unacked.popleft()
            self.dropped += 1
        self._unrequested += 1
        if self.requestOutstanding:
            return "no"
        return "now" if self._unrequested >= self.requestEvery else "later"

    def requested(self) -> None:
        """
        An C{<r/>} went out.
        """
        self.requestOutstanding = True
        self._unrequested = 0

    def acknowledged(self, h: int) -> bool:
        """
        The server handled C{h} stanzas in all: forget those. Return
        whether stanzas sent since the last ask still wait for one.

        @raise ValueError: C{h} counts stanzas never sent.
        """
        self.requestOutstanding = False
        if (self.outbound - h) % MODULUS >= MODULUS // 2:
            raise ValueError(f"the server acknowledges {h} stanzas; {self.outbound} were sent")
        while self._unacked and (h - self._unacked[0][0]) % MODULUS < MODULUS // 2:
            self._unacked.popleft()
        if not self._unacked:
            self._unrequested = 0
        return self._unrequested > 0

    def resumed(self, h: int) -> list[object]:
        """
        The stream was resumed; the server had handled C{h} stanzas.
        Return the ones to send again, in order: sending them counts them
        anew.
        """
        self.acknowledged(h)
        again = self.unacked
        self._unacked.clear()
        self.outbound = h % MODULUS
        self._unrequested = 0
        return again


class ManagedXmlStream(xmlstream.XmlStream):
    """
    The stream the sessions' factories build: while stream management is
    on (C{management} set), stanzas are counted both ways and C{<r/>} and
    C{<a/>} go to it instead of the observers. Its parsers share their
    names (L{shareNames}) and drop their parsers when done
    (L{releaseParser}).

    @ivar cleanEnd: the server closed the stream (C{</stream:stream>}) or
        ended it with a stream error: the session is over on its side,
        nothing to resume.
    """

    management: StreamManagement | None = None
    cleanEnd = False

    def _initializeStream(self) -> None:
        old = self.stream
        super()._initializeStream()
        if isinstance(old, domish.ExpatElementStream):
            releaseParser(old)
        if isinstance(self.stream, domish.ExpatElementStream):
            shareNames(self.stream)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        stream = self.stream
        super().connectionLost(reason)
        if isinstance(stream, domish.ExpatElementStream):
            releaseParser(stream)
        management = self.management
        if not self._dispatchDepth and not (management is not None and management.resuming):
            # Everyone was told (STREAM_END_EVENT) and nothing resumes this
            # stream (XEP-0198): drop the observers and initializers, whose
            # methods hold this stream, so that it is freed at once rather
            # than at a full collection.
            self._eventObservers = {}
            self._xpathObservers = {}
            self.initializers = []

    def onDocumentEnd(self) -> None:
        self.cleanEnd = True
        super().onDocumentEnd()

    def onStreamError(self, errelem: domish.Element) -> None:
        self.cleanEnd = True
        super().onStreamError(errelem)

    def onElement(self, element: domish.Element) -> None:
        management = self.management
        if management is None:
            super().onElement(element)
        elif element.uri == NS_SM:
            management.nonzaReceived(self, element)
        else:
            super().onElement(element)
            if isStanza(element):
                management.received()

    def send(self, obj: Any) -> None:
        super().send(obj)
        if self.management is not None and isStanza(obj):
            self.management.stanzaSent(self, obj)


class StreamManagement:
    """
    XEP-0198 for one session, across its connections.

    @ivar stream: the stream management is enabled on, or L{None}.
    @ivar resuming: the connection was lost and the stream may be resumed
        (until L{RESUME_MAX}, or the server's C{max}, has passed).
    @ivar resumptions: how many times the stream was resumed.
    @ivar onExpired: called when the resumption window passed without a
        resumption.
    @ivar onResumeFailed: called when the server could not resume (the
        stream goes on to bind afresh).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, name: str, on: bool = True) -> None:
        self.clock = clock
        self.name = name
        self.on = on
        self.queue: AckQueue | None = None
        self.stream: ManagedXmlStream | None = None
        self.resumeID: str | None = None
        self.resumeMax = float(RESUME_MAX)
        self.resuming = False
        self.resumptions = 0
        self.onExpired: Callable[[], None] = lambda: None
        self.onResumeFailed: Callable[[], None] = lambda: None
        self.failedCondition: str | None = None
        self._resumedOn: ManagedXmlStream | None = None
        self._requestTimer: IDelayedCall | None = None
        self._expiry: IDelayedCall | None = None

    # -- the session's hooks ----------------------------------------------

    def prepare(self, xs: xmlstream.XmlStream) -> None:
        """
        Set up C{xs}'s initializers: resume the stream instead of binding
        when one is held, else enable stream management after binding.
        """
        if not self.on:
            return
        initializers: list[Any] = xs.initializers
        if self.resuming:
            kept = [i for i in initializers
                    if not isinstance(i, (client.BindInitializer, client.SessionInitializer))]  # fmt: skip
            initializers[:] = kept + [ResumeInitializer(xs, self)]
        else:
            initializers.append(EnableInitializer(xs, self))

    def resumedOn(self, xs: xmlstream.XmlStream) -> bool:
        """
        Whether C{xs} resumed the stream (rather than binding afresh).
        """
        return xs is self._resumedOn

    def streamLost(self, xs: xmlstream.XmlStream | None) -> bool:
        """
        C{xs}'s connection is gone (not by our logout). Return whether the
        stream is to be resumed: it was resumable and the server did not
        close it.
        """
        if self.resuming:
            return True  # an attempt to resume failed to connect: keep trying
        if xs is None or xs is not self.stream:
            return False
        self._cancelRequest()
        self.stream = None
        if self.resumeID is None or getattr(xs, "cleanEnd", False):
            self.forget()
            return False
        self.resuming = True
        self._expiry = self.clock.callLater(self.resumeMax, self._expired)
        return True

    def forget(self) -> None:
        """
        Drop the stream's state: the next login binds afresh.
        """
        self._cancelRequest()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        if self.stream is not None:
            self.stream.management = None
        self.stream = None
        self.queue = None
        self.resumeID = None
        self.resuming = False
        self._resumedOn = None

    # -- what the initializers learn ---------------------------------------

    def streamEnabled(self, stream: xmlstream.XmlStream, element: domish.Element) -> None:
        xs = _managed(stream)
        self.forget()
        self.queue = AckQueue()
        self.stream = xs
        xs.management = self
        if element.getAttribute("resume") in ("true", "1") and element.getAttribute("id"):
            self.resumeID = element["id"]
            # The server's window, but not longer than we asked for: a blip
            # longer than that ends in a fresh login, as without XEP-0198.
            self.resumeMax = min(_seconds(element.getAttribute("max"), RESUME_MAX), RESUME_MAX)
        self.log.debug("{name}: stream management on (resumable: {resumable}, the server's "
                       "window: {max} s)", name=self.name, resumable=self.resumeID is not None,
                       max=element.getAttribute("max"))  # fmt: skip

    def resumed(self, stream: xmlstream.XmlStream, element: domish.Element) -> None:
        xs = _managed(stream)
        if self.queue is None:
            raise RuntimeError("resumed a stream no longer known")
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        self.resuming = False
        self.resumptions += 1
        self.resumeID = element.getAttribute("previd", self.resumeID)
        try:
            again = self.queue.resumed(int(element.getAttribute("h", "")))
        except ValueError as e:
            # Which stanzas the server has is unknown: send none again and
            # count afresh from what it says, so that later acks make sense.
            self.log.warn("{name}: bad h on resumption: {e}; sending nothing again",
                          name=self.name, e=e)  # fmt: skip
            queue, self.queue = self.queue, AckQueue()
            self.queue.inbound = queue.inbound
            self.queue.outbound = _count(element.getAttribute("h"), queue.outbound)
            again = []
        self.stream = xs
        self._resumedOn = xs
        xs.management = self
        self.log.info("{name}: stream resumed; sending {n} unacknowledged stanzas again",
                      name=self.name, n=len(again))  # fmt: skip
        for stanza in again:
            xs.send(stanza)

    def resumeFailed(self, element: domish.Element | None) -> None:
        condition = None
        if element is not None:
            condition = next((c.name for c in element.elements() if c.name != "text"), None)
        self.log.info("{name}: the stream could not be resumed ({condition}); logging in afresh",
                      name=self.name, condition=condition)  # fmt: skip
        self.forget()
        self.failedCondition = condition
        self.onResumeFailed()

    # -- on the managed stream ---------------------------------------------

    def received(self) -> None:
        if self.queue is not None:
            self.queue.received()

    def nonzaReceived(self, xs: ManagedXmlStream, element: domish.Element) -> None:
        if self.queue is None:
            return
        if element.name == "r":
            answer = domish.Element((NS_SM, "a"))
            answer["h"] = str(self.queue.inbound)
            xs.send(answer)
        elif element.name == "a":
            try:
                more = self.queue.acknowledged(int(element.getAttribute("h", "")))
            except ValueError as e:
                self.log.warn("{name}: bad ack from the server: {e}", name=self.name, e=e)
                return
            if more:
                self._requestLater()

    def stanzaSent(self, xs: ManagedXmlStream, stanza: domish.Element) -> None:
        if self.queue is None or xs is not self.stream:
            return
        dropped = self.queue.dropped
        when = self.queue.sent(stanza)
        if self.queue.dropped and not dropped:
            self.log.warn("{name}: the server acknowledges nothing; keeping only the last "
                          "{n} stanzas for a resumption", name=self.name,
                          n=self.queue.maxUnacked)  # fmt: skip
        if when == "now":
            self._request()
        elif when == "later":
            self._requestLater()

    def _requestLater(self) -> None:
        if self._requestTimer is None:
            self._requestTimer = self.clock.callLater(REQUEST_DELAY, self._request)

    def _request(self) -> None:
        self._cancelRequest()
        if self.stream is None or self.queue is None or self.queue.requestOutstanding:
            return
        self.queue.requested()
        self.stream.send(domish.Element((NS_SM, "r")))

    def _cancelRequest(self) -> None:
        timer, self._requestTimer = self._requestTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _expired(self) -> None:
        self._expiry = None
        self.log.info("{name}: not resumed within {max:.0f} s; logging in afresh",
                      name=self.name, max=self.resumeMax)  # fmt: skip
        self.forget()
        self.onExpired()


def _managed(xs: xmlstream.XmlStream) -> ManagedXmlStream:
    if not isinstance(xs, ManagedXmlStream):
        raise TypeError(f"stream management needs a ManagedXmlStream, not {xs!r}")
    return xs


def _count(text: str | None, default: int) -> int:
    try:
        return int(text or "") % MODULUS
    except ValueError:
        return default


def _seconds(text: str | None, default: float) -> float:
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if value > 0 else default


def _exchange(xs: xmlstream.XmlStream, element: domish.Element, success: str,
              onSuccess: Callable[[domish.Element], None],
              onFailed: Callable[[domish.Element], None]) -> Deferred[None]:  # fmt: skip
    """
    Send the nonza C{element}; call C{onSuccess} with the answer named
    C{success} or C{onFailed} with C{<failed/>}, whichever comes first.
    """
    d: Deferred[None] = Deferred()
    ok, failed = f"/{success}[@xmlns='{NS_SM}']", f"/failed[@xmlns='{NS_SM}']"

    def answered(handler: Callable[[domish.Element], None], answer: domish.Element) -> None:
        xs.removeObserver(ok, gotOK)
        xs.removeObserver(failed, gotFailed)
        try:
            handler(answer)
        except Exception:
            d.errback(Failure())
        else:
            d.callback(None)

    def gotOK(answer: domish.Element) -> None:
        answered(onSuccess, answer)

    def gotFailed(answer: domish.Element) -> None:
        answered(onFailed, answer)

    xs.addObserver(ok, gotOK)
    xs.addObserver(failed, gotFailed)
    xs.send(element)
    return d


class EnableInitializer(xmlstream.BaseFeatureInitiatingInitializer):
    """
    After bind: C{<enable resume="true"/>}. A server that refuses leaves
    the stream as it is, without acks.
    """

    feature = (NS_SM, "sm")

    def __init__(self, xs: xmlstream.XmlStream, management: StreamManagement) -> None:
        super().__init__(xs, required=False)
        self.management = management

    def start(self) -> Deferred[None]:
        enable = domish.Element((NS_SM, "enable"))
        enable["resume"] = "true"
        enable["max"] = str(RESUME_MAX)

        def enabled(answer: domish.Element) -> None:
            self.management.streamEnabled(self.xmlstream, answer)

        def refused(answer: domish.Element) -> None:
            self.management.log.info("{name}: the server refused stream management",
                                     name=self.management.name)  # fmt: skip
            self.management.forget()

        return _exchange(self.xmlstream, enable, "enabled", enabled, refused)


class ResumeInitializer:
    """
    After SASL, instead of bind: C{<resume previd h/>}. When the server
    cannot resume, bind (and enable) follow on the same stream: a fresh
    start.
    """

    def __init__(self, xs: xmlstream.XmlStream, management: StreamManagement) -> None:
        self.xmlstream = xs
        self.management = management

    def initialize(self) -> Deferred[None] | None:
        management = self.management
        if (not management.resuming or management.queue is None or management.resumeID is None
                or (NS_SM, "sm") not in self.xmlstream.features):
            self._bindInstead(None)
            return None
        resume = domish.Element((NS_SM, "resume"))
        resume["previd"] = management.resumeID
        resume["h"] = str(management.queue.inbound)

        def resumed(answer: domish.Element) -> None:
            management.resumed(self.xmlstream, answer)

        def failed(answer: domish.Element) -> None:
            self._bindInstead(answer)

        return _exchange(self.xmlstream, resume, "resumed", resumed, failed)

    def _bindInstead(self, answer: domish.Element | None) -> None:
        self.management.resumeFailed(answer)
        xs = self.xmlstream
        # initializeStream pops the current initializer (this one) once done.
        xs.initializers[1:1] = [BindInitializer(xs, required=True),
                                SessionInitializer(xs, required=False),
                                EnableInitializer(xs, self.management)]  # fmt: skip


class ResumableStreamManager(subprotocols.StreamManager):  # type: ignore[misc]
    """
    wokkel's L{subprotocols.StreamManager}, except that while a lost
    stream may be resumed its handlers are not told: stanzas they send are
    queued, their iq requests stay pending. Once resumed, their observers
    move to the new stream and the queue goes out, without a new
    C{connectionInitialized}; if not, they get the C{connectionLost} they
    were spared, then the fresh stream as usual.
    """

    xmlstream: Any
    _packetQueue: list[Any]

    def __init__(self, factory: Any, reactor: IReactorTime, management: StreamManagement) -> None:
        super().__init__(factory, reactor=reactor)
        self.management = management
        self._held: Failure | None = None
        self._lost: xmlstream.XmlStream | None = None

    @property
    def holding(self) -> bool:
        """
        Whether the handlers are kept from a lost stream being resumed.
        """
        return self._held is not None

    def _connected(self, xs: xmlstream.XmlStream) -> None:
        if self._held is None:
            super()._connected(xs)
        # else the handlers meet xs in _authd, once it is known whether it
        # resumed the stream they know.

    def _authd(self, xs: xmlstream.XmlStream) -> None:
        if self._held is not None and self.management.resumedOn(xs):
            self._resume(xs)
            return
        self.release()
        if self.xmlstream is not xs:
            super()._connected(xs)
        super()._authd(xs)

    def _disconnected(self, reason: Failure) -> None:
        if self._held is not None:
            return  # held already, or an attempt to resume lost its connection
        if self.management.resuming:
            self.hold(reason)
            return
        super()._disconnected(reason)

    def hold(self, reason: Failure) -> None:
        """
        The stream is lost and will be resumed: from now on, queue what the
        handlers send and keep their requests pending.
        """
        if self._held is None:
            self._held = reason if isinstance(reason, Failure) else Failure(Exception("stream lost"))
            self._lost = self.xmlstream
            self.xmlstream = None
            self._initialized = False

    def release(self, why: str | None = None) -> None:
        """
        The held stream will not be resumed: tell the handlers it is lost,
        fail its pending requests (with L{StreamNotResumed} C{why} if
        given, else the reason the connection was lost) and drop what was
        queued for it.
        """
        reason, self._held = self._held, None
        self._lost = None
        if reason is None:
            return
        if why is not None:
            reason = Failure(StreamNotResumed(why))
        self._packetQueue = []
        super()._disconnected(reason)

    def _resume(self, xs: xmlstream.XmlStream) -> None:
        lost, self._lost, self._held = self._lost, None, None
        if lost is not None:
            _moveObservers(lost, xs, set(self))
        self.xmlstream = xs
        for handler in list(self):
            handler.makeConnection(xs)
        xs.addObserver('/iq[@type="result"]', self._onIQResponse)
        xs.addObserver('/iq[@type="error"]', self._onIQResponse)
        queued, self._packetQueue = self._packetQueue, []
        for element in queued:
            xs.send(element)
        self._initialized = True


def _moveObservers(source: xmlstream.XmlStream, target: xmlstream.XmlStream, owners: set[Any]) -> None:
    """
    Add to C{target} the XPath observers of C{owners} (the handlers) on
    C{source}, with their priorities and arguments.
    """
    # twisted.words has no API to list observers: this reads its
    # EventDispatcher's tables (the unit and integration tests would fail
    # if they changed).
    for priority, queries in list(source._xpathObservers.items()):
        for query, callbacks in list(queries.items()):
            for method, (wrapper, onetime) in list(callbacks.callbacks.items()):
                if getattr(method, "__self__", None) not in owners:
                    continue
                if onetime:
                    target.addOnetimeObserver(query, method, priority, *wrapper.args, **wrapper.kwargs)
                else:
                    target.addObserver(query, method, priority, *wrapper.args, **wrapper.kwargs)


__all__ = [
    "AckQueue",
    "EnableInitializer",
    "ManagedXmlStream",
    "ResumableStreamManager",
    "ResumeInitializer",
    "StreamManagement",
    "StreamNotResumed",
    "isStanza",
]
