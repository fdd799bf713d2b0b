"""
Direct TLS (XEP-0368) and a per-account XMPP server (issue 19, items 2
and 4), end to end with L{tests.integration.test_e2e}'s machinery: sipp
phones, Kamailio, the gateway and real Prosodys on 127.0.0.1.

- The gateway configured with C{[xmpp] server = tls:127.0.0.1:PORT}, a
  Prosody c2s port that speaks TLS from the first byte (nothing else is
  configured, so a login proves Direct TLS), carries a call: the user's
  client goes dnd during it and back after.
- A user on a foreign XMPP server (another Prosody, domain
  C{elsewhere.test}, reached only through its Direct TLS port) logs in
  there once the administrator sets the account's server on the running
  gateway, and shows the call there, while another user keeps the
  default server.

- A Direct TLS server whose certificate is not trusted, or not for the
  JID's domain, is refused: the session fails saying so.

DNS SRV: L{tests.integration.test_xmpp_srv} (a DNS server of its own on
loopback) and L{tests.unit.test_xmpp_endpoints} (a fake resolver).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.trial.unittest import TestCase
from twisted.words.protocols.jabber.jid import JID

from sipxmpp.testing.demo import Watcher
from sipxmpp.testing.ports import LOOPBACK, freeTCPPort
from sipxmpp.testing.process import SharedServer, requireBinaries
from sipxmpp.testing.prosody import ProsodyServer
from sipxmpp.testing.xmppprobe import login
from sipxmpp.xmpp.session import SessionSettings, XMPPSession
from tests.integration.test_e2e import (
    PHONE,
    READY,
    USERS,
    E2ETestCase,
    Stack,
    Watch,
    aor,
)
from tests.integration.test_xmpp_publisher import deferred, sleep

reactor: Any = _reactor
FOREIGN = "elsewhere.test"
ZOE_PASSWORD = "zoe-pw"


class DirectTLSStack(Stack):
    """
    The end-to-end stack with Prosody also listening for Direct TLS, and
    the gateway told to use only that port.
    """

    def __init__(self, provision: Iterable[str] = ()) -> None:
        super().__init__(provision)
        # Stack makes its Prosody; give it a Direct TLS port before start.
        self.prosody.directTLSPort = freeTCPPort()
        self.gatewaySettings[("xmpp", "server")] = f"tls:{LOOPBACK}:{self.prosody.directTLSPort}"


class DirectTLSTests(E2ETestCase):
    shared = SharedServer(lambda: DirectTLSStack(provision=["alice"]))

    @deferred
    async def test_outboundCallOverDirectTLS(self) -> None:
        """
        alice's session logs in over Direct TLS (the only port the gateway
        knows); her Psi-style client goes dnd during her call and gets her
        own status back after it.
        """
        self.assertIn(f"server = tls:{LOOPBACK}:", self.gateway.configText())
        await self.provisionedPhone("alice")
        outside = self.registerOutside("x-alice")
        uas = self.startPhone("uas", "x-alice", outside)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, "x-alice", "alice")
        await self.expectBusy("alice", mark)
        self.assertStillRunning(call, "alice was seen on the phone")
        await self.finished("alice's call", call)
        await self.finished("x-alice's phone", uas)
        await self.expectBack("alice", mark)
        await self.expectTelephony("alice", "online")
        self.assertGatewayResourceIdle("alice", mark)


class ForeignStack(Stack):
    """
    The end-to-end stack (the gateway's default: Prosody's STARTTLS port)
    and a second Prosody for C{elsewhere.test}, with a Direct TLS port,
    its certificate from the same CA.
    """

    def __init__(self, provision: Iterable[str] = ()) -> None:
        from sipxmpp.testing.prosody import ProsodyServer

        super().__init__(provision)
        self.foreign = ProsodyServer(domain=FOREIGN, ca=self.prosody.ca, directTLS=True,
                                     users={"zoe": ZOE_PASSWORD, "watcher": USERS["watcher"]})
        self.foreign.subscribe("zoe", "watcher")

    @property
    def running(self) -> bool:
        return super().running and self.foreign.running

    def start(self) -> None:
        self.foreign.start()
        super().start()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.foreign.stop()


class ForeignWatch(Watch):
    """
    The watcher account of the foreign server.
    """

    def __init__(self, test: E2ETestCase, prosody: Any) -> None:
        self.test = test
        self.probe = login(LOOPBACK, prosody.port, prosody.domain, "watcher", USERS["watcher"],
                           prosody.caFile, "watch")
        self.watcher = Watcher(self.probe)
        self.probe.sendPresence()
        self.watcher.start()


class PerAccountServerTests(E2ETestCase):
    shared = SharedServer(lambda: ForeignStack(provision=["bob"]))

    @deferred
    async def test_foreignUserSetOnTheRunningGateway(self) -> None:
        """
        zoe's JID is on elsewhere.test, which the gateway's default server
        does not serve: her login fails there. Given her own server
        (Direct TLS) with sipxmpp-admin account set-server, the running
        gateway logs her in there; her call shows on her gateway resource
        at elsewhere.test (dnd, then back), and bob, on the default
        server, stays logged in throughout.
        """
        assert isinstance(self.stack, ForeignStack)
        foreign = self.stack.foreign
        watch = ForeignWatch(self, foreign)
        self.addCleanup(watch.stop)
        await self.provisionedPhone("bob", rc="")
        self.gateway.admin("account", "add", aor("zoe"), f"zoe@{FOREIGN}", "--password-stdin",
                           stdin=ZOE_PASSWORD + "\n")
        zoePort = self.register("zoe")
        await self.expectStatus("zoe", "xmpp", lambda v: v.startswith(("failed", "reconnecting")),
                                "a failed login at the default server")
        server = f"tls:{LOOPBACK}:{foreign.directTLSPort}"
        out = self.gateway.admin("account", "set-server", aor("zoe"), server).stdout
        self.assertEqual(out, f"XMPP server of {aor('zoe')}: {server}\n")
        await self.expectStatus("zoe", "xmpp", lambda v: v == READY, repr(READY), timeout=30)
        full = f"zoe@{FOREIGN}/sipxmpp"
        await watch.expect(full, priority=-1, show=None)
        outside = self.registerOutside("x-zoe")
        uas = self.startPhone("uas", "x-zoe", outside)
        mark = watch.mark()
        call = self.startCall("uac", self.gateway.address, "x-zoe", "zoe", localPort=zoePort)
        await watch.expect(full, mark, show="dnd", status=PHONE)
        self.assertStillRunning(call, "zoe was seen on the phone")
        await self.finished("zoe's call", call)
        await self.finished("x-zoe's phone", uas)
        await watch.expectLatest(full, show=None, status=None, priority=-1)
        self.assertEqual(self.userStatus("bob")["xmpp"], READY)


class DirectTLSRefusedTests(TestCase):
    """
    Direct TLS verifies the certificate as STARTTLS does: never a login to
    a server that cannot prove it serves the JID's domain.
    """

    timeout = 60

    async def failure(self, **prosody: Any) -> str:
        requireBinaries("prosody", "prosodyctl", "openssl")
        server = ProsodyServer(users={"alice": "alice-pw"}, directTLS=True, **prosody)
        server.start()
        self.addCleanup(server.stop)
        session = XMPPSession(reactor, JID("alice@example.test"), "alice-pw",
                              SessionSettings(server=f"tls:{LOOPBACK}:{server.directTLSPort}",
                                              failedRetryDelay=600),
                              caFile=server.caFile)  # fmt: skip
        session.start()
        self.addCleanup(session.stop)
        for _ in range(400):
            if session.state.startswith(("failed", "connected")):
                break
            await sleep(0.05)
        return str(session.state)

    @deferred
    async def test_untrusted(self) -> None:
        state = await self.failure(untrusted=True)
        self.assertTrue(state.startswith("failed: certificate"), state)

    @deferred
    async def test_otherName(self) -> None:
        state = await self.failure(certHostnames=["other.test"])
        self.assertTrue(state.startswith("failed: certificate"), state)
