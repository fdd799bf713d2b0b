"""
The gateway's XMPP sessions over BOSH (XEP-0124, XEP-0206): Prosody's
mod_bosh over HTTPS, certificate verified against the test CA, carrying the
end-to-end call test (dnd during a call and back, set by XEP-0146 remote
control on the user's client), and coming back after Prosody restarts;
ejabberd's mod_bosh carrying the publisher's scenarios.

The gateway has no c2s server configured: only C{[xmpp] bosh_url}, so a
session that logs in at all went through BOSH; Prosody's log says so too.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from sipxmpp.testing.process import ServerProcess, SharedServer, requireBinaries
from tests.integration.test_e2e import PHONE, E2ETestCase, Stack, Watch, aor, jid
from tests.integration.test_xmpp_publisher import (
    USERS,
    WATCHED,
    PublisherIntegrationMixin,
    deferred,
    sleep,
)

READY = "connected"


def boshSessions(stack: Stack) -> int:
    with open(stack.prosody.logFile, encoding="utf-8", errors="replace") as f:
        return f.read().count("New BOSH session")


class ProsodyBOSHTests(E2ETestCase):
    """
    One Prosody (BOSH on HTTPS), Kamailio and gateway for the class.
    """

    shared = SharedServer(lambda: Stack(provision=["alice", "peggy"], bosh=True))

    @deferred
    async def test_callOverBOSH(self) -> None:
        """
        alice's Psi-style client goes dnd while she calls someone outside
        and gets her own status back after the call: the gateway's
        remote-control commands and presence went over BOSH.
        """
        await self.provisionedPhone("alice")
        self.assertGreaterEqual(boshSessions(self.stack), 1)
        await self.outboundCallShown("alice")

    @deferred
    async def test_prosodyRestarted(self) -> None:
        """
        Prosody restarts: the BOSH session is lost (its HTTP requests fail)
        and the gateway's session retries until it has a new one, then
        shows peggy's next call on its own resource (she has no client).
        """
        await self.provisionedPhone("peggy", rc="")
        before = boshSessions(self.stack)
        self.watch.stop()
        self.stack.prosody.stop()
        self.stack.prosody.start()
        self.watch = Watch(self, self.stack)
        self.addCleanup(self.watch.stop)
        await self.expectStatus("peggy", "xmpp", lambda v: v == READY, "logged in again")
        await self.watch.expect(f"{jid('peggy')}/sipxmpp", priority=-1, show=None)
        self.assertGreater(boshSessions(self.stack), before)

        outside = self.registerOutside("x-peggy")
        uas = self.startPhone("uas", "x-peggy", outside)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, "x-peggy", "peggy")
        gateway = f"{jid('peggy')}/sipxmpp"
        await self.watch.expect(gateway, mark, show="dnd", status=PHONE)
        await self.finished("peggy's call", call)
        await self.finished("x-peggy's phone", uas)
        await self.watch.expectLatest(gateway, show=None, status=None, priority=-1)


class EjabberdBOSHPublisherTests(PublisherIntegrationMixin, TestCase):
    """
    The publisher's scenarios (remote control dnd and back, a wrong
    password, an untrusted certificate...) with every session on
    ejabberd's BOSH (C{mod_bosh} on an C{ejabberd_http} listener with TLS).
    """

    @classmethod
    def makeServer(cls) -> ServerProcess:
        requireBinaries("erl", "ejabberdctl", "openssl")
        from sipxmpp.testing.ejabberd import EjabberdServer

        server = EjabberdServer(users=USERS, bosh=True)
        server.start()
        for user in WATCHED:
            server.subscribe(user, "bob")
        return server

    def xmppServer(self, server: Any) -> str:
        url: str = server.boshURL
        return url


class PerAccountStack(Stack):
    """
    A Prosody that also serves BOSH, and a gateway whose C{[xmpp] server}
    is its c2s port.
    """

    def start(self) -> None:
        self.gatewaySettings = {
            ("xmpp", "server"): f"{self.prosody.host}:{self.prosody.port}",
            ("xmpp", "bosh_url"): "",
        }
        super().start()


class PerAccountBOSHTests(E2ETestCase):
    shared = SharedServer(lambda: PerAccountStack(provision=["bob"], bosh=True))

    @deferred
    async def test_accountOnBOSH(self) -> None:
        """
        bob's account is given the BOSH URL with sipxmpp-admin account
        set-server: the running gateway logs him in again over BOSH, and
        his client goes dnd during his call and back.
        """
        await self.provisionedPhone("bob")
        before = boshSessions(self.stack)
        url = self.stack.prosody.boshURL
        out = self.gateway.admin("account", "set-server", aor("bob"), url).stdout
        self.assertEqual(out, f"XMPP server of {aor('bob')}: {url}\n")
        for _ in range(200):
            if boshSessions(self.stack) > before and self.userStatus("bob")["xmpp"] == READY:
                break
            await sleep(0.1)
        self.assertGreater(boshSessions(self.stack), before)
        await self.loggedIn("bob")
        outside = self.registerOutside("x-bob")
        uas = self.startPhone("uas", "x-bob", outside)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, "x-bob", "bob")
        await self.expectBusy("bob", mark)
        await self.finished("bob's call", call)
        await self.finished("x-bob's phone", uas)
        await self.expectBack("bob", mark)


class BlipMixin:
    """
    A network blip under a BOSH session: a TCP relay in front of the
    server's HTTPS port resets every connection (the held request's too).
    The request that died is sent again with its rid (XEP-0124 §14.3), and
    the session goes on: no new login, and a ping is answered after.
    """

    server: ServerProcess

    @classmethod
    def makeServer(cls) -> Any:
        raise NotImplementedError()

    @deferred
    async def test_blip(self) -> None:
        from twisted.internet import reactor
        from twisted.logger import globalLogPublisher
        from twisted.words.protocols.jabber.jid import JID
        from twisted.words.xish import domish

        from sipxmpp.xmpp.session import SessionSettings, XMPPSession
        from sipxmpp.xmpp.tls import loadTrustRoot
        from tests.integration.test_xmpp_streammgmt import Relay

        server = self.makeServer()
        self.addCleanup(server.stop)  # type: ignore[attr-defined]
        relay = Relay((server.host, server.httpsPort))
        self.addCleanup(relay.stop)  # type: ignore[attr-defined]
        resent: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if "resent" in str(event.get("log_format", "")):
                resent.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)  # type: ignore[attr-defined]
        url = f"https://{server.host}:{relay.port.getHost().port}/http-bind"
        session = XMPPSession(reactor, JID(server.jid("alice")), "alice-pw",
                              SessionSettings(server=url, streamManagement=False),
                              trustRoot=loadTrustRoot(server.caFile))  # fmt: skip
        states: list[str] = []
        session.onStateChanged = states.append
        session.start()
        self.addCleanup(session.stop)  # type: ignore[attr-defined]
        for _ in range(200):
            if session.ready:
                break
            await sleep(0.1)
        self.assertTrue(session.ready, states)  # type: ignore[attr-defined]
        jid = session.jid.full()
        states.clear()

        relay.cut(block=False)
        for _ in range(200):
            if resent:
                break
            await sleep(0.1)
        self.assertTrue(resent, "no BOSH request was sent again after the blip")  # type: ignore[attr-defined]
        ping = domish.Element((None, "iq"))
        ping["type"] = "get"
        ping["to"] = server.domain
        ping.addElement(("urn:xmpp:ping", "ping"))
        answer = await session.sendRequest(ping, 10)
        self.assertEqual(answer["type"], "result")  # type: ignore[attr-defined]
        self.assertEqual(states, [])  # type: ignore[attr-defined]
        self.assertEqual(session.jid.full(), jid)  # type: ignore[attr-defined]


class ProsodyBlipTests(BlipMixin, TestCase):
    @classmethod
    def makeServer(cls) -> Any:
        requireBinaries("prosody", "prosodyctl", "openssl")
        from sipxmpp.testing.prosody import ProsodyServer

        server = ProsodyServer(users={"alice": "alice-pw"}, bosh=True)
        server.start()
        return server


class EjabberdBlipTests(BlipMixin, TestCase):
    @classmethod
    def makeServer(cls) -> Any:
        requireBinaries("erl", "ejabberdctl", "openssl")
        from sipxmpp.testing.ejabberd import EjabberdServer

        server = EjabberdServer(users={"alice": "alice-pw"}, bosh=True)
        server.start()
        return server


class ProsodyOutageTests(TestCase):
    @deferred
    async def test_noStreamManagementOverBOSH(self) -> None:
        """
        Prosody offers XEP-0198 on BOSH too, but its mod_smacks fails
        resuming a BOSH session: the session does not enable it there, and
        after an outage longer than a blip (connections refused for a
        while) it logs in again instead of waiting for a resumption.
        """
        from twisted.internet import reactor
        from twisted.words.protocols.jabber.jid import JID
        from twisted.words.xish import domish

        from sipxmpp.testing.prosody import ProsodyServer
        from sipxmpp.xmpp.session import SessionSettings, XMPPSession
        from sipxmpp.xmpp.tls import loadTrustRoot
        from tests.integration.test_xmpp_streammgmt import Relay

        requireBinaries("prosody", "prosodyctl", "openssl")
        server = ProsodyServer(users={"alice": "alice-pw"}, bosh=True, streamManagement=True)
        server.start()
        self.addCleanup(server.stop)
        assert server.httpsPort is not None
        relay = Relay((server.host, server.httpsPort))
        self.addCleanup(relay.stop)
        url = f"https://{server.host}:{relay.port.getHost().port}/http-bind"
        session = XMPPSession(reactor, JID(server.jid("alice")), "alice-pw",
                              SessionSettings(server=url, reconnectMaxDelay=1),
                              trustRoot=loadTrustRoot(server.caFile))  # fmt: skip
        states: list[str] = []
        session.onStateChanged = states.append
        session.start()
        self.addCleanup(session.stop)

        async def ready(what: str) -> None:
            for _ in range(300):
                if session.ready:
                    return
                await sleep(0.1)
            self.fail(f"not logged in {what}: {states}")

        await ready("at first")
        self.assertIsNone(session.management.stream)
        states.clear()
        relay.cut(block=True)
        for _ in range(300):
            if not session.ready:
                break
            await sleep(0.1)
        relay.unblock()
        await ready("after the outage")
        self.assertTrue(any(s.startswith("reconnecting") for s in states), states)
        self.assertFalse(any(s.startswith("resuming") for s in states), states)
        ping = domish.Element((None, "iq"))
        ping["type"] = "get"
        ping["to"] = server.domain
        ping.addElement(("urn:xmpp:ping", "ping"))
        answer = await session.sendRequest(ping, 10)
        self.assertEqual(answer["type"], "result")
