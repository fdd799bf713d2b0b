"""
Tests for L{sipxmpp.sip.core.transaction}: RFC 3261 §17 timers and state, on a
L{Clock}, with no sockets.
"""

from __future__ import annotations

import gc

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.transaction import (
    T1,
    T2,
    T4,
    TIMER_C,
    ClientTransaction,
    IClientTransactionUser,
    ServerTransaction,
    State,
    buildACK,
)
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.responses import makeResponse

UDP = Peer("UDP", "127.0.0.1", 5070)
TCP = Peer("TCP", "127.0.0.1", 5070)


def request(method: str = "INVITE") -> SIPRequest:
    data = (
        f"{method} sip:bob@example.test SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "Route: <sip:127.0.0.1:5070;lr>\r\n"
        "From: <sip:alice@example.test>;tag=a1\r\n"
        "To: <sip:bob@example.test>\r\n"
        "Call-ID: call-1\r\n"
        f"CSeq: 7 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    message = parseMessage(data)
    assert isinstance(message, SIPRequest)
    return message


def response(req: SIPRequest, code: int) -> SIPResponse:
    return makeResponse(req, code, toTag=None if code == 100 else "b1")


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Peer]] = []

    def __call__(self, data: bytes, peer: Peer) -> None:
        self.sent.append((data, peer))

    def firstLines(self) -> list[bytes]:
        # Status lines without the reason phrase: b"SIP/2.0 486".
        return [data.split(b"\r\n", 1)[0].rsplit(b" ", 1)[0] if data.startswith(b"SIP/")
                else data.split(b"\r\n", 1)[0] for data, _ in self.sent]


@implementer(IClientTransactionUser)
class User:
    """
    Records what a transaction tells its user.
    """

    def __init__(self) -> None:
        self.terminated: list[object] = []
        self.responses: list[int] = []
        self.timeouts: list[int] = []
        self.timerC = 0

    def transactionTerminated(self, transaction: object) -> None:
        self.terminated.append(transaction)

    def transactionResponse(self, transaction: object, response: SIPResponse) -> None:
        self.responses.append(response.code)

    def transactionTimedOut(self, transaction: object, code: int) -> None:
        self.timeouts.append(code)

    def transactionTimerC(self, transaction: object) -> None:
        self.timerC += 1


class ServerTransactionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.wire = Wire()
        self.user = User()

    @property
    def terminated(self) -> int:
        return len(self.user.terminated)

    def server(self, method: str = "INVITE", peer: Peer = UDP) -> ServerTransaction:
        self.req = request(method)
        tx = ServerTransaction(self.clock, self.req, peer, self.wire, self.user)
        self.addCleanup(lambda: self.assertTrue(all(t is tx for t in self.user.terminated)))
        return tx

    def test_inviteSends100AndAbsorbsRetransmissions(self) -> None:
        tx = self.server()
        self.assertEqual(self.wire.firstLines(), [b"SIP/2.0 100"])
        tx.respond(response(self.req, 180))
        tx.requestRetransmitted()
        self.assertEqual(self.wire.firstLines()[1:], [b"SIP/2.0 180"] * 2)
        self.assertEqual(tx.state, State.PROCEEDING)

    def test_invite2xxAccepted(self) -> None:
        """
        RFC 6026: after a 2xx, INVITE retransmissions are absorbed, more
        2xx are forwarded, and the transaction ends after 64*T1.
        """
        tx = self.server()
        tx.respond(response(self.req, 200))
        self.assertEqual(tx.state, State.ACCEPTED)
        tx.requestRetransmitted()
        tx.respond(response(self.req, 180))
        tx.respond(response(self.req, 200))
        self.assertEqual(self.wire.firstLines(), [b"SIP/2.0 100"] + [b"SIP/2.0 200"] * 2)
        self.clock.advance(64 * T1)
        self.assertEqual((tx.state, self.terminated), (State.TERMINATED, 1))

    def test_inviteFailureRetransmittedUntilACK(self) -> None:
        tx = self.server()
        tx.respond(response(self.req, 486))
        self.assertEqual(tx.state, State.COMPLETED)
        self.clock.pump([T1, 2 * T1])  # Timer G: T1, then 2*T1
        self.assertEqual(self.wire.firstLines().count(b"SIP/2.0 486"), 3)
        tx.requestRetransmitted()
        self.assertEqual(self.wire.firstLines().count(b"SIP/2.0 486"), 4)
        tx.ackReceived()
        self.assertEqual(tx.state, State.CONFIRMED)
        self.clock.advance(T2 * 10)
        self.assertEqual(self.wire.firstLines().count(b"SIP/2.0 486"), 4)
        self.assertEqual((tx.state, self.terminated), (State.TERMINATED, 1))

    def test_timerGCapsAtT2AndTimerHEnds(self) -> None:
        tx = self.server()
        tx.respond(response(self.req, 404))
        times = []
        for _ in range(200):
            before = len(self.wire.sent)
            self.clock.advance(0.25)
            if len(self.wire.sent) > before:
                times.append(self.clock.seconds())
        # G doubles from T1 and caps at T2; H ends it at 64*T1 = 32 s.
        intervals = [round(b - a, 2) for a, b in zip([0.0, *times], times, strict=False)]
        self.assertEqual(intervals[:4], [0.5, 1.0, 2.0, 4.0])
        self.assertEqual(set(intervals[4:]), {4.0})
        self.assertEqual(tx.state, State.TERMINATED)
        self.assertTrue(times[-1] < 64 * T1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reliableNoRetransmission(self) -> None:
        tx = self.server(peer=TCP)
        tx.respond(response(self.req, 486))
        self.clock.advance(10)
        self.assertEqual(len(self.wire.sent), 2)
        tx.ackReceived()
        self.assertEqual((tx.state, self.terminated), (State.TERMINATED, 1))

    def test_nonInvite(self) -> None:
        tx = self.server("REGISTER")
        self.assertEqual(self.wire.sent, [])  # no 100 for non-INVITE
        tx.requestRetransmitted()
        self.assertEqual(self.wire.sent, [])
        tx.respond(response(self.req, 200))
        tx.requestRetransmitted()
        tx.respond(response(self.req, 500))  # too late: ignored
        self.assertEqual(self.wire.firstLines(), [b"SIP/2.0 200"] * 2)
        self.clock.advance(64 * T1)
        self.assertEqual(self.terminated, 1)

    def test_nonInviteReliableEndsAtOnce(self) -> None:
        tx = self.server("BYE", TCP)
        tx.respond(response(self.req, 200))
        self.assertEqual((tx.state, self.terminated), (State.TERMINATED, 1))


class ClientTransactionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.wire = Wire()
        self.user = User()
        self.responses = self.user.responses
        self.timeouts = self.user.timeouts

    @property
    def terminated(self) -> int:
        return len(self.user.terminated)

    @property
    def timerC(self) -> int:
        return self.user.timerC

    def client(self, method: str = "INVITE", peer: Peer = UDP) -> ClientTransaction:
        self.req = request(method)
        tx = ClientTransaction(self.clock, self.req, peer, self.wire, self.user, timerC=True)
        self.addCleanup(lambda: self.assertTrue(all(t is tx for t in self.user.terminated)))
        tx.start()
        return tx

    def test_inviteRetransmitsThenTimesOut(self) -> None:
        tx = self.client()
        self.clock.pump([T1, 2 * T1, 4 * T1])
        self.assertEqual(len(self.wire.sent), 4)
        self.clock.advance(64 * T1)
        self.assertEqual(self.timeouts, [408])
        self.assertEqual((tx.state, self.terminated), (State.TERMINATED, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_provisionalStopsRetransmissionsAndArmsTimerC(self) -> None:
        tx = self.client()
        tx.responseReceived(response(self.req, 100))
        tx.responseReceived(response(self.req, 180))
        self.clock.advance(64 * T1)
        self.assertEqual(len(self.wire.sent), 1)
        self.assertEqual(self.timeouts, [])
        self.assertEqual(self.responses, [100, 180])
        self.clock.advance(TIMER_C)
        self.assertEqual(self.timerC, 1)
        self.assertTrue(tx.provisionalSeen)

    def test_failureIsACKedHopByHop(self) -> None:
        tx = self.client()
        tx.responseReceived(response(self.req, 486))
        tx.responseReceived(response(self.req, 486))  # retransmission
        self.assertEqual(self.responses, [486])
        acks = [d for d, _ in self.wire.sent if d.startswith(b"ACK ")]
        self.assertEqual(len(acks), 2)
        ack = parseMessage(acks[0])
        assert isinstance(ack, SIPRequest)
        self.assertEqual(ack.topVia.branch, "z9hG4bK-1")
        self.assertEqual((ack.cseq.number, ack.cseq.method), (7, "ACK"))
        self.assertEqual(ack.toTag, "b1")
        self.assertEqual(ack.getHeaderValues("Route"), ["<sip:127.0.0.1:5070;lr>"])
        self.clock.advance(32)
        self.assertEqual((tx.state, self.terminated), (State.TERMINATED, 1))

    def test_2xxAcceptedForwardsRetransmissions(self) -> None:
        tx = self.client()
        tx.responseReceived(response(self.req, 200))
        tx.responseReceived(response(self.req, 200))
        tx.responseReceived(response(self.req, 180))
        self.assertEqual(self.responses, [200, 200])
        self.assertFalse(any(d.startswith(b"ACK ") for d, _ in self.wire.sent))
        self.clock.advance(64 * T1)
        self.assertEqual(self.terminated, 1)

    def test_nonInviteTimers(self) -> None:
        tx = self.client("REGISTER")
        self.clock.pump([T1, 2 * T1, 4 * T1, T2, T2])
        self.assertEqual(len(self.wire.sent), 6)
        tx.responseReceived(response(self.req, 100))
        before = len(self.wire.sent)
        self.clock.advance(T2)
        self.assertEqual(len(self.wire.sent), before + 1)
        tx.responseReceived(response(self.req, 200))
        self.clock.advance(T4)
        self.assertEqual(self.responses, [100, 200])
        self.assertEqual((tx.state, self.terminated), (State.TERMINATED, 1))
        self.assertEqual(self.timeouts, [])

    def test_oneClockCallPerTransaction(self) -> None:
        """
        Timers A, B and C share one call on the clock, armed for the
        earliest. A provisional response leaves it (it goes off for
        nothing at T1, then waits for Timer C); a final one moves it to
        the next timer.
        """
        tx = self.client()
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [T1])
        tx.responseReceived(response(self.req, 180))
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [T1])
        tx.responseReceived(response(self.req, 200))
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [64 * T1])
        self.clock.advance(64 * T1)
        self.assertEqual(len(self.wire.sent), 1)  # no retransmission
        self.assertEqual((tx.state, self.terminated), (State.TERMINATED, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ringingMovesTheWakeToTimerC(self) -> None:
        """
        After a provisional response the wake still goes off at T1, finds
        nothing due, and waits for Timer C, which still fires on time.
        """
        tx = self.client()
        tx.responseReceived(response(self.req, 180))
        self.clock.advance(T1)
        self.assertEqual(len(self.wire.sent), 1)  # Timer A was stopped
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [TIMER_C])
        self.clock.advance(TIMER_C - T1 - 0.01)
        self.assertEqual(self.timerC, 0)
        self.clock.advance(0.01)
        self.assertEqual(self.timerC, 1)
        tx.responseReceived(response(self.req, 487))
        self.clock.advance(32)
        self.assertEqual((tx.state, self.terminated), (State.TERMINATED, 1))

    def test_waitingTimerIsNoGarbageCollectorWork(self) -> None:
        """
        A transaction waiting out Timer M keeps that timer as plain values
        (its time, names, no arguments), which the garbage collector stops
        tracking: no bound method per waiting transaction.
        """
        tx = self.client()
        tx.responseReceived(response(self.req, 200))
        gc.collect()
        timers = list(tx._timers.values())
        self.assertEqual([t[1] for t in timers], ["M"])
        self.assertFalse(any(gc.is_tracked(t) for t in timers))
        self.clock.advance(64 * T1)
        self.assertEqual((tx.state, self.terminated), (State.TERMINATED, 1))

    def test_timerStartedByATimerKeepsEarlierOnes(self) -> None:
        """
        A retransmission that re-arms Timer A for later than Timer F still
        lets Timer F go off on time.
        """
        self.client("OPTIONS")
        self.clock.advance(64 * T1 - 0.25)  # Timer A due at 31.5, now re-armed for 35.5
        self.assertEqual(self.timeouts, [])
        self.clock.advance(0.25)
        self.assertEqual(self.timeouts, [408])

    def test_nonInviteTimeoutTimerF(self) -> None:
        self.client("OPTIONS")
        self.clock.advance(64 * T1 - 0.01)
        self.assertEqual(self.timeouts, [])
        self.clock.advance(0.01)
        self.assertEqual(self.timeouts, [408])

    def test_reliable(self) -> None:
        tx = self.client("INVITE", TCP)
        self.clock.advance(10)
        self.assertEqual(len(self.wire.sent), 1)
        tx.responseReceived(response(self.req, 603))
        self.assertEqual(tx.state, State.TERMINATED)

    def test_transportFailure(self) -> None:
        tx = self.client("INVITE", TCP)
        tx.transportFailed()
        tx.transportFailed()
        self.assertEqual(self.timeouts, [503])
        self.assertEqual(tx.state, State.TERMINATED)

    def test_timerCOnlyWhenAsked(self) -> None:
        self.req = request()
        tx = ClientTransaction(self.clock, self.req, UDP, self.wire, self.user)
        tx.start()
        tx.responseReceived(response(self.req, 180))
        self.clock.advance(TIMER_C + 1)
        self.assertEqual((self.timerC, tx.state), (0, State.PROCEEDING))

    def test_requestReleasedOnceFinal(self) -> None:
        # A transaction waiting out Timer D keeps the ACK as bytes, not the
        # request, and still answers a retransmitted final response.
        tx = self.client()
        self.assertIs(tx.request, self.req)
        tx.responseReceived(response(self.req, 486))
        self.assertIsNone(tx.request)
        tx.responseReceived(response(self.req, 486))
        self.assertEqual(self.wire.firstLines(), [b"INVITE sip:bob@example.test SIP/2.0",
                                                  b"ACK sip:bob@example.test SIP/2.0",
                                                  b"ACK sip:bob@example.test SIP/2.0"])


class ServerReleaseTests(SynchronousTestCase):
    def test_requestReleasedOnceFinal(self) -> None:
        user, wire = User(), Wire()
        req = request("BYE")
        tx = ServerTransaction(Clock(), req, UDP, wire, user)
        tx.respond(response(req, 180))
        self.assertIs(tx.request, req)
        tx.respond(response(req, 200))
        self.assertIsNone(tx.request)
        tx.requestRetransmitted()
        self.assertEqual(wire.firstLines(), [b"SIP/2.0 180", b"SIP/2.0 200", b"SIP/2.0 200"])


class BuildACKTests(SynchronousTestCase):
    def test_fields(self) -> None:
        req = request()
        ack = buildACK(req, makeResponse(req, 404, toTag="x9"))
        self.assertEqual((ack.method, ack.uriText), ("ACK", "sip:bob@example.test"))
        self.assertEqual(ack.callID, "call-1")
        self.assertEqual((ack.fromTag, ack.toTag), ("a1", "x9"))
        self.assertEqual(len(ack.vias), 1)
