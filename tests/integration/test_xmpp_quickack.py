"""
TCP_QUICKACK (L{sipxmpp.xmpp.quickack}) on a live session against a real
Prosody on 127.0.0.1, over STARTTLS and over Direct TLS: the stream's hook
sits on the TCP socket to the server (under TLS), and the session logs in
and answers through it. Which calls the hook makes is in
L{tests.unit.test_xmpp_quickack}; what it does to latency, in
C{bench/presence_latency.py} and C{bench/e2e_latency.py}.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import TestCase
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from sipxmpp.testing.process import SharedServer, requireBinaries
from sipxmpp.testing.prosody import ProsodyServer
from sipxmpp.xmpp import quickack
from sipxmpp.xmpp.quickack import QuickAck
from sipxmpp.xmpp.session import SessionFactory, SessionSettings, XMPPSession
from tests.integration.sessionstate import loginSettled
from tests.integration.test_xmpp_publisher import deferred, reactor

USERS = {"alice": "alice-pw", "bob": "bob-pw"}


def _prosody() -> ProsodyServer:
    requireBinaries("prosody", "prosodyctl", "openssl")
    return ProsodyServer(users=USERS, directTLS=True)


class QuickAckTests(TestCase):
    timeout = 60
    shared = SharedServer(_prosody)
    if quickack.TCP_QUICKACK is None:
        skip = "TCP_QUICKACK is Linux only"

    async def loggedIn(self, user: str, server: str, port: int) -> None:
        prosody = self.shared.get(self)
        sessions = SessionFactory(reactor, SessionSettings(server=server, failedRetryDelay=600),
                                  caFile=prosody.caFile)  # fmt: skip
        session = sessions(JID(prosody.jid(user)), USERS[user])
        assert isinstance(session, XMPPSession)
        self.addCleanup(session.stop)
        self.assertEqual(await loginSettled(session, reactor, 20), "connected")
        hook = session._stream.rawDataInFn if session._stream is not None else None
        self.assertIsInstance(hook, QuickAck)
        assert isinstance(hook, QuickAck)
        self.assertIsInstance(hook.socket, socket.socket)
        self.assertEqual(hook.socket.getpeername(), (prosody.host, port))  # type: ignore[attr-defined]
        ping = domish.Element((None, "iq"))
        ping["type"] = "get"
        ping["to"] = prosody.domain
        ping.addElement(("urn:xmpp:ping", "ping"))
        answer = await session.sendRequest(ping, timeout=20)
        self.assertEqual(answer["type"], "result")

    @deferred
    async def test_startTLS(self) -> None:
        """
        Over STARTTLS the hook is on the connection's socket from the
        first byte, and stays on it once TLS is on.
        """
        prosody = self.shared.get(self)
        await self.loggedIn("alice", f"{prosody.host}:{prosody.port}", prosody.port)

    @deferred
    async def test_directTLS(self) -> None:
        """
        Over Direct TLS the stream's transport is the TLS layer, and the
        hook is on the TCP socket under it.
        """
        prosody = self.shared.get(self)
        assert prosody.directTLSPort is not None
        await self.loggedIn("bob", f"tls:{prosody.host}:{prosody.directTLSPort}",
                            prosody.directTLSPort)
