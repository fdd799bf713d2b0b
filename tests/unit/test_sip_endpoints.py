"""
Tests for L{sipxmpp.sip.shell.endpoints.parseListen}.
"""

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.shell.endpoints import EndpointSyntaxError, parseListen


class ParseListenTests(SynchronousTestCase):
    """
    udp:, tcp: and ssl: descriptions parse into a L{ListenSpec}.
    """

    def test_udp(self) -> None:
        spec = parseListen("udp:5060:interface=127.0.0.1")
        self.assertEqual((spec.transport, spec.port, spec.interface), ("UDP", 5060, "127.0.0.1"))
        self.assertEqual(spec.description, "udp:5060:interface=127.0.0.1")

    def test_keywordPortAndIPv6(self) -> None:
        spec = parseListen("tcp:port=5070:interface=\\:\\:1")
        self.assertEqual((spec.transport, spec.port, spec.interface), ("TCP", 5070, "::1"))

    def test_tlsOptions(self) -> None:
        spec = parseListen("ssl:5061:privateKey=/k.pem:certKey=/c.pem")
        self.assertEqual(spec.transport, "TLS")
        self.assertEqual((spec.option("privateKey"), spec.option("certKey")), ("/k.pem", "/c.pem"))
        self.assertEqual(spec.option("missing", "d"), "d")

    def test_errors(self) -> None:
        for bad, fragment in [
            ("sctp:5060", "unknown endpoint type"),
            ("udp:", "not a number"),
            ("udp:70000", "not a number 0-65535"),
            ("udp:5060:5061", "give the port once"),
            ("udp:5060:port=5061", "give the port once"),
            ("udp:5060:backlog=5", "unknown option 'backlog'"),
            ("tcp:5060:interface=localhost", "not an IP address"),
            ("ssl:5061:certKey=c.pem", "needs privateKey"),
        ]:
            error = self.assertRaises(EndpointSyntaxError, parseListen, bad)
            self.assertIn(fragment, str(error), bad)
