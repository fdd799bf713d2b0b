"""
The gateway's policy and failure answers with real sockets (issue 4):
phones from outside C{trusted_networks} get 403, an upstream that does not
answer (UDP) or refuses connections (TCP) gets the phone a 408 or 503, and
contact-rewrite mode works with a real Kamailio.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, freeTCPPort, freeUDPPort
from sipxmpp.testing.process import SharedServer, requireBinaries, startForTest
from sipxmpp.testing.sipp import SippRunner
from tests.integration.test_proxy import (
    DOMAIN,
    ProxyTestCase,
    Stack,
    aor,
    expectState,
    metricValue,
    received,
    sentBy,
)

FOREIGN = "127.0.0.2"


def _onlyLocalhostTrusted() -> Stack:
    return Stack({("sip", "trusted_networks"): f"{LOOPBACK}/32"})


def _contactMode() -> Stack:
    return Stack({("sip", "register_mode"): "contact"})


class ForeignSourceTests(ProxyTestCase):
    """
    A gateway that trusts only 127.0.0.1; 127.0.0.2 is loopback but foreign.
    """

    shared = SharedServer(_onlyLocalhostTrusted)

    def test_foreignSourceRefused(self) -> None:
        """
        REGISTER and INVITE from 127.0.0.2 are answered 403 by the gateway
        and never reach Kamailio; the user stays offline. The same REGISTER
        from 127.0.0.1 is accepted, so the refusal is the source's doing.
        """
        gw = self.gateway
        foreign = SippRunner(self.mktemp(), host=FOREIGN)
        self.addCleanup(foreign.stopAll)
        result = foreign.run("proxy_register_403", gw.address, service="nina",
                             keys={"domain": DOMAIN, "expires": 300, "contact_user": "nina"})
        self.assertSucceeded(result)
        result = foreign.run("proxy_invite_403", gw.address, service="someone",
                             keys={"domain": DOMAIN, "caller": "nina"})
        self.assertSucceeded(result)
        # REGISTER, INVITE, and the ACK for the 403 (dropped, not answered).
        self.assertEqual(
            metricValue(gw, 'sipxmpp_sip_refused_total{reason="untrusted-source"}'), 3)
        self.assertEqual(self.registrar.contacts("nina"), [])
        self.assertEqual(gw.telephonyState(aor("nina")), "offline")
        self.assertNotIn(aor("nina"), gw.status()["users"])  # type: ignore[operator]

        self.registerThroughGateway("nina")
        expectState(gw, "nina", "online")
        self.assertEqual(len(self.registrar.contacts("nina")), 1)


class UpstreamFailureTests(SynchronousTestCase):
    """
    Gateways whose upstream cannot be reached, each its own.
    """

    def setUp(self) -> None:
        requireBinaries("sipp")
        self.sipp = SippRunner(self.mktemp())
        self.addCleanup(self.sipp.stopAll)

    def test_silentUDPUpstreamTimesOut(self) -> None:
        """
        Nothing listens on the upstream's UDP port: after Timer B (INVITE)
        and Timer F (REGISTER), 64*T1 = 32 s, the phone gets 408 from the
        gateway. Both run at once to pay the 32 s only once. A phone's own
        Timer F is also 32 s, and sipp gives up a moment before the 408
        arrives: the REGISTER is sent once (C{-nr}) and sipp just waits.
        """
        gw = startForTest(self, GatewayServer(upstreamPort=freeUDPPort()))
        invite = self.sipp.start("proxy_invite_408", gw.address, service="olga",
                                 keys={"domain": DOMAIN, "caller": "pete"},
                                 timeout=45, waitBound=False)
        register = self.sipp.start("proxy_register_408", gw.address, service="pete",
                                   keys={"domain": DOMAIN, "expires": 300,
                                         "contact_user": "pete"},
                                   extraArgs=["-nr"],
                                   timeout=45, waitBound=False)
        for result in (invite.wait(60), register.wait(60)):
            self.assertEqual((result.exitCode, result.successful, result.failed), (0, 1, 0),
                             result.describe())
        self.assertEqual(
            metricValue(gw, 'sipxmpp_sip_transaction_timeouts_total{code="408"}'), 2)
        self.assertEqual(gw.telephonyState(aor("pete")), "offline")

    def test_refusedTCPUpstreamAnswers503(self) -> None:
        """
        The upstream is TCP and refuses the connection: the phone (over UDP)
        gets 503 at once, for an INVITE and for a REGISTER.
        """
        gw = startForTest(self, GatewayServer(upstreamPort=freeTCPPort(),
                                              upstreamTransport="tcp"))
        result = self.sipp.run("proxy_invite_503", gw.address, service="quinn",
                               keys={"domain": DOMAIN, "caller": "rita"})
        self.assertEqual((result.exitCode, result.successful, result.failed), (0, 1, 0),
                         result.describe())
        result = self.sipp.run("proxy_register_503", gw.address, service="rita",
                               keys={"domain": DOMAIN, "expires": 300, "contact_user": "rita"})
        self.assertEqual((result.exitCode, result.successful, result.failed), (0, 1, 0),
                         result.describe())
        self.assertEqual(
            metricValue(gw, 'sipxmpp_sip_transaction_timeouts_total{code="503"}'), 2)
        self.assertEqual(gw.telephonyState(aor("rita")), "offline")


class ContactModeTests(ProxyTestCase):
    """
    C{register_mode = contact}: the gateway registers its own contact for
    each phone contact, for registrars that ignore Path.
    """

    shared = SharedServer(_contactMode)

    def test_registerRewritesContact(self) -> None:
        """
        Kamailio stores a contact at the gateway (and no Path); the phone
        sees its own contact in the 200 OK; de-registering works.
        """
        gw = self.gateway
        port = freeSIPPort()
        result = self.sipp.register(gw.address, "sara", expires=300, localPort=port,
                                    traceMessages=True)
        self.assertTrue(result.ok, result.describe())
        [ok] = received(result, "SIP/2.0 200")
        [contact] = ok.values("Contact")
        self.assertTrue(contact.startswith(f"<sip:sara@{LOOPBACK}:{port};transport=UDP>"),
                        contact)
        [stored] = self.registrar.contacts("sara")
        self.assertRegex(stored["Address"], rf"^sip:sx[0-9a-f]+@{gw.address}$")
        self.assertEqual(stored["Path"], "[not set]")
        expectState(gw, "sara", "online")

        result = self.sipp.unregister(gw.address, "sara")
        self.assertTrue(result.ok, result.describe())
        expectState(gw, "sara", "offline")
        self.assertEqual(self.registrar.contacts("sara"), [])

    def test_inboundCall(self) -> None:
        """
        A call from outside reaches the phone through the gateway, with the
        phone's own contact back in the Request-URI; the callee is on the
        phone, then online.
        """
        gw = self.gateway
        port = self.registerThroughGateway("tina")
        uas = self.sipp.answer("tina", localPort=port, traceMessages=True)
        call = self.sipp.start("uac", self.registrar.address, service="tina",
                               keys={"domain": DOMAIN, "caller": "outside7"},
                               extraArgs=["-d", "1500"], waitBound=False)
        expectState(gw, "tina", "on-the-phone")
        self.assertSucceeded(call.wait())
        answered = uas.wait()
        self.assertSucceeded(answered)
        expectState(gw, "tina", "online")
        [invite] = received(answered, "INVITE ")
        self.assertTrue(invite.startLine.startswith(f"INVITE sip:tina@{LOOPBACK}:{port};"),
                        invite)
        self.assertEqual([sentBy(v) for v in invite.values("Via")][:2],
                         [gw.address, self.registrar.address])
