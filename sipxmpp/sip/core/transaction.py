"""
RFC 3261 §17 transactions for a stateful proxy, with the RFC 6026 fixes.

Sans-IO: a transaction is fed messages and timer expiries (on an injected
L{IReactorTime}) and emits bytes through a C{send(data, peer)} callable and
events through callbacks. Over reliable transports (TCP, TLS) nothing is
retransmitted and the waiting timers are zero, as the RFC says.

Server transactions answer the previous hop: they absorb request
retransmissions by repeating the last response. Client transactions talk to
the next hop: they retransmit requests over UDP, time out, and ACK non-2xx
final responses hop by hop. An INVITE transaction that saw a 2xx stays in
the RFC 6026 "Accepted" state for 64*T1 so that retransmitted 2xx responses
are still forwarded and retransmitted INVITEs still absorbed.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.responses import responseBytes

T1 = 0.5
T2 = 4.0
T4 = 5.0
TIMER_C = 181.0  # proxy INVITE timer: "greater than 3 minutes" (§16.6)

Send = Callable[[bytes, Peer], None]


class ITransactionUser(Interface):
    """
    What a server transaction tells its user (the proxy core). One object
    per request in flight, rather than a callback per event: thousands of
    transactions wait out their timers, and every bound method they held
    would be one more object for the garbage collector.
    """

    def transactionTerminated(transaction: object) -> None:
        """
        C{transaction} has ended; forget it.
        """


class IClientTransactionUser(ITransactionUser):
    """
    What a client transaction tells its user.
    """

    def transactionResponse(transaction: object, response: SIPResponse) -> None:
        """
        Pass C{response} on (every response but the retransmissions of a
        non-2xx final response).
        """

    def transactionTimedOut(transaction: object, code: int) -> None:
        """
        No final response came in time (Timer B or F), or the transport
        failed; answer C{code} (408 or 503). Called at most once.
        """

    def transactionTimerC(transaction: object) -> None:
        """
        Timer C fired on an INVITE transaction (§16.8).
        """


@implementer(IClientTransactionUser)
class NullUser:
    """
    A transaction user that does nothing with what it hears: the user of a
    transaction that has ended, and a base for users that care for only
    some events.
    """

    __slots__ = ()

    def transactionTerminated(self, transaction: object) -> None:
        pass

    def transactionResponse(self, transaction: object, response: SIPResponse) -> None:
        pass

    def transactionTimedOut(self, transaction: object, code: int) -> None:
        pass

    def transactionTimerC(self, transaction: object) -> None:
        pass


_ENDED = NullUser()


class State(enum.Enum):
    """
    Transaction states (RFC 3261 §17 and RFC 6026 "Accepted").
    """

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# A named timer: when it is due, its name (ties go by name), and the name
# of the method it calls then, with what arguments.
_Timer = tuple[float, str, str, tuple[object, ...]]


class _Transaction:
    log = Logger()

    __slots__ = ("isInvite", "peer", "state", "_send", "_clock", "_timers", "_wake", "_wakeAt",
                 "_user")

    # Set by each subclass, typed for what it tells its user.
    _user: ITransactionUser

    def __init__(self, clock: IReactorTime, request: SIPRequest, peer: Peer, send: Send) -> None:
        self.isInvite = request.method == "INVITE"
        self.peer = peer
        self.state = State.TERMINATED
        self._send = send
        self._clock = clock
        self._timers: dict[str, _Timer] = {}
        self._wake: IDelayedCall | None = None
        self._wakeAt = 0.0

    def _terminate(self) -> None:
        if self.state is State.TERMINATED:
            return
        self.state = State.TERMINATED
        self._stopTimers()
        user, self._user = self._user, _ENDED
        # The user usually holds this transaction too: letting go of it
        # leaves no cycle, so both are freed at once, without waiting for
        # the garbage collector.
        user.transactionTerminated(self)

    # Named one-shot timers, all cancelled on termination. A timer calls
    # the method named fn with args: a name, not a bound method, and never
    # a closure. Tens of thousands of transactions wait out 64*T1 under
    # load, and every object they hold is work for the cyclic garbage
    # collector (a timer of strings, a float and no arguments is none).
    #
    # They share one clock call (the "wake"), armed no later than the
    # earliest of them: starting a timer arms it only when that one is due
    # sooner, and a timer that fires re-arms it for the earliest left. A
    # final response stops them all, and the wake with them; the next
    # timer started arms it afresh. An INVITE answered within T1 costs two
    # clock calls and one cancellation instead of five and four (A, B and
    # C were one call each).

    def _startTimer(self, name: str, delay: float, fn: str, *args: object) -> None:
        clock = self._clock
        when = clock.seconds() + delay
        self._timers[name] = (when, name, fn, args)
        wake = self._wake
        if wake is None or when < self._wakeAt:
            if wake is not None:
                wake.cancel()
            self._wake = clock.callLater(delay, self._wakeUp)
            self._wakeAt = when

    def _stopTimers(self) -> None:
        self._timers.clear()
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.cancel()

    def _wakeUp(self) -> None:
        # The timers due by the time the wake was armed for (the clock may
        # read one ulp earlier) run in the order they are due; one that a
        # timer starts now is due later.
        clock = self._clock
        now = max(clock.seconds(), self._wakeAt)
        self._wake = None
        self._wakeAt = now
        timers = self._timers
        try:
            while timers:
                when, name, fn, args = min(timers.values())
                if when > now:
                    break
                del timers[name]
                getattr(self, fn)(*args)
        finally:
            # A timer started above armed the wake for itself alone.
            if timers:
                when = min(timers.values())[0]
                wake = self._wake
                if wake is None or when < self._wakeAt:
                    if wake is not None:
                        wake.cancel()
                    now = clock.seconds()
                    delay = when - now
                    if now + delay > when:
                        # Never late by rounding: the clock adds delay to
                        # its own time, and Timer F must go off at 64*T1.
                        delay = math.nextafter(delay, 0.0)
                    self._wake = clock.callLater(max(0.0, delay), self._wakeUp)
                    self._wakeAt = when

    def _after(self, name: str, delay: float, fn: str) -> None:
        # Zero-length timers (reliable transports) end at once.
        if delay <= 0:
            getattr(self, fn)()
        else:
            self._startTimer(name, delay, fn)


class ServerTransaction(_Transaction):
    """
    The proxy's transaction towards the previous hop (§17.2).

    @ivar lastResponse: the last response sent, repeated on retransmissions.
    @ivar request: the request; released once a final response is sent
        (retransmissions are answered with C{lastResponse}).
    """

    __slots__ = ("request", "lastResponse")

    def __init__(
        self,
        clock: IReactorTime,
        request: SIPRequest,
        peer: Peer,
        send: Send,
        user: ITransactionUser,
    ) -> None:
        super().__init__(clock, request, peer, send)
        self._user = user
        self.request: SIPRequest | None = request
        self.lastResponse: bytes | None = None
        if self.isInvite:
            self.state = State.PROCEEDING
            # §16.2: a proxy answers INVITE with 100 Trying so the previous
            # hop stops retransmitting.
            self._transmit(responseBytes(request, 100))
        else:
            self.state = State.TRYING

    def _transmit(self, data: bytes) -> None:
        self.lastResponse = data
        self._send(data, self.peer)

    def requestRetransmitted(self) -> None:
        """
        The same request arrived again: repeat the last response, if any.
        """
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.lastResponse:
            self._send(self.lastResponse, self.peer)

    def respond(self, response: SIPResponse) -> None:
        """
        Send C{response} to the previous hop, if the state allows it.
        """
        code = response.code
        if self.state is State.ACCEPTED:
            # RFC 6026: further 2xx (retransmissions, forks) pass through.
            if 200 <= code < 300:
                self._send(response.toBytes(), self.peer)
            return
        if self.state not in (State.TRYING, State.PROCEEDING):
            return
        self._transmit(response.toBytes())
        if code < 200:
            self.state = State.PROCEEDING
            return
        self.request = None
        if self.isInvite and code < 300:
            self.state = State.ACCEPTED
            self._startTimer("L", 64 * T1, "_terminate")
        elif self.isInvite:
            self.state = State.COMPLETED
            if not self.peer.reliable:
                self._startTimer("G", T1, "_retransmitResponse", T1)
            self._startTimer("H", 64 * T1, "_timerH")
        else:
            self.state = State.COMPLETED
            self._after("J", 0 if self.peer.reliable else 64 * T1, "_terminate")

    def _retransmitResponse(self, interval: float) -> None:
        if self.state is State.COMPLETED and self.lastResponse:
            self._send(self.lastResponse, self.peer)
            interval = min(2 * interval, T2)
            self._startTimer("G", interval, "_retransmitResponse", interval)

    def _timerH(self) -> None:
        self.log.info("no ACK for a final response to an INVITE from {peer}", peer=self.peer)
        self._terminate()

    def ackReceived(self) -> None:
        """
        The ACK for a non-2xx final response arrived (INVITE only).
        """
        if self.state is State.COMPLETED:
            self.state = State.CONFIRMED
            self._stopTimers()  # G and H
            self._after("I", 0 if self.peer.reliable else T4, "_terminate")


class ClientTransaction(_Transaction):
    """
    The proxy's transaction towards the next hop (§17.1).

    @param user: told of responses, timeouts and Timer C.
    @param timerC: for INVITE, run Timer C (§16.8).
    @ivar request: the request; released once a final response arrived
        (what a waiting transaction needs is kept as bytes).
    """

    __slots__ = ("request", "provisionalSeen", "_timerC", "_data", "_ack")

    _user: IClientTransactionUser

    def __init__(
        self,
        clock: IReactorTime,
        request: SIPRequest,
        peer: Peer,
        send: Send,
        user: IClientTransactionUser,
        timerC: bool = False,
    ) -> None:
        super().__init__(clock, request, peer, send)
        self._user = user
        self.request: SIPRequest | None = request
        self._timerC = timerC and self.isInvite
        self._data = request.toBytes()
        self.provisionalSeen = False
        self._ack: bytes | None = None

    def start(self) -> None:
        """
        Send the request and arm the retransmission and timeout timers.
        """
        self.state = State.CALLING if self.isInvite else State.TRYING
        self._send(self._data, self.peer)
        if not self.peer.reliable:
            self._startTimer("A", T1, "_retransmit", T1)
        self._startTimer("B", 64 * T1, "_timedOut", 408)
        if self._timerC:
            self._startTimer("C", TIMER_C, "_fireTimerC")

    def _fireTimerC(self) -> None:
        self._user.transactionTimerC(self)

    def _retransmit(self, interval: float) -> None:
        if self.state not in (State.CALLING, State.TRYING, State.PROCEEDING):
            return
        self._send(self._data, self.peer)
        if self.isInvite:
            interval = 2 * interval
        elif self.state is State.PROCEEDING:
            interval = T2
        else:
            interval = min(2 * interval, T2)
        self._startTimer("A", interval, "_retransmit", interval)

    def _timedOut(self, code: int) -> None:
        if self.state in (State.CALLING, State.TRYING, State.PROCEEDING):
            self._user.transactionTimedOut(self, code)
            self._terminate()

    def transportFailed(self) -> None:
        """
        The request could not be sent (connection refused, unreachable).
        """
        self._timedOut(503)

    def abandon(self) -> None:
        """
        Stop waiting for a final response (RFC 3261 §9.1: none came 64*T1
        after the CANCEL): the transaction ends without a timeout report,
        and a response still to come finds no transaction.
        """
        if self.state in (State.CALLING, State.TRYING, State.PROCEEDING):
            self._terminate()

    def responseReceived(self, response: SIPResponse) -> None:
        """
        A response to this transaction's request arrived from the next hop.
        """
        code = response.code
        state = self.state
        if state is State.COMPLETED:
            if self._ack is not None:
                self._send(self._ack, self.peer)  # the final was retransmitted
            return
        if state is State.ACCEPTED:
            if 200 <= code < 300:
                self._user.transactionResponse(self, response)
            return
        if state not in (State.CALLING, State.TRYING, State.PROCEEDING):
            return
        if code < 200:
            self.provisionalSeen = True
            if self.isInvite:
                # A provisional response stops retransmissions and Timer B;
                # Timer C (the proxy's) now bounds the wait (§16.7 step 2).
                # The wake stays armed for Timer A, soon: the final response
                # often comes first, and a wake moved to Timer C and then
                # cancelled stays on the clock, dead, for 181 s.
                self._timers.clear()  # A, B and C
                if self._timerC:
                    self._startTimer("C", TIMER_C, "_fireTimerC")
            self.state = State.PROCEEDING
            self._user.transactionResponse(self, response)
            return
        request = self.request
        assert request is not None
        self.request = None
        self._data = b""
        self._stopTimers()  # A, B and C
        if self.isInvite and code < 300:
            self.state = State.ACCEPTED
            self._startTimer("M", 64 * T1, "_terminate")
            self._user.transactionResponse(self, response)
        elif self.isInvite:
            self.state = State.COMPLETED
            self._ack = buildACK(request, response).toBytes()
            self._send(self._ack, self.peer)
            self._user.transactionResponse(self, response)
            self._after("D", 0 if self.peer.reliable else 32.0, "_terminate")
        else:
            self.state = State.COMPLETED
            self._user.transactionResponse(self, response)
            self._after("K", 0 if self.peer.reliable else T4, "_terminate")


def hopByHopRequest(request: SIPRequest, method: str,
                    response: SIPResponse | None = None) -> SIPRequest:
    """
    A request about C{request} for the same next hop: the ACK for a non-2xx
    final response (§17.1.1.3) or a CANCEL (§9.1). It has the request's
    Request-URI, top Via (so the same branch), From, Call-ID, Route and CSeq
    number; the To is the response's (with its tag) when given, else the
    request's.
    """
    def field(value: str) -> bytes:
        return value.encode("utf-8", "surrogateescape")

    to = (response or request).getHeader("To")
    lines = [
        method.encode("ascii") + b" " + field(request.uriText) + b" SIP/2.0",
        b"Via: " + field(request.topVia.text),
        b"From: " + field(request.getHeader("From") or ""),
        b"To: " + field(to or ""),
        b"Call-ID: " + field(request.callID),
        b"CSeq: %d " % request.cseq.number + method.encode("ascii"),
        *(b"Route: " + field(route) for route in request.getHeaderValues("Route")),
        b"Max-Forwards: 70",
        b"Content-Length: 0",
    ]
    message = parseMessage(b"\r\n".join(lines) + b"\r\n\r\n")
    assert isinstance(message, SIPRequest)
    return message


def buildACK(request: SIPRequest, response: SIPResponse) -> SIPRequest:
    """
    The hop-by-hop ACK for a non-2xx final response (§17.1.1.3).
    """
    return hopByHopRequest(request, "ACK", response)
