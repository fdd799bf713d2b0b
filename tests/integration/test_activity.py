"""
XEP-0108 user activity against a real Prosody with PEP (issue 16, item 5):
a call the gateway put in a user's activity is retracted even when the
gateway never logs the user in again for telephony.

The gateway (a pure publisher: C{[sip] upstream} empty, PUBLISHes sent by
hand from 127.0.0.1) publishes carol's call as her activity; it is killed
during the call, the publication expires while it is down (carol's phone
never publishes again), and it is started again: carol is offline on SIP,
yet the gateway logs her in just to retract the activity, which is what
her contacts' servers hold. What is asserted is what Prosody stores in
carol's PEP node, read by a separate login of carol (resource C{probe},
never available, so the gateway does not take it for a client).
Everything listens on 127.0.0.1; waits are bounded and nothing asserts on
timing.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET

from twisted.trial.unittest import SkipTest, TestCase

from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.ports import LOOPBACK, freeTCPPort
from sipxmpp.testing.process import requireBinaries
from sipxmpp.testing.templates import etcPath
from sipxmpp.testing.xmppprobe import XMPPProbeError, login
from tests.integration.test_e2e import USERS, WAIT, aor, jid
from tests.integration.test_ingest import DIALOG_INFO, publish

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_ACTIVITY = "http://jabber.org/protocol/activity"
USER = "carol"
# The publication's lifetime, seconds: it must run out while the gateway
# is down ([ingest] min_expires is 5).
EXPIRES = 5


def pepTemplate(folder: str) -> str:
    """
    The test Prosody configuration with C{mod_pep} (XEP-0163) enabled.
    """
    with open(etcPath("prosody.cfg.lua.in"), encoding="utf-8") as f:
        text = f.read()
    anchor = '\t"posix";'
    assert anchor in text, "prosody.cfg.lua.in changed: enable pep another way"
    path = os.path.join(folder, "prosody-pep.cfg.lua.in")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(anchor, anchor + '\n\t"pep";', 1))
    return path


class RenamedGateway(GatewayServer):
    """
    The gateway under a host name of its own (a UTS namespace).
    """

    hostName = "sipxmpp-test"

    def command(self) -> list[str]:
        return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.hostName,
                *super().command()]


class StaleActivityTests(TestCase):
    """
    One Prosody (with PEP) and one gateway with C{publish_activity} on.
    """

    timeout = 180

    def setUp(self) -> None:
        requireBinaries("prosody", "prosodyctl")
        from sipxmpp.testing.prosody import ProsodyServer

        self.baseDir = tempfile.mkdtemp(prefix="sipxmpp-activity-")
        if not os.environ.get("SIPXMPP_KEEP_TEST_DIRS"):
            self.addCleanup(shutil.rmtree, self.baseDir, True)
        self.prosody = ProsodyServer(
            users={USER: USERS[USER]}, port=freeTCPPort(),
            baseDir=os.path.join(self.baseDir, "prosody"), template=pepTemplate(self.baseDir),
        )
        self.prosody.start()
        self.addCleanup(self.prosody.stop)

    def startGateway(self, gateway: type[GatewayServer] = GatewayServer,
                     **settings: str) -> None:  # fmt: skip
        """
        @param settings: more C{[xmpp]} keys.
        """
        self.gateway = gateway(
            upstreamPort=0,
            xmppServer=f"{self.prosody.host}:{self.prosody.port}",
            caFile=self.prosody.caFile,
            baseDir=os.path.join(self.baseDir, "gateway"),
            settings={
                ("sip", "upstream"): "",
                ("ingest", "publishers"): f"{LOOPBACK}/32",
                ("xmpp", "mode"): "resource",
                ("xmpp", "publish_activity"): "yes",
                **{("xmpp", key): value for key, value in settings.items()},
            },
        )
        self.gateway.prepare()
        self.gateway.addAccount(aor(USER), jid(USER), USERS[USER])
        self.gateway.start()
        self.addCleanup(self.gateway.stop)

    def activity(self) -> ET.Element | None:
        """
        The activity in carol's PEP node, as Prosody holds it (L{None}: no
        item).
        """
        probe = login(self.prosody.host, self.prosody.port, self.prosody.domain, USER,
                      USERS[USER], self.prosody.caFile, resource="probe")
        try:
            result = probe.iq("get", f"<pubsub xmlns='{NS_PUBSUB}'>"
                                     f"<items node='{NS_ACTIVITY}'/></pubsub>", to=jid(USER))
        except XMPPProbeError as e:
            if "item-not-found" in str(e):
                return None  # nothing published yet
            raise
        finally:
            probe.close()
        for item in result.iter(f"{{{NS_PUBSUB}}}item"):
            for activity in item.iter(f"{{{NS_ACTIVITY}}}activity"):
                return activity
        return None

    def waitForActivity(self, talking: bool, what: str) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            activity = self.activity()
            if activity is not None and (activity.find(f"{{{NS_ACTIVITY}}}talking")
                                         is not None) == talking:  # fmt: skip
                return
            if time.monotonic() > deadline:
                shown = None if activity is None else ET.tostring(activity).decode()
                self.fail(f"{what} not seen in carol's PEP within {WAIT:g} s; it holds {shown}")
            time.sleep(0.2)

    def waitForSaved(self) -> None:
        """
        Until the gateway wrote that carol's activity is to be retracted (it
        writes behind, at most every half second).
        """
        database = os.path.join(self.gateway.baseDir, "store.sqlite")
        deadline = time.monotonic() + WAIT
        while True:
            with sqlite3.connect(database) as db:
                rows = db.execute("SELECT aor FROM user_activities").fetchall()
            if rows == [(aor(USER),)]:
                return
            if time.monotonic() > deadline:
                self.fail(f"carol's activity never reached the store: {rows}")
            time.sleep(0.1)

    def test_retractedAfterRestartWithoutPhone(self) -> None:
        self.startGateway()
        self.callThenKilled()
        self.gateway.start()
        self.assertRetracted()
        self.assertRestartedWithoutCall()

    def test_renamedHost(self) -> None:
        """
        The same, and the gateway comes back under another host name (its
        default instance name, as in a new container) with its SQLite
        store: it takes over the state saved under the old name, so it
        still knows to retract carol's activity.
        """
        try:
            subprocess.run(["unshare", "--uts", "true"], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SkipTest(f"cannot give the gateway a host name of its own: {e}") from None
        RenamedGateway.hostName = "host-before"
        self.startGateway(RenamedGateway)
        self.callThenKilled()
        RenamedGateway.hostName = "host-after"
        self.gateway.start()
        self.assertRetracted()
        self.assertRestartedWithoutCall()
        self.assertIn("the store holds runtime state of 'host-before' and none of "
                      "'host-after' (the host name): taking it over", self.gatewayLog())

    def test_loggedOutWhileXMPPDown(self) -> None:
        """
        Without a restart: Prosody is down when carol's call ends, she goes
        offline on SIP and the gateway logs her out (a short logout_grace)
        before Prosody is back. Prosody keeps the PEP item; the gateway logs
        carol in again just to retract it once Prosody is back.
        """
        self.startGateway(logout_grace="1", reconnect_max_delay="2")
        confirmed = DIALOG_INFO.format(aor=aor(USER), dialog="d1", callID="c1@test",
                                       state="confirmed")  # fmt: skip
        answer = publish(self.gateway.sipPort, USER, confirmed, expires=EXPIRES)
        self.assertEqual(answer.code, 200, answer.raw)
        self.waitForActivity(True, "the call")
        self.prosody.stop()
        self.waitForLog(f"{aor(USER)}: offline on SIP for 1 s; logging out of XMPP")
        self.waitForLog(f"{aor(USER)}: logging in to XMPP as {jid(USER)}/sipxmpp to retract")
        self.prosody.start()
        self.assertRetracted()

    def waitForLog(self, line: str) -> None:
        deadline = time.monotonic() + WAIT
        while line not in self.gatewayLog():
            if time.monotonic() > deadline:
                self.fail(f"the gateway never logged {line!r}")
            time.sleep(0.2)

    def gatewayLog(self) -> str:
        log = os.path.join(self.gateway.baseDir, "gateway.console.log")
        with open(log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def callThenKilled(self) -> None:
        """
        carol's call is published as her activity and saved; the gateway
        is killed, and the publication runs out while it is down.
        """
        confirmed = DIALOG_INFO.format(aor=aor(USER), dialog="d1", callID="c1@test",
                                       state="confirmed")  # fmt: skip
        answer = publish(self.gateway.sipPort, USER, confirmed, expires=EXPIRES)
        self.assertEqual(answer.code, 200, answer.raw)
        expiresAt = time.monotonic() + EXPIRES
        self.waitForActivity(True, "the call")
        self.waitForSaved()

        self.gateway.kill()
        # The publication runs out while the gateway is down; nothing
        # publishes carol again.
        time.sleep(max(0.0, expiresAt - time.monotonic()) + 1)
        self.waitForActivity(True, "the call, still there while the gateway is down,")

    def assertRetracted(self) -> None:
        """
        The gateway logs carol in just to retract the call: her phone never
        reaches it again.
        """
        self.waitForActivity(False, "the empty activity")
        self.waitForLog(f"{aor(USER)}: the call left in its user activity is retracted")
        text = self.gatewayLog()
        self.assertIn(f"{aor(USER)}: logging in to XMPP as {jid(USER)}/sipxmpp to retract", text)

    def assertRestartedWithoutCall(self) -> None:
        """
        After the last start, carol was never logged in for a call.
        """
        self.assertNotIn(f"{aor(USER)}: online on SIP", self.gatewayLog().split("starting up")[-1])
