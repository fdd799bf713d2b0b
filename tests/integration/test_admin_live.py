"""
Admin changes reach the running gateway (issue 16, item 2): a gateway (a
pure publisher, as in L{tests.integration.test_ingest}) logs its users in
to a real Prosody when a PUBLISH says they are on the phone; then the real
C{sipxmpp-admin} disables, enables and fixes a password, and the gateway's
C{/status} follows within seconds, without a restart. SIGHUP re-reads the
configuration file.

On SQLite the gateway finds changes by its periodic check; on PostgreSQL
(a throwaway server from L{sipxmpp.testing.postgres}, skipped when not
installed) by LISTEN/NOTIFY. Everything listens on 127.0.0.1; waits are
bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.testing.gateway import GatewayServer, waitFor
from sipxmpp.testing.ports import LOOPBACK, freeTCPPort
from sipxmpp.testing.process import startForTest
from tests.integration.test_e2e import aor, jid
from tests.integration.test_ingest import DIALOG_INFO, publish

USERS = {"dave": "dave-secret-1", "erin": "erin-secret-1"}
# Admin changes must show well within this (the check runs every 2 s).
WITHIN = 10.0


class AdminLiveMixin:
    """
    Prosody and a gateway for each test; C{storeURL} picks the store.
    """

    storeURL: str | None = None

    def setUpStack(self: SynchronousTestCase) -> None:  # type: ignore[misc]
        from sipxmpp.testing.prosody import ProsodyServer

        base = tempfile.mkdtemp(prefix="sipxmpp-adminlive-")
        if not os.environ.get("SIPXMPP_KEEP_TEST_DIRS"):
            self.addCleanup(shutil.rmtree, base, True)
        self.prosody = startForTest(self, ProsodyServer(
            users=USERS, port=freeTCPPort(), baseDir=os.path.join(base, "prosody")))
        settings = {
            ("sip", "upstream"): "",
            ("ingest", "publishers"): f"{LOOPBACK}/32",
            ("xmpp", "reconnect_max_delay"): "2",
            # Only the admin change can bring a failed login back in time.
            ("xmpp", "failed_retry_delay"): "600",
        }
        url = self.storeURL  # type: ignore[attr-defined]
        if url is not None:
            settings[("store", "url")] = url
        self.gateway = GatewayServer(
            upstreamPort=0, xmppServer=f"{self.prosody.host}:{self.prosody.port}",
            caFile=self.prosody.caFile, baseDir=os.path.join(base, "gateway"),
            settings=settings,
        )
        self.gateway.prepare()
        self.gateway.addAccount(aor("dave"), jid("dave"), USERS["dave"])
        self.gateway.addAccount(aor("erin"), jid("erin"), "not-" + USERS["erin"])
        startForTest(self, self.gateway)

    def xmppState(self, user: str) -> str:
        users = self.gateway.status()["users"]  # type: ignore[attr-defined]
        entry = users.get(aor(user)) if isinstance(users, dict) else None
        return str(entry["xmpp"]) if isinstance(entry, dict) else "logged out"

    def onThePhone(self, user: str) -> None:
        body = DIALOG_INFO.format(aor=aor(user), dialog="d1", callID=f"{user}@test",
                                  state="confirmed")  # fmt: skip
        answer = publish(self.gateway.sipPort, user, body)  # type: ignore[attr-defined]
        assert answer.code == 200, answer.code

    def waitState(self, user: str, prefix: str, timeout: float = WITHIN) -> None:
        waitFor(f"{user}'s XMPP session to be {prefix!r} "
                f"(gateway log: {self.gateway.logTail(15)})",  # type: ignore[attr-defined]
                lambda: self.xmppState(user).startswith(prefix) or None, timeout)

    # -- the tests ---------------------------------------------------------

    def test_disableEnable(self) -> None:
        """
        A disabled account's session logs out within seconds; enabled
        again while its user is still on the phone, it logs back in.
        """
        self.onThePhone("dave")
        self.waitState("dave", "connected", 20)
        self.gateway.admin("account", "disable", aor("dave"))
        self.waitState("dave", "logged out")
        self.gateway.admin("account", "enable", aor("dave"))
        self.waitState("dave", "connected")

    def test_setPasswordFixesFailedLogin(self) -> None:
        """
        A login refused for a wrong password (retried only after 600 s)
        logs in within seconds of C{set-password}.
        """
        self.onThePhone("erin")
        self.waitState("erin", "failed", 20)
        self.gateway.admin("account", "set-password", aor("erin"), "--password-stdin",
                           stdin=USERS["erin"] + "\n")  # fmt: skip
        self.waitState("erin", "connected")

    def test_removeAndAddAgain(self) -> None:
        self.onThePhone("dave")
        self.waitState("dave", "connected", 20)
        self.gateway.admin("account", "remove", aor("dave"))
        self.waitState("dave", "logged out")
        self.gateway.addAccount(aor("dave"), jid("dave"), USERS["dave"])
        self.waitState("dave", "connected")


class AdminLiveSQLiteTests(AdminLiveMixin, SynchronousTestCase):
    timeout = 120

    def setUp(self) -> None:
        self.setUpStack()

    def test_sighup(self) -> None:
        """
        SIGHUP applies the live keys, names those that need a restart, and
        keeps running on a broken file.
        """
        path = self.gateway.configFile
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace("[xmpp]\n", "[xmpp]\nstatus_text = Am Telefon\npriority = -3\n"))
        assert self.gateway.pid is not None
        os.kill(self.gateway.pid, signal.SIGHUP)
        waitFor("the reload to be logged", lambda: "priority changed; takes effect after a "
                "restart" in self.gateway.logTail(50) or None, WITHIN)  # fmt: skip
        self.assertIn("applied [xmpp] status_text", self.gateway.logTail(50))
        with open(path, "a", encoding="utf-8") as f:
            f.write("nonsense = 1\n")
        os.kill(self.gateway.pid, signal.SIGHUP)
        waitFor("the broken file to be logged", lambda: "configuration not reloaded" in
                self.gateway.logTail(50) or None, WITHIN)  # fmt: skip
        self.assertTrue(self.gateway.running)
        self.assertTrue(self.gateway.isReady())


class AdminLivePostgreSQLTests(AdminLiveMixin, SynchronousTestCase):
    """
    The same on PostgreSQL: once the gateway LISTENs its periodic check
    runs only every 60 s, so a change seen within seconds came by NOTIFY.
    """

    timeout = 180

    def setUp(self) -> None:
        from sipxmpp.testing.postgres import PostgresServer, requirePostgres

        requirePostgres()
        server = startForTest(self, PostgresServer())
        self.storeURL = server.createDatabase("adminlive")
        self.setUpStack()
        waitFor("the gateway to LISTEN", lambda: "listening for account changes" in
                self.gateway.logTail(300) or None, WITHIN)  # fmt: skip
