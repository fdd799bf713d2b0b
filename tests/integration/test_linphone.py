"""
Real softphones with GRUUs (issue 22): two linphone devices (Debian's
linphonec 5.1, headless, see L{sipxmpp.testing.linphone}) of one user
register through the gateway to Kamailio, which grants each a public GRUU;
linphone then calls with its GRUU as Contact. The far ends are sipp, or
another linphone (auto-answer) for a video call whose INVITE is too big for
UDP upstream.
"""

from __future__ import annotations

import os
import re
import signal

from sipxmpp.testing.linphone import LinphonePhone, requireLinphone
from sipxmpp.testing.process import SharedServer
from tests.integration.test_proxy import (
    DOMAIN,
    ProxyTestCase,
    Stack,
    expectState,
    metricValue,
)


class LinphoneTests(ProxyTestCase):
    """
    One Kamailio and one gateway in Path mode; each test its own user.
    """

    shared = SharedServer(Stack)

    def setUp(self) -> None:
        requireLinphone()
        super().setUp()

    def phone(self, user: str, transport: str = "udp", instance: str | None = None,
              name: str | None = None, video: bool = False,
              autoAnswer: bool = False) -> LinphonePhone:
        phone = LinphonePhone(user, self.gateway.address,
                              os.path.join(self.mktemp(), name or "phone"),
                              transport=transport, instance=instance, video=video,
                              autoAnswer=autoAnswer)
        phone.start()
        self.addCleanup(phone.stop)
        return phone

    def test_twoDevicesGRUUs(self) -> None:
        """
        Two devices of olga register with GRUUs, both stored with the
        gateway's Path. Device A calls, then device B; the far end of A's
        call hangs up after B's call started: its BYE, loose-routed by
        Kamailio to the GRUU of A, reaches A and ends A's call (it reached
        B, rewritten to B's GRUU, and B answered 481).
        """
        gw = self.gateway
        a = self.phone("olga", name="a")
        b = self.phone("olga", name="b")
        stored = self.registrar.contacts("olga")
        self.assertEqual(sorted(c["Instance"] for c in stored),
                         sorted(f"<urn:uuid:{p.instance}>" for p in (a, b)))
        self.assertEqual({c["Path"] for c in stored}, {f"<sip:{gw.address};lr>"})
        far = [self.registerAtRegistrar(user) for user in ("outside10", "outside11")]
        uasA = self.sipp.start("proxy_uas_bye", service="outside10", localPort=far[0],
                               extraArgs=["-d", "4000"], timeout=30)
        uasB = self.sipp.start("proxy_uas_bye", service="outside11", localPort=far[1],
                               extraArgs=["-d", "8000"], timeout=30)
        a.call(f"sip:outside10@{DOMAIN}")
        expectState(gw, "olga", "on-the-phone")
        # linphone's INVITE names its GRUU as Contact.
        [contact] = a.waitForLog(r"(?m)^INVITE sip:outside10@[^\n]*\n(?:[^\n]+\n)*?"
                                 r"Contact: ([^\n]*)")
        self.assertIn(a.gruu, contact)
        b.call(f"sip:outside11@{DOMAIN}")
        b.waitForLog(r"(?m)^INVITE sip:outside11@")
        self.assertSucceeded(uasA.wait(timeout=30))
        a.waitForLog(r"(?m)^BYE " + re.escape(a.gruu) + " SIP/2.0")
        self.assertNotIn("BYE " + a.gruu, b.log())
        self.assertSucceeded(uasB.wait(timeout=30))
        b.waitForLog(r"(?m)^BYE " + re.escape(b.gruu) + " SIP/2.0")
        expectState(gw, "olga", "online")
        self.assertEqual(metricValue(gw, 'sipxmpp_sip_answered_481_total{method="BYE"}'), 0)

    def test_tcpDeviceReconnects(self) -> None:
        """
        A TCP device dies without de-registering and comes back (same
        instance) from a new port: Kamailio replaces its binding by
        +sip.instance, and the gateway keeps only the new one too.
        """
        gw = self.gateway
        instance = "dddddddd-0000-4000-8000-00000000000d"
        before = metricValue(gw, "sipxmpp_sip_bindings_replaced_total")
        bindings = metricValue(gw, "sipxmpp_sip_bindings")
        first = self.phone("pia", transport="tcp", instance=instance, name="first")
        [old] = self.registrar.contacts("pia")
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        second = self.phone("pia", transport="tcp", instance=instance, name="second")
        [stored] = self.registrar.contacts("pia")
        self.assertNotEqual(stored["Address"], old["Address"])
        self.assertEqual(stored["Instance"], f"<urn:uuid:{second.instance}>")
        self.assertEqual(metricValue(gw, "sipxmpp_sip_bindings"), bindings + 1)
        self.assertEqual(metricValue(gw, "sipxmpp_sip_bindings_replaced_total") - before, 1)
        expectState(gw, "pia", "online")

    def test_videoInviteGoesUpstreamOverTCP(self) -> None:
        """
        Device A (UDP) calls B (UDP, auto-answer) with video on: A's INVITE
        (audio and video SDP) is over 1,300 bytes, so the gateway sends it
        on to Kamailio over TCP (RFC 3261 §18.1.1) though A and Kamailio's
        location both say UDP. Kamailio, having received it over TCP,
        double record-routes it (its C{transport=tcp} entry) on its way to
        B over UDP. B answers with video, the call connects, A hangs up and
        both ends and the gateway see the call end cleanly.
        """
        gw, registrar = self.gateway, self.registrar
        a = self.phone("quinn", name="a", video=True)
        b = self.phone("ruth", name="b", video=True, autoAnswer=True)
        tcpIn = 'sipxmpp_sip_messages_received_total{transport="TCP"}'
        answered481 = 'sipxmpp_sip_answered_481_total{method="BYE"}'
        before = {line: metricValue(gw, line) for line in (tcpIn, answered481)}
        a.call(f"sip:ruth@{DOMAIN}")
        for phone in (a, b):
            phone.waitForLog(r"to LinphoneCallStreamsRunning\b", timeout=20)
        expectState(gw, "quinn", "on-the-phone")
        expectState(gw, "ruth", "on-the-phone")
        # What A sent over UDP to the gateway: too big for UDP upstream.
        [size] = a.waitForLog(r"message sent to \[UDP://[^\]]+\], size: \[(\d+)\] bytes\s*\n"
                              r"INVITE sip:ruth@")
        self.assertGreater(int(size), 1300)
        # What B received: the gateway's Via on the upstream leg says TCP,
        # and Kamailio's second Record-Route says it received over TCP.
        [invite] = b.waitForLog(r"(?ms)^(INVITE sip:ruth@.*?\n)\r?\n")
        self.assertIn(f"Via: SIP/2.0/TCP {gw.address};", invite)
        self.assertIn(f"Record-Route: <sip:{registrar.address};transport=tcp;r2=on;lr", invite)
        self.assertIn(f"Record-Route: <sip:{registrar.address};r2=on;lr", invite)
        # Video both ways: B's 200 OK accepts the video stream.
        a.waitForLog(r"(?ms)^SIP/2.0 200 [^\n]*\n(?:[^\n]+\n)*?CSeq: \d+ INVITE\b.*?"
                     r"^m=video [1-9]")
        # Kamailio's 100, 180 and 200 came back on that TCP connection.
        self.assertGreaterEqual(metricValue(gw, tcpIn) - before[tcpIn], 3)
        a.command("terminate")
        b.waitForLog(r"(?m)^BYE " + re.escape(b.gruu) + " SIP/2.0")
        a.waitForLog(r"(?m)^SIP/2.0 200 [^\n]*\n(?:[^\n]+\n)*?CSeq: \d+ BYE\b")
        for phone in (a, b):
            phone.waitForLog(r"LinphoneCallEnd to LinphoneCallReleased\b")
            self.assertNotIn("LinphoneCallError", phone.log())
        expectState(gw, "quinn", "online")
        expectState(gw, "ruth", "online")
        self.assertEqual(metricValue(gw, answered481) - before[answered481], 0)
