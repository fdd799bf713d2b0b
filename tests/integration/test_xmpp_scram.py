"""
SCRAM-SHA-256 and SCRAM-*-PLUS (channel binding) against real servers: the
gateway's own XMPP session (L{sipxmpp.xmpp.session}) logs in to Prosody
0.12 and ejabberd 23.01 on 127.0.0.1, configured to store SCRAM-SHA-256
keys, over TLS 1.3 (their default) and over TLS 1.2 only, where both offer
-PLUS with C{tls-unique}.

Which mechanism was used is read from the gateway's own log line at login
and, for ejabberd, from the server's log ("Accepted c2s MECHANISM
authentication"). A login whose channel-binding data is wrong must be
refused by the server: that proves the server checked the binding. The
end-to-end call test (dnd during a call and back) runs over a -PLUS login.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.words.protocols.jabber.jid import JID
from zope.interface import provider

from sipxmpp.testing.ejabberd import EjabberdServer
from sipxmpp.testing.process import SharedServer, requireBinaries
from sipxmpp.testing.prosody import ProsodyServer
from sipxmpp.xmpp import sasl
from sipxmpp.xmpp.session import SessionFactory, SessionSettings, XMPPSession
from tests.integration.sessionstate import loginSettled
from tests.integration.test_e2e import E2ETestCase, Stack, jid
from tests.integration.test_xmpp_publisher import deferred, reactor, sleep

USERS = {"alice": "alice-pw-Ä", "bob": "bob-pw", "carol": "carol-pw"}
WAIT = 20.0


class LoginCase(TestCase):
    """
    Log the gateway's session in to C{self.server} and tell what it used.
    """

    timeout = 60
    shared: SharedServer[Any]

    def setUp(self) -> None:
        self.server = self.shared.get(self)
        self.lines: list[str] = []

        @provider(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            text = formatEvent(event)
            if "authenticated with" in text:
                self.lines.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    async def login(self, user: str, channelBinding: str = "auto",
                    endpoint: str = "") -> tuple[str, str]:
        """
        Log in as C{user}; return the session's final state (C{connected}
        or C{failed: ...}) and the gateway's log line for it ("" if none).

        @param endpoint: C{[xmpp] server}; default: the server's STARTTLS
            port.
        """
        server = self.server
        sessions = SessionFactory(reactor, SessionSettings(
            server=endpoint or f"{server.host}:{server.port}", failedRetryDelay=600,
            channelBinding=channelBinding), caFile=server.caFile)
        session = sessions(JID(server.jid(user)), USERS[user])
        assert isinstance(session, XMPPSession)
        self.addCleanup(session.stop)
        state = await loginSettled(session, reactor, WAIT)
        mine = [line for line in self.lines if f"as {server.jid(user)}/" in line]
        return state, mine[-1].split(": ", 1)[1] if mine else ""

    async def serverLogShows(self, text: str) -> None:
        """
        Wait until the server's log has C{text} (ejabberd writes its log
        lines in batches).
        """
        log = ""
        for _ in range(int(WAIT / 0.1)):
            with open(self.server.logFile, encoding="utf-8", errors="replace") as f:
                log = f.read()
            if text in log:
                return
            await sleep(0.1)
        tail = "\n".join(log.splitlines()[-5:])
        self.fail(f"{self.server.logFile} never showed {text!r}; it ends with:\n{tail}")


def _prosody(**options: Any) -> ProsodyServer:
    requireBinaries("prosody", "prosodyctl", "openssl")
    return ProsodyServer(users=USERS, passwordHash="SHA-256", **options)


def _ejabberd(**options: Any) -> EjabberdServer:
    requireBinaries("erl", "ejabberdctl", "openssl")
    return EjabberdServer(users=USERS, scramHash="sha256", **options)


class ProsodyTLS13Tests(LoginCase):
    """
    Prosody storing SCRAM-SHA-256 keys, TLS 1.3: it offers SCRAM-SHA-256
    and no -PLUS (tls-unique is undefined there).
    """

    shared = SharedServer(_prosody)

    @deferred
    async def test_scramSHA256(self) -> None:
        """
        The gateway logs in with SCRAM-SHA-256; its gs2 flag says it could
        have bound ("y"), which Prosody accepts as it cannot bind here.
        """
        self.assertEqual(await self.login("alice"),
                         ("connected", "authenticated with SCRAM-SHA-256"))


class ProsodyTLS12Tests(LoginCase):
    """
    Prosody storing SCRAM-SHA-256 keys, TLS 1.2 only: it offers
    SCRAM-SHA-256-PLUS with tls-unique (not announced: RFC 5802's default).
    """

    shared = SharedServer(lambda: _prosody(tlsProtocol="tlsv1_2", directTLS=True))

    @deferred
    async def test_plus(self) -> None:
        self.assertEqual(await self.login("alice"), (
            "connected", "authenticated with SCRAM-SHA-256-PLUS (channel binding tls-unique)"))

    @deferred
    async def test_plusOverDirectTLS(self) -> None:
        """
        Direct TLS (XEP-0368): the binding data comes from the connection
        that was TLS from the start just the same.
        """
        server = self.server
        self.assertEqual(await self.login("bob", endpoint=f"tls:{server.host}:"
                                                          f"{server.directTLSPort}"), (
            "connected", "authenticated with SCRAM-SHA-256-PLUS (channel binding tls-unique)"))

    @deferred
    async def test_bindingOff(self) -> None:
        """
        C{channel_binding = off}: plain SCRAM-SHA-256 ("n"), accepted.
        """
        self.assertEqual(await self.login("alice", "off"),
                         ("connected", "authenticated with SCRAM-SHA-256"))

    @deferred
    async def test_wrongBindingRefused(self) -> None:
        """
        A proof bound to another TLS connection than the server's (what a
        relaying man in the middle would send) is refused.
        """
        self.patch(sasl, "channelBindings", lambda transport: {"tls-unique": b"\0" * 12})
        state, line = await self.login("carol")
        self.assertTrue(state.startswith("failed: authentication: "), state)
        self.assertIn("SCRAM-SHA-256-PLUS", state)
        self.assertEqual(line, "")


class EjabberdTLS13Tests(LoginCase):
    """
    ejabberd with C{auth_scram_hash: sha256}, TLS 1.3: it offers
    SCRAM-SHA-256 and SCRAM-SHA-256-PLUS but announces no binding type, and
    its tls-unique is undefined on TLS 1.3: the gateway takes plain
    SCRAM-SHA-256 ("n": the server's -PLUS offer was seen, nothing was
    stripped).
    """

    shared = SharedServer(_ejabberd)

    @deferred
    async def test_scramSHA256(self) -> None:
        self.assertEqual(await self.login("alice"),
                         ("connected", "authenticated with SCRAM-SHA-256"))
        await self.serverLogShows(
            "Accepted c2s SCRAM-SHA-256 authentication for alice@example.test")


class EjabberdTLS12Tests(LoginCase):
    """
    ejabberd with C{auth_scram_hash: sha256}, TLS 1.2 only: the gateway
    logs in with SCRAM-SHA-256-PLUS bound with tls-unique.
    """

    shared = SharedServer(lambda: _ejabberd(tls12Only=True))

    @deferred
    async def test_plus(self) -> None:
        self.assertEqual(await self.login("alice"), (
            "connected", "authenticated with SCRAM-SHA-256-PLUS (channel binding tls-unique)"))
        await self.serverLogShows(
            "Accepted c2s SCRAM-SHA-256-PLUS authentication for alice@example.test")

    @deferred
    async def test_wrongBindingRefused(self) -> None:
        self.patch(sasl, "channelBindings", lambda transport: {"tls-unique": b"\0" * 12})
        state, line = await self.login("carol")
        self.assertTrue(state.startswith("failed: authentication: "), state)
        self.assertEqual(line, "")
        await self.serverLogShows("Failed c2s SCRAM-SHA-256-PLUS authentication from "
                                  "127.0.0.1: Invalid channel binding")


class PlusCallTests(E2ETestCase):
    """
    The end-to-end call test over a -PLUS login: Prosody speaks TLS 1.2
    only, so the gateway's session for alice binds its SCRAM-SHA-1-PLUS
    login with tls-unique (SHA-1: the watcher's probe speaks SCRAM-SHA-1).
    """

    shared = SharedServer(lambda: Stack(provision=["alice"],
                                        prosodyOptions={"tlsProtocol": "tlsv1_2"}))

    @deferred
    async def test_callOverPlusLogin(self) -> None:
        """
        alice's Psi-style client goes dnd while she calls someone outside
        and gets her own status back after the call; the gateway's session
        logged in with channel binding.
        """
        await self.provisionedPhone("alice")
        with open(self.gateway.consoleLog, encoding="utf-8", errors="replace") as f:
            self.assertIn(f"XMPP login as {jid('alice')}/sipxmpp: authenticated with "
                          "SCRAM-SHA-1-PLUS (channel binding tls-unique)", f.read())
        await self.outboundCallShown("alice")
