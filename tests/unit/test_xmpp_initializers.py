"""
Tests for L{sipxmpp.xmpp.initializers}: a session's resource binding and
its RFC 3921 session request, over a scripted server.
"""

from __future__ import annotations

import re

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID

from sipxmpp.xmpp.session import XMPPSession
from tests.unit import test_xmpp_session
from tests.unit.test_xmpp_session import HEADER, PASSWORD, FakeEndpoint, Server

# Its settings only: a TestCase named here would be collected again.
SETTINGS = test_xmpp_session.SessionTests.settings

NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"


class BindAndSessionTests(SynchronousTestCase):
    def authenticated(self) -> tuple[XMPPSession, Server]:
        endpoint = FakeEndpoint()
        session = XMPPSession(Clock(), JID("alice@example.test"), PASSWORD,
                              SETTINGS, endpoint=endpoint,
                              tlsOptions=object())  # type: ignore[arg-type]  # fmt: skip
        session.start()
        [(protocol, transport)] = endpoint.connections
        server = Server(protocol, transport)
        server.authenticate()
        server.heard()
        return session, server

    def answerBind(self, server: Server, features: str, jid: str) -> str:
        """
        Offer C{features} after SASL, answer the bind request with C{jid},
        and return what the client sent next.
        """
        server.say(HEADER + f"<stream:features><bind xmlns='{NS_BIND}'/>{features}"
                   "</stream:features>")  # fmt: skip
        request = server.heard()
        self.assertIn(f"<bind xmlns='{NS_BIND}'><resource>sipxmpp</resource></bind>", request)
        ident = re.search(r"<iq [^>]*id=['\"]([^'\"]+)", request)
        assert ident is not None
        server.say(f"<iq type='result' id='{ident.group(1)}'><bind xmlns='{NS_BIND}'>"
                   f"<jid>{jid}</jid></bind></iq>")  # fmt: skip
        return server.heard()

    def test_optionalSession(self) -> None:
        """
        A server that marks the session request optional gets none: the
        session is connected once bound.
        """
        session, server = self.authenticated()
        sent = self.answerBind(server, f"<session xmlns='{NS_SESSION}'><optional/></session>",
                               "alice@example.test/sipxmpp")  # fmt: skip
        self.assertNotIn(NS_SESSION, sent)
        self.assertEqual(session.state, "connected")

    def test_requiredSession(self) -> None:
        """
        A server that offers the session request without C{<optional/>}
        gets it, and the session is connected only once it is answered.
        """
        session, server = self.authenticated()
        sent = self.answerBind(server, f"<session xmlns='{NS_SESSION}'/>",
                               "alice@example.test/sipxmpp")  # fmt: skip
        self.assertIn(f"<session xmlns='{NS_SESSION}'/>", sent)
        self.assertEqual(session.state, "authenticating")
        ident = re.search(r"<iq [^>]*id=['\"]([^'\"]+)", sent)
        assert ident is not None
        server.say(f"<iq type='result' id='{ident.group(1)}'/>")
        self.assertEqual(session.state, "connected")

    def test_boundAsAsked(self) -> None:
        """
        The JID the server bound is the session's JID.
        """
        session, server = self.authenticated()
        self.answerBind(server, "", "alice@example.test/sipxmpp")
        self.assertEqual(session.jid.full(), "alice@example.test/sipxmpp")

    def test_boundOtherwise(self) -> None:
        """
        A server that binds another resource than the one asked for (RFC
        6120 7.7.2.2) gives the session its JID.
        """
        session, server = self.authenticated()
        self.answerBind(server, "", "alice@example.test/sipxmpp-4711")
        self.assertEqual(session.state, "connected")
        self.assertEqual(session.jid.full(), "alice@example.test/sipxmpp-4711")
