"""
SUBSCRIBE mode against a real Kamailio 5.6 (issue 15, item 3): sipp phones
register at Kamailio (C{etc/kamailio-presence.cfg}) and call each other
through it only; Kamailio's pua_dialoginfo PUBLISHes their dialog state to
its own presence server (presence + presence_dialoginfo), where the
gateway (C{[sip] upstream} empty, C{[ingest] subscribe} = Kamailio, no
publishers) has subscribed to C{Event: dialog} for each provisioned user;
the NOTIFYs drive the users' telephony state, read from C{/status}.

Also: Kamailio restarted on the same port forgets every subscription; the
gateway's next refresh gets 481 (or times out), it subscribes again, and
the next call shows again. Everything listens on 127.0.0.1; waits are
bounded; nothing asserts on timing.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.testing.gateway import GatewayServer, waitFor
from sipxmpp.testing.kamailio import KamailioPresenceServer, requireModules
from sipxmpp.testing.ports import freeSIPPort
from sipxmpp.testing.process import requireBinaries, startForTest
from sipxmpp.testing.sipp import SippProcess, SippRunner

DOMAIN = "example.test"
USERS = ("alice", "bob")
# Short, so that a restarted Kamailio is noticed at the next refresh
# (0.8 of it) within the test's time.
SUBSCRIBE_EXPIRES = 20
ON_CALL = ("on-the-phone",)


def aor(user: str) -> str:
    return f"sip:{user}@{DOMAIN}"


class SubscribeTests(SynchronousTestCase):
    """
    One Kamailio and one gateway per test.
    """

    timeout = 240

    def setUp(self) -> None:
        requireBinaries("kamailio", "sipp")
        requireModules(*KamailioPresenceServer.modules)
        self.sipp = SippRunner(self.mktemp())
        self.addCleanup(self.sipp.stopAll)
        # A fixed port: a restart must come back where the gateway
        # subscribes.
        self.kamailio = startForTest(self, KamailioPresenceServer(port=freeSIPPort()))
        self.target = f"{self.kamailio.host}:{self.kamailio.port}"
        self.gateway = GatewayServer(
            upstreamPort=0,
            settings={
                ("sip", "upstream"): "",
                ("ingest", "subscribe"): self.kamailio.uri,
                ("ingest", "publishers"): "",
                ("ingest", "subscribe_expires"): str(SUBSCRIBE_EXPIRES),
            },
        )
        self.gateway.prepare()
        for user in USERS:
            self.gateway.addAccount(aor(user), f"{user}@{DOMAIN}", "secret-" + user)
        startForTest(self, self.gateway)
        self.addCleanup(self.reportNotifies)

    def gatewayLog(self) -> str:
        path = os.path.join(self.gateway.baseDir, f"{self.gateway.name}.console.log")
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def notifies(self, since: int = 0) -> list[str]:
        """
        What the gateway applied from Kamailio's NOTIFYs, one line each,
        from offset C{since} of its log on.
        """
        return re.findall(
            r"NOTIFY for \S+: (?:version \d+, \w+ state, dialogs \[[^\]]*\]|no body, .*)",
            self.gatewayLog()[since:],
        )

    def reportNotifies(self) -> None:
        if os.environ.get("SIPXMPP_REPORT_NOTIFY"):
            print("\n".join(["", "NOTIFYs applied:", *self.notifies()]))

    def subscribed(self, since: int = 0) -> None:
        """
        Wait until the gateway has taken a NOTIFY of each user's
        subscription (the first comes right after the SUBSCRIBE) after
        offset C{since} of its log: a full state, or no body (Kamailio's
        for a user without dialogs).
        """
        for user in USERS:
            prefix = f"NOTIFY for {aor(user)}:"
            waitFor(
                f"a NOTIFY of {user}",
                lambda prefix=prefix: any(  # type: ignore[misc]
                    line.startswith(prefix) for line in self.notifies(since)
                ),
                timeout=60,
            )  # fmt: skip

    def register(self, user: str) -> int:
        port = freeSIPPort()
        result = self.sipp.register(self.target, user, DOMAIN, expires=300, localPort=port)
        self.assertTrue(result.ok, result.describe())
        return port

    def startCall(self, talkMs: int) -> tuple[SippProcess, SippProcess]:
        """
        Register alice and bob at Kamailio; alice calls bob, who answers
        after ringing; she talks C{talkMs} and hangs up.
        """
        alicePort = self.register("alice")
        bobPort = self.register("bob")
        uas = self.sipp.start("pua_uas_ringing", service="bob", localPort=bobPort)
        call = self.sipp.start(
            "uac", self.target, service="bob", keys={"domain": DOMAIN, "caller": "alice"},
            localPort=alicePort, timeout=talkMs / 1000 + 20, extraArgs=["-d", str(talkMs)],
            waitBound=False,
        )  # fmt: skip
        return call, uas

    def state(self, user: str) -> str:
        return self.gateway.telephonyState(aor(user))

    def assertCallShown(self) -> None:
        """
        A call between alice and bob shows both on the phone while it is
        up and neither after it.
        """
        call, uas = self.startCall(talkMs=8000)
        for user in USERS:
            waitFor(f"{user} on the phone", lambda user=user: self.state(user) in ON_CALL,  # type: ignore[misc]
                    timeout=15)  # fmt: skip
        self.assertTrue(call.running, "the call ended before both were seen on the phone")
        result = call.wait(30)
        self.assertTrue(result.ok, result.describe())
        answered = uas.wait(30)
        self.assertTrue(answered.ok, answered.describe())
        for user in USERS:
            waitFor(f"{user} off the phone",
                    lambda user=user: self.state(user) not in ON_CALL + ("ringing",),  # type: ignore[misc]
                    timeout=15)  # fmt: skip

    def test_callShown(self) -> None:
        """
        The gateway subscribes for both users; a call through Kamailio
        shows them on the phone and then off it; the versions of the
        NOTIFYs applied only go up.
        """
        self.subscribed()
        self.assertCallShown()
        for user in USERS:
            versions = [
                int(line.split("version ", 1)[1].split(",", 1)[0])
                for line in self.notifies()
                if line.startswith(f"NOTIFY for {aor(user)}: version")
            ]
            self.assertEqual(versions, sorted(set(versions)), self.notifies())
            self.assertGreaterEqual(len(versions), 2, self.notifies())

    def test_kamailioRestarted(self) -> None:
        """
        Kamailio restarted forgets the subscriptions: the gateway's next
        refresh fails, it subscribes again, and calls show again.
        """
        self.subscribed()
        self.kamailio.stop()
        self.kamailio.start()
        mark = len(self.gatewayLog())
        failed = re.compile(r"SUBSCRIBE for \S+ failed: (481|408|503)")
        found = waitFor("a failed refresh", lambda: failed.search(self.gatewayLog(), mark),
                        timeout=SUBSCRIBE_EXPIRES + 40)  # fmt: skip
        # The new subscriptions' first NOTIFYs, from the new Kamailio.
        self.subscribed(since=found.start())
        self.assertCallShown()
