"""
Tests for L{sipxmpp.ops.health}: the readiness checks and the upstream's
OPTIONS keepalive.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.health import (
    HEALTH_AOR,
    CheckResult,
    UpstreamProbe,
    lagCheck,
    storeCheck,
    xmppCheck,
)
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.wire.message import SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.store.errors import StoreUnavailable

UPSTREAM = Peer("UDP", "127.0.0.1", 5070)
LOCAL = Peer("UDP", "127.0.0.1", 5060)


def result(d: Any) -> CheckResult:
    if isinstance(d, Deferred):
        out: list[CheckResult] = []
        d.addCallback(out.append)
        [d] = out
    assert isinstance(d, CheckResult)
    return d


class StoreCheckTests(SynchronousTestCase):
    def test_answers(self) -> None:
        asked: list[str] = []

        def lookup(aor: str) -> Deferred[None]:
            asked.append(aor)
            return succeed(None)

        self.assertEqual(result(storeCheck(lookup)()), CheckResult(True, "a query answered"))
        self.assertEqual(asked, [HEALTH_AOR])

    def test_fails(self) -> None:
        check = storeCheck(lambda aor: fail(StoreUnavailable("database is locked")))
        self.assertEqual(result(check()),
                         CheckResult(False, "query failed: database is locked"))


class XMPPCheckTests(SynchronousTestCase):
    def test_share(self) -> None:
        clock = Clock()
        clock.advance(1000)
        states = {"a": "connected", "b": "connected", "c": "failed: authentication: x"}
        check = xmppCheck(lambda: states, clock, lambda: 0.0)
        self.assertEqual(result(check()), CheckResult(True, "1 of 3 sessions failing"))
        states["b"] = "reconnecting: Connection refused"
        self.assertEqual(result(check()),
                         CheckResult(False, "2 of 3 sessions failing (more than 50%)"))

    def test_noSessions(self) -> None:
        self.assertTrue(result(xmppCheck(dict, Clock(), lambda: None)()).ok)

    def test_graceAfterStart(self) -> None:
        """
        Right after a start every session reconnects at once: not held
        against readiness for a minute.
        """
        clock = Clock()
        clock.advance(100)
        check = xmppCheck(lambda: {"a": "reconnecting"}, clock, lambda: 90.0)
        self.assertEqual(result(check()), CheckResult(True, "1 of 1 sessions failing (starting)"))
        clock.advance(60)
        self.assertFalse(result(check()).ok)


class LagCheckTests(SynchronousTestCase):
    def test_lag(self) -> None:
        lag = [0.02]
        check = lagCheck(lambda: lag[0])
        self.assertEqual(result(check()), CheckResult(True, "lag 0.020 s (limit 1 s)"))
        lag[0] = 1.5
        self.assertFalse(result(check()).ok)


class FakeProxy:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Peer, Any]] = []
        self.broken = False

    def sendRequest(self, data: bytes, target: Peer, user: Any) -> object:
        if self.broken:
            raise OSError("no route")
        self.sent.append((data, target, user))
        return object()

    def answer(self, index: int = -1, code: int = 200) -> None:
        data, _, user = self.sent[index]
        response = parseMessage(
            f"SIP/2.0 {code} OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
            "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        assert isinstance(response, SIPResponse)
        user.transactionResponse(object(), response)


class UpstreamProbeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.proxy = FakeProxy()
        self.probe = UpstreamProbe(self.clock, self.proxy.sendRequest, UPSTREAM, LOCAL,
                                   interval=10, timeout=5, misses=3)  # fmt: skip
        self.probe.startService()
        self.addCleanup(self.probe.stopService)

    def test_request(self) -> None:
        """
        An OPTIONS to the upstream, at start and every interval; the proxy
        adds the Via.
        """
        [(data, target, _)] = self.proxy.sent
        self.assertEqual(target, UPSTREAM)
        text = data.decode()
        self.assertTrue(text.startswith("OPTIONS sip:127.0.0.1:5070 SIP/2.0\r\n"), text)
        self.assertIn("\r\nCSeq: 1 OPTIONS\r\n", text)
        self.assertIn("\r\nFrom: <sip:sipxmpp@127.0.0.1:5060>;tag=", text)
        self.assertTrue(text.endswith("Content-Length: 0\r\n\r\n"))
        self.clock.advance(10)
        self.assertEqual(len(self.proxy.sent), 2)
        self.assertNotEqual(self.proxy.sent[0][0], self.proxy.sent[1][0])

    def test_answered(self) -> None:
        """
        Any answer within the bound counts, whatever its code.
        """
        self.assertEqual(self.probe.check(),
                         CheckResult(True, "udp:127.0.0.1:5070: no answer yet (1 keepalives sent)"))
        self.clock.advance(1)
        self.proxy.answer(code=404)
        self.clock.advance(3)
        self.assertEqual(self.probe.check(),
                         CheckResult(True, "udp:127.0.0.1:5070: answered 3 s ago"))

    def test_failsAfterMisses(self) -> None:
        """
        Three keepalives in a row unanswered within 5 s fail the check; one
        answer is enough to pass again.
        """
        for _ in range(3):  # Clock runs what a call schedules from the end of an advance
            self.clock.advance(5)
        self.assertTrue(self.probe.check().ok)
        self.clock.advance(5)
        self.clock.advance(5)
        check = self.probe.check()
        self.assertFalse(check.ok)
        self.assertIn("3 keepalives in a row unanswered within 5 s (no answer)", check.detail)
        # An answer after the bound is too late.
        self.proxy.answer(0)
        self.assertFalse(self.probe.check().ok)
        self.clock.advance(5)
        self.proxy.answer(-1)
        self.assertTrue(self.probe.check().ok)

    def test_timedOutTransaction(self) -> None:
        _, _, user = self.proxy.sent[0]
        user.transactionTimedOut(object(), 503)
        self.assertEqual((self.probe.misses, self.probe.lastProblem), (1, "no answer (503)"))

    def test_sendFails(self) -> None:
        self.proxy.broken = True
        for _ in range(4):
            self.clock.advance(10)
        self.assertFalse(self.probe.check().ok)
        self.assertIn("cannot send: no route", self.probe.check().detail)

    def test_stop(self) -> None:
        self.probe.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
