"""
C{sipxmpp-admin account check} against a real Prosody: a good account
logs in and lists the user's resources with whether they offer remote
control; a wrong password is reported as such with exit status 5.

The user's desktop clients are slixmpp processes
(C{tests/integration/xmppclients.py}): one answers XEP-0146 like Psi, one
offers no commands.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.testing.ports import LOOPBACK, freeTCPPort
from sipxmpp.testing.process import SharedServer, requireBinaries
from sipxmpp.testing.prosody import ProsodyServer
from tests.integration.test_admin_cli import ROOT, adminCommand

PASSWORDS = {"alice": "alice-Check-pw1", "bob": "bob-Check-pw2"}
CLIENTS = os.path.join(ROOT, "tests", "integration", "xmppclients.py")


class AccountCheckTests(SynchronousTestCase):
    prosody = SharedServer(lambda: ProsodyServer(users=PASSWORDS, directTLS=True))

    def setUp(self) -> None:
        requireBinaries("prosody", "prosodyctl", "openssl")
        self.server = self.prosody.get(self)
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.keyFile = os.path.join(self.folder, "secret.key")
        self.config = os.path.join(self.folder, "sipxmpp.conf")
        with open(self.config, "w") as f:
            f.write(
                "[sip]\nupstream = sip:127.0.0.1:5070\ndomain = example.test\n"
                f"[xmpp]\nca_file = {self.server.caFile}\n"
                f"server = {self.server.host}:{self.server.port}\n"
                f"[store]\nurl = sqlite:///{self.folder}/db.sqlite\nkey_file = {self.keyFile}\n"
            )
        self.outputs: list[str] = []
        self.addCleanup(self.assertNoSecretInOutput)
        self.assertEqual(self.admin("init")[0], 0)
        self.add("sip:alice@example.test", "alice@example.test", PASSWORDS["alice"])
        self.add("sip:bob@example.test", "bob@example.test", "not-bobs-password-9")

    def admin(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        process = subprocess.run(
            [*adminCommand(), "--config", self.config, *args],
            input=stdin, capture_output=True, text=True, timeout=90, env=env,
        )
        self.outputs += [process.stdout, process.stderr]
        return process.returncode, process.stdout, process.stderr

    def add(self, aor: str, jid: str, password: str) -> None:
        code, _, err = self.admin("account", "add", aor, jid, "--password-stdin", stdin=password)
        self.assertEqual((code, err), (0, ""))

    def assertNoSecretInOutput(self) -> None:
        with open(self.keyFile) as f:
            key = f.read().strip().split(":", 1)[1]
        for output in self.outputs:
            for secret in (*PASSWORDS.values(), "not-bobs-password-9", key):
                self.assertNotIn(secret, output)

    def desktopClient(self, resource: str, rc: str, priority: int) -> None:
        try:
            import slixmpp  # noqa: F401
        except ImportError:
            self.skipTest("slixmpp is not installed (the test's desktop XMPP clients)")
        if not os.path.exists(CLIENTS):
            self.skipTest(f"{CLIENTS} is missing")
        process = subprocess.Popen(
            [sys.executable, CLIENTS, "--jid", f"alice@example.test/{resource}",
             "--password", PASSWORDS["alice"], "--host", self.server.host,
             "--port", str(self.server.port), "--ca-file", self.server.caFile,
             "--priority", str(priority), "--rc", rc],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )

        def stop() -> None:
            if process.poll() is None:
                process.kill()
            process.wait()

        self.addCleanup(stop)
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                line = process.stdout.readline()
                if not line:
                    break
                if json.loads(line).get("event") == "ready":
                    return
        self.fail(f"desktop client {resource} did not log in")

    def test_accountsOwnServer(self) -> None:
        """
        The check connects where the account's own server says: nowhere
        useful at a closed port (not within the timeout), over Direct TLS
        at Prosody's Direct TLS port.
        """
        closed = freeTCPPort()
        self.assertEqual(self.admin("account", "set-server", "sip:alice@example.test",
                                    f"{LOOPBACK}:{closed}")[0], 0)
        code, out, err = self.admin("account", "check", "sip:alice@example.test",
                                    "--timeout", "3", "--wait", "0")
        self.assertEqual(code, 5, out)
        self.assertIn("did not complete within 3 s", err)
        server = f"tls:{LOOPBACK}:{self.server.directTLSPort}"
        self.assertEqual(self.admin("account", "set-server", "sip:alice@example.test",
                                    server)[0], 0)
        code, out, err = self.admin("account", "check", "sip:alice@example.test",
                                    "--wait", "0.5")
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn("ok: logged in as alice@example.test/sipxmpp", out)

    def test_loginAlone(self) -> None:
        """
        A good account logs in; no other resource is online.
        """
        code, out, err = self.admin("account", "check", "sip:alice@example.test",
                                    "--wait", "0.5")
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn("ok: logged in as alice@example.test/sipxmpp", out)
        self.assertIn("no other resource of alice@example.test is online", out)

    def test_remoteControlDetected(self) -> None:
        """
        The user's resources are listed by priority with whether they offer
        rc#set-status.
        """
        self.desktopClient("psi", "psi", 5)
        self.desktopClient("gajim", "none", 1)
        code, out, err = self.admin("account", "check", "sip:alice@example.test",
                                    "--wait", "2")
        self.assertEqual((code, err), (0, ""), out)
        lines = out.splitlines()
        self.assertIn(
            "resource alice@example.test/psi: available, priority 5, remote control: yes", lines)
        self.assertIn(
            "resource alice@example.test/gajim: available, priority 1, "
            "remote control: no (no ad-hoc commands)", lines)
        self.assertIn("remote control offered by 1 of 2 resource(s)", lines)

    def test_wrongPassword(self) -> None:
        """
        A refused login is exit status 5 with the server's reason.
        """
        code, out, err = self.admin("account", "check", "sip:bob@example.test",
                                    "--timeout", "20")
        self.assertEqual((code, out), (5, ""), err)
        self.assertTrue(err.startswith(
            "sipxmpp-admin: error: XMPP login as bob@example.test/sipxmpp failed: "
            "authentication: the server refused SCRAM-SHA-1: not-authorized"), err)

    def test_notProvisioned(self) -> None:
        code, _, err = self.admin("account", "check", "sip:carol@example.test")
        self.assertEqual(code, 3)
        self.assertIn("no account is provisioned for sip:carol@example.test", err)
