"""
SIP routing survives a restart of the gateway (issue 16 item 1): a phone
(sipp) registers through the gateway to Kamailio with Path; the gateway is
SIGKILLed and started again with the same store; Kamailio's requests to the
phone (a new call, the far end's BYE of a call set up before the kill) reach
the phone instead of being refused with 403 until it registers again.

The gateway saves its routes at most every half second: each test waits
until the route is in the store (read directly from its SQLite file) before
killing it, as a crash after the periodic write would find it.

A phone's BYE retransmitted across the restart (as a phone does while the
gateway is down) reaches the new gateway while it still reads the saved
calls back: the call must end, not come back with the restore and leave
both users on the phone until the watchdog (found by bench/soak.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid

from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort
from sipxmpp.testing.process import SharedServer
from sipxmpp.testing.sipp import SippProcess
from tests.integration.test_proxy import (
    DOMAIN,
    ProxyTestCase,
    Stack,
    aor,
    expectState,
    received,
    sentBy,
)

WAIT = 10.0


def savedDialogs(gateway: GatewayServer, user: str) -> int:
    """
    How many dialogs of C{user} the gateway saved.
    """
    path = os.path.join(gateway.baseDir, "store.sqlite")
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
        [(count,)] = db.execute("SELECT count(*) FROM dialogs WHERE aor = ?",
                                (aor(user),)).fetchall()
    return int(count)


class Phone:
    """
    A caller written out by hand over UDP on loopback, so that the test
    decides when its BYE goes and how often it is retransmitted.
    """

    def __init__(self, user: str, port: int, gateway: str) -> None:
        self.user = user
        self.port = port
        host, gwPort = gateway.rsplit(":", 1)
        self.gateway = (host, int(gwPort))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, port))

    def close(self) -> None:
        self.sock.close()

    def send(self, lines: list[str], body: str = "") -> None:
        data = "\r\n".join([*lines, f"Content-Length: {len(body.encode())}", "", body])
        self.sock.sendto(data.encode(), self.gateway)

    def receive(self, timeout: float) -> tuple[str, dict[str, list[str]]] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65535)
        except TimeoutError:
            return None
        head = data.decode("utf-8", "replace").partition("\r\n\r\n")[0].split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return head[0], headers

    def call(self, callee: str, ack: bool = True) -> Call:
        """
        INVITE C{callee} through the gateway until answered; ACK the 200
        through the route set it gives (unless not C{ack}: a caller that
        gave up, or never got the answer).
        """
        call = Call(self, callee)
        sdp = (f"v=0\r\no=- 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\n"
               "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\n")
        self.send([f"INVITE sip:{callee}@{DOMAIN} SIP/2.0", *call.common("INVITE", 1),
                   f"Contact: <sip:{self.user}@{LOOPBACK}:{self.port}>",
                   "Content-Type: application/sdp"], sdp)
        deadline = time.monotonic() + WAIT
        while not call.remoteTag and time.monotonic() < deadline:
            got = self.receive(deadline - time.monotonic())
            if got is None:
                break
            start, headers = got
            if headers.get("call-id") != [call.callID] or start.startswith("SIP/2.0 1"):
                continue
            assert start.startswith("SIP/2.0 200"), start
            call.remoteTag = headers["to"][0].rsplit("tag=", 1)[1]
            call.remoteTarget = headers["contact"][0].strip("<>").split(">")[0]
            recordRoutes = [r.strip() for v in headers.get("record-route", [])
                            for r in v.split(",")]
            call.routes = list(reversed(recordRoutes))
        assert call.remoteTag, f"{self.user}: the call to {callee} was not answered"
        if ack:
            self.send([f"ACK {call.remoteTarget} SIP/2.0", *call.common("ACK", 1),
                       *call.route()])
        return call


class Call:
    """
    One dialog of a L{Phone}, as its caller.
    """

    def __init__(self, phone: Phone, callee: str) -> None:
        self.phone = phone
        self.callee = callee
        self.callID = f"{uuid.uuid4().hex}@{LOOPBACK}"
        self.tag = uuid.uuid4().hex[:10]
        self.remoteTag = ""
        self.remoteTarget = ""
        self.routes: list[str] = []

    def common(self, method: str, cseq: int, branch: str | None = None) -> list[str]:
        phone = self.phone
        toTag = f";tag={self.remoteTag}" if self.remoteTag else ""
        return [f"Via: SIP/2.0/UDP {LOOPBACK}:{phone.port};branch=z9hG4bK"
                f"{branch or uuid.uuid4().hex[:12]};rport",
                "Max-Forwards: 70",
                f"From: <sip:{phone.user}@{DOMAIN}>;tag={self.tag}",
                f"To: <sip:{self.callee}@{DOMAIN}>{toTag}",
                f"Call-ID: {self.callID}",
                f"CSeq: {cseq} {method}"]

    def route(self) -> list[str]:
        return [f"Route: {r}" for r in self.routes]

    def hangUp(self, interval: float = 0.5, timeout: float = WAIT) -> str:
        """
        Send a BYE, and the same again every C{interval} seconds (a
        retransmission: the same branch) until a final answer; return its
        status line.
        """
        bye = [f"BYE {self.remoteTarget} SIP/2.0",
               *self.common("BYE", 2, uuid.uuid4().hex[:12]), *self.route()]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.phone.send(bye)
            got = self.phone.receive(interval)
            while got is not None:
                start, headers = got
                if (headers.get("call-id") == [self.callID] and headers.get("cseq") == ["2 BYE"]
                        and not start.startswith("SIP/2.0 1")):
                    return start
                got = self.phone.receive(0.001)
        return "no final answer"


def savedRoutes(gateway: GatewayServer) -> list[tuple[str, str, str]]:
    """
    The routes to the phones the gateway saved: (kind, AoR, contact).
    """
    path = os.path.join(gateway.baseDir, "store.sqlite")
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
        rows = db.execute("SELECT kind, aor, contact FROM phone_routes").fetchall()
    return [(str(k), str(a), str(c)) for k, a, c in rows]


class RestartRoutingTests(ProxyTestCase):
    """
    One Kamailio and one gateway in Path mode; each test kills and starts
    the gateway once and uses its own users.
    """

    shared = SharedServer(Stack)

    def waitSaved(self, kind: str, contact: str) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            saved = savedRoutes(self.gateway)
            if any(k == kind and c == contact for k, _, c in saved):
                return
            if time.monotonic() > deadline:
                self.fail(f"{kind} route {contact} never reached the store: {saved}")
            time.sleep(0.1)

    def twoCalls(self, caller: str, callee: str) -> tuple[SippProcess, Phone]:
        """
        Both users registered through the gateway; the callee's phone
        (sipp) answers two calls; the caller's phone is a L{Phone}.
        """
        calleePort = self.registerThroughGateway(callee)
        callerPort = self.registerThroughGateway(caller)
        uas = self.sipp.answer(callee, localPort=calleePort, calls=2)
        phone = Phone(caller, callerPort, self.gateway.address)
        self.addCleanup(phone.close)
        return uas, phone

    def restart(self) -> None:
        """
        SIGKILL the gateway and start it again on the same ports and store.
        """
        gw = self.gateway
        address = gw.address
        gw.kill()
        gw.start()
        self.assertEqual(gw.address, address, "the restarted gateway moved: Path is stale")

    def test_inboundCallAfterKill(self) -> None:
        """
        A phone registered before the kill gets a call from Kamailio after
        the restart, through the gateway, without registering again.
        """
        gw = self.gateway
        port = self.registerThroughGateway("ivan")
        expectState(gw, "ivan", "online")
        self.waitSaved("registration", f"sip:ivan@{LOOPBACK}:{port};transport=UDP")
        self.restart()
        expectState(gw, "ivan", "online")

        uas = self.sipp.answer("ivan", localPort=port, traceMessages=True)
        call = self.sipp.start("uac", self.registrar.address, service="ivan",
                               keys={"domain": DOMAIN, "caller": "outside-r1"},
                               extraArgs=["-d", "1000"], waitBound=False)
        expectState(gw, "ivan", "on-the-phone")
        self.assertSucceeded(call.wait())
        answered = uas.wait()
        self.assertSucceeded(answered)
        expectState(gw, "ivan", "online")
        [invite] = received(answered, "INVITE ")
        self.assertEqual([sentBy(v) for v in invite.values("Via")][:2],
                         [gw.address, self.registrar.address])

    def test_farEndByeAfterKill(self) -> None:
        """
        A call from Kamailio to a phone is up when the gateway is killed;
        after the restart the far end's BYE, sent to the phone's dialog
        contact (not its registered one), reaches the phone through the
        gateway, and the callee goes back online.
        """
        gw = self.gateway
        port = freeSIPPort()
        result = self.sipp.register(gw.address, "judy", expires=300, localPort=port,
                                    contactUser="x-judy")
        self.assertTrue(result.ok, result.describe())
        expectState(gw, "judy", "online")
        uas = self.sipp.answer("judy", localPort=port, traceMessages=True)
        call = self.sipp.start("uac", self.registrar.address, service="judy",
                               keys={"domain": DOMAIN, "caller": "outside-r2"},
                               extraArgs=["-d", "8000"], waitBound=False)
        expectState(gw, "judy", "on-the-phone")
        dialogContact = f"sip:judy@{LOOPBACK}:{port};transport=UDP"
        self.waitSaved("dialog", dialogContact)
        self.assertIn(("registration", aor("judy"), f"sip:x-judy@{LOOPBACK}:{port};transport=UDP"),
                      savedRoutes(gw))
        self.restart()

        self.assertSucceeded(call.wait(timeout=30))
        answered = uas.wait(timeout=30)
        self.assertSucceeded(answered)
        [bye] = received(answered, "BYE ")
        self.assertTrue(bye.startLine.startswith(f"BYE {dialogContact}"), bye)
        self.assertEqual([sentBy(v) for v in bye.values("Via")][:2],
                         [gw.address, self.registrar.address])
        expectState(gw, "judy", "online")

    def test_byeRetransmittedAcrossRestart(self) -> None:
        """
        nina calls lena, both behind the gateway; the gateway is killed
        with the call up and saved. nina's phone hangs up while the
        gateway is down and retransmits its BYE every 5 ms, so copies
        arrive as soon as the new gateway listens, while it still reads
        the saved call back. The BYE gets its 200 from lena, and both are
        online again, not held on the phone by the restored call.
        """
        gw = self.gateway
        lenaPort = self.registerThroughGateway("lena")
        ninaPort = self.registerThroughGateway("nina")
        uas = self.sipp.answer("lena", localPort=lenaPort)
        nina = Phone("nina", ninaPort, gw.address)
        self.addCleanup(nina.close)
        call = nina.call("lena")
        expectState(gw, "nina", "on-the-phone")
        expectState(gw, "lena", "on-the-phone")
        deadline = time.monotonic() + WAIT
        while savedDialogs(gw, "nina") < 1 or savedDialogs(gw, "lena") < 1:
            self.assertLess(time.monotonic(), deadline, "the call never reached the store")
            time.sleep(0.1)
        gw.kill()
        answers: list[str] = []
        hangUp = threading.Thread(
            target=lambda: answers.append(call.hangUp(interval=0.005, timeout=60)))
        hangUp.start()
        try:
            gw.start()
        finally:
            hangUp.join(70)
        self.assertEqual(answers, ["SIP/2.0 200 OK"])
        self.assertSucceeded(uas.wait(timeout=30))
        expectState(gw, "nina", "online")
        expectState(gw, "lena", "online")

    def test_callEndedJustBeforeKill(self) -> None:
        """
        olga calls pete twice; the first call ends while the second goes
        on, and the gateway is killed 0.2 s later, within its half-second
        write interval. After the restart the second call ends as usual,
        and both are online: the first call's end was written at once, so
        the restart did not bring back a call nothing would end.
        """
        gw = self.gateway
        uas, olga = self.twoCalls("olga", "pete")
        first = olga.call("pete")
        expectState(gw, "olga", "on-the-phone")
        deadline = time.monotonic() + WAIT
        while savedDialogs(gw, "olga") < 1:
            self.assertLess(time.monotonic(), deadline, "the call never reached the store")
            time.sleep(0.1)
        second = olga.call("pete")
        self.assertEqual(first.hangUp(), "SIP/2.0 200 OK")
        time.sleep(0.2)
        gw.kill()
        gw.start()
        expectState(gw, "olga", "on-the-phone")
        self.assertEqual(second.hangUp(), "SIP/2.0 200 OK")
        answered = uas.wait(timeout=30)
        self.assertEqual((answered.exitCode, answered.successful, answered.failed), (0, 2, 0),
                         answered.describe())
        expectState(gw, "olga", "online")
        expectState(gw, "pete", "online")

    def test_answeredCallNeverAcknowledged(self) -> None:
        """
        rita calls quinn twice; she ACKs the first answer, not the second
        (a caller that gave up, or never got the 200: bench/soak.py's
        stuck pair after a Kamailio 408 under packet loss). After 64*T1
        the gateway ends the second call on both legs, and the first,
        ACKed through the gateway on both legs, stays up: both are still
        on the phone until rita hangs up, then online.
        """
        gw = self.gateway
        uas, rita = self.twoCalls("rita", "quinn")
        first = rita.call("quinn")
        rita.call("quinn", ack=False)
        expectState(gw, "rita", "on-the-phone")
        expectState(gw, "quinn", "on-the-phone")

        def saved() -> tuple[int, int]:
            return savedDialogs(gw, "rita"), savedDialogs(gw, "quinn")

        deadline = time.monotonic() + WAIT
        while saved() != (2, 2):
            self.assertLess(time.monotonic(), deadline, f"both calls never saved: {saved()}")
            time.sleep(0.1)
        deadline = time.monotonic() + 32 + 3 * WAIT
        while saved() != (1, 1):  # not (0, 0): the ACKed call stays
            self.assertLess(time.monotonic(), deadline, f"the unACKed call stayed: {saved()}")
            time.sleep(0.2)
        expectState(gw, "rita", "on-the-phone")
        expectState(gw, "quinn", "on-the-phone")
        self.assertEqual(first.hangUp(), "SIP/2.0 200 OK")
        expectState(gw, "rita", "online")
        expectState(gw, "quinn", "online")
        result = uas.wait(timeout=60)
        self.assertEqual((result.successful, result.failed), (1, 1), result.describe())
