"""
SIP routing survives a restart of the gateway (issue 16 item 1): a phone
(sipp) registers through the gateway to Kamailio with Path; the gateway is
SIGKILLed and started again with the same store; Kamailio's requests to the
phone (a new call, the far end's BYE of a call set up before the kill) reach
the phone instead of being refused with 403 until it registers again.

The gateway saves its routes at most every half second: each test waits
until the route is in the store (read directly from its SQLite file) before
killing it, as a crash after the periodic write would find it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time

from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort
from sipxmpp.testing.process import SharedServer
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
