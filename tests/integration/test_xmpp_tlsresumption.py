"""
TLS session resumption of the gateway's XMPP sessions against a real
Prosody 0.12 on 127.0.0.1: a session logged in, stopped and started again
resumes its TLS 1.3 session where Prosody issues tickets, and logs in with
a full handshake where it does not (its default).
"""

from __future__ import annotations

from OpenSSL._util import lib as _openssl
from twisted.trial.unittest import TestCase
from twisted.words.protocols.jabber.jid import JID

from sipxmpp.testing.process import SharedServer, requireBinaries
from sipxmpp.testing.prosody import ProsodyServer
from sipxmpp.xmpp.session import SessionFactory, SessionSettings, XMPPSession
from sipxmpp.xmpp.tls import tlsConnection
from tests.integration.sessionstate import loginSettled
from tests.integration.test_xmpp_publisher import deferred, reactor, sleep

USERS = {"alice": "alice-pw"}
WAIT = 20.0


def _prosody(tlsTickets: bool) -> ProsodyServer:
    requireBinaries("prosody", "prosodyctl", "openssl")
    return ProsodyServer(users=USERS, tlsTickets=tlsTickets)


class ResumptionCase(TestCase):
    timeout = 60
    shared: SharedServer[ProsodyServer]

    async def loginTwice(self) -> list[tuple[str, bool]]:
        """
        Log alice's session in, stop it, start it again; return each
        login's TLS version and whether it resumed its TLS session.
        """
        server = self.shared.get(self)
        sessions = SessionFactory(reactor, SessionSettings(server=f"{server.host}:{server.port}"),
                                  caFile=server.caFile)  # fmt: skip
        session = sessions(JID(server.jid("alice")), USERS["alice"])
        assert isinstance(session, XMPPSession)
        self.addCleanup(lambda: session.stop() if session.service.running else None)
        logins = []
        for _ in range(2):
            self.assertEqual(await loginSettled(session, reactor, WAIT), "connected")
            await sleep(0)  # out of the session's own callbacks
            stream = session._stream
            connection = tlsConnection(stream.transport if stream is not None else None)
            assert connection is not None
            # pyOpenSSL has no SSL_session_reused.
            logins.append((connection.get_protocol_version_name(),
                           bool(_openssl.SSL_session_reused(connection._ssl))))  # fmt: skip
            await session.stop()
        return logins


class WithTicketsTests(ResumptionCase):
    shared = SharedServer(lambda: _prosody(tlsTickets=True))

    @deferred
    async def test_resumed(self) -> None:
        self.assertEqual(await self.loginTwice(), [("TLSv1.3", False), ("TLSv1.3", True)])


class StockTests(ResumptionCase):
    shared = SharedServer(lambda: _prosody(tlsTickets=False))

    @deferred
    async def test_fullHandshake(self) -> None:
        """
        Prosody's default refuses the session offered: a full handshake,
        and the login goes on.
        """
        self.assertEqual(await self.loginTwice(), [("TLSv1.3", False), ("TLSv1.3", False)])
