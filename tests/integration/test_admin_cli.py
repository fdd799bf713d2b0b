"""
C{sipxmpp-admin} run for real: the console entry point in a subprocess
with a temporary configuration, on SQLite and on PostgreSQL.

Every run's output is kept, and each test ends by asserting that neither
the password nor the key appears in any of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.store.opening import StoreSettings, openStore
from sipxmpp.store.records import AoRChanges, SessionRecord
from sipxmpp.telephony.snapshots import BindingSnapshot, DialogSnapshot, UserSnapshot
from sipxmpp.testing.postgres import PostgresServer, requirePostgres
from sipxmpp.testing.process import SharedServer
from sipxmpp.xmpp.savedstatuses import SavedStatus

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PASSWORD = "Zx9-cli-secret-Pw"
ALICE = "sip:alice@example.test"


def adminCommand() -> list[str]:
    """
    The console script when installed next to this Python, else the module
    it runs (same main()).
    """
    script = os.path.join(os.path.dirname(sys.executable), "sipxmpp-admin")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "sipxmpp.ops.admin"]


class AdminCLIMixin:
    """
    The admin command's round trips; subclasses give the store URL.
    """

    assertEqual: Any
    assertIn: Any
    assertNotIn: Any
    assertTrue: Any
    addCleanup: Any
    mktemp: Any

    def storeURL(self) -> str:
        raise NotImplementedError()

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.keyFile = os.path.join(self.folder, "etc", "secret.key")
        self.url = self.storeURL()
        self.config = self.writeConfig(self.url, self.keyFile)
        self.outputs: list[str] = []
        self.addCleanup(self.assertNoSecretInOutput)

    def writeConfig(self, url: str, keyFile: str, name: str = "sipxmpp.conf") -> str:
        path = os.path.join(self.folder, name)
        with open(path, "w") as f:
            f.write(
                "[sip]\nupstream = sip:127.0.0.1:5070\ndomain = example.test\n"
                f"[store]\nurl = {url}\nkey_file = {keyFile}\n"
            )
        return path

    def admin(self, *args: str, stdin: str = "", config: str | None = None
              ) -> tuple[int, str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        process = subprocess.run(
            [*adminCommand(), "--config", config or self.config, *args],
            input=stdin, capture_output=True, text=True, timeout=60, env=env, cwd=self.folder,
        )
        self.outputs += [process.stdout, process.stderr]
        return process.returncode, process.stdout, process.stderr

    def assertNoSecretInOutput(self) -> None:
        secrets = [PASSWORD]
        if os.path.exists(self.keyFile):
            with open(self.keyFile) as f:
                secrets.append(f.read().strip().split(":", 1)[1])
        for output in self.outputs:
            for secret in secrets:
                self.assertNotIn(secret, output)

    def init(self) -> None:
        code, out, err = self.admin("init")
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"created key file {self.keyFile} (mode 0600)", out)

    def test_roundTrip(self) -> None:
        """
        init, add, list, show, disable, enable, set-password, remove.
        """
        self.init()
        self.assertEqual(os.stat(self.keyFile).st_mode & 0o777, 0o600)
        code, out, err = self.admin(
            "account", "add", "SIP:alice@Example.TEST;transport=tcp", "Alice@example.test",
            "--mode", "resource", "--status-text", "On the phone", "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        self.assertEqual((code, out, err),
                         (0, "added sip:alice@example.test -> alice@example.test (enabled)\n", ""))
        self.admin("account", "add", "sip:bob@example.test", "bob@example.test",
                   "--password-stdin", stdin="bob-pw\n")
        code, out, _ = self.admin("account", "list")
        self.assertEqual(out, "sip:alice@example.test\talice@example.test\tresource\tenabled\tdefault\n"
                              "sip:bob@example.test\tbob@example.test\tdefault\tenabled\tdefault\n")
        code, out, _ = self.admin("account", "list", "--json")
        listed = json.loads(out)
        self.assertEqual([a["aor"] for a in listed], [ALICE, "sip:bob@example.test"])
        self.assertEqual(listed[0]["status_text"], "On the phone")
        code, out, _ = self.admin("account", "show", "sip:alice@EXAMPLE.test")
        self.assertEqual(code, 0)
        self.assertIn("jid: alice@example.test\n", out)
        self.assertIn("mode: resource\n", out)
        self.assertIn("password: set (encrypted at rest)\n", out)
        self.assertEqual(self.admin("account", "disable", ALICE)[:2], (0, f"disabled {ALICE}\n"))
        self.assertIn("\tdisabled\tdefault\n", self.admin("account", "list")[1])
        self.assertEqual(self.admin("account", "enable", ALICE)[:2], (0, f"enabled {ALICE}\n"))
        code, out, _ = self.admin("account", "set-password", ALICE, "--password-stdin",
                                  stdin=PASSWORD + "-2\n")
        self.assertEqual((code, out), (0, f"password of {ALICE} replaced\n"))
        store = openStore(StoreSettings(self.url, self.keyFile), owner="test")
        self.addCleanup(store.close)
        account = store.accounts.lookup(ALICE).result
        self.assertEqual(account.password, PASSWORD + "-2")
        self.assertEqual(self.admin("account", "remove", ALICE)[:2], (0, f"removed {ALICE}\n"))
        self.assertEqual(self.admin("account", "list")[1],
                         "sip:bob@example.test\tbob@example.test\tdefault\tenabled\tdefault\n")

    def test_refusals(self) -> None:
        """
        Bad input, missing and existing things get distinct exit codes and
        one clear line on stderr.
        """
        code, _, err = self.admin("account", "list")
        self.assertEqual(code, 1)
        self.assertIn("sipxmpp-admin: error: ", err)
        self.init()
        code, _, err = self.admin("init")
        self.assertEqual(code, 4)
        self.assertIn("refusing to overwrite", err)
        add = ("account", "add")
        self.admin(*add, ALICE, "alice@example.test", "--password-stdin", stdin=PASSWORD)
        cases = [
            ((*add, ALICE, "other@example.test", "--password-stdin"), PASSWORD, 4,
             "sip:alice@example.test is already provisioned"),
            ((*add, "sip:carol@example.test", "alice@example.test", "--password-stdin"),
             PASSWORD, 4, "the JID alice@example.test is already provisioned"),
            ((*add, "carol@example.test", "carol@example.test", "--password-stdin"), PASSWORD,
             2, "did you mean 'sip:carol@example.test'?"),
            ((*add, "sip:carol@example.test", "carol@example.test/phone", "--password-stdin"),
             PASSWORD, 2, "has a resource"),
            ((*add, "sip:carol@example.test", "carol@example.test", "--mode", "loud",
              "--password-stdin"), PASSWORD, 2, "--mode must be one of"),
            ((*add, "sip:carol@example.test", "carol@example.test", "--password", PASSWORD),
             "", 2, "usage error"),
            ((*add, "sip:carol@example.test", "carol@example.test"), PASSWORD, 2,
             "use --password-stdin"),
            ((*add, "sip:carol@example.test", "carol@example.test", "--password-stdin"), "\n",
             2, "no password on standard input"),
            (("account", "show", "sip:nobody@example.test"), "", 3,
             "no account is provisioned for sip:nobody@example.test"),
            (("account", "remove", "sip:nobody@example.test"), "", 3, "no account"),
            (("account", "disable", "sip:nobody@example.test"), "", 3, "no account"),
            (("account",), "", 2, "expected an account command"),
            (("frobnicate",), "", 2, "usage error"),
            ((), "", 2, "expected a command"),
        ]
        for args, stdin, expected, message in cases:
            code, out, err = self.admin(*args, stdin=stdin)
            self.assertEqual(code, expected, (args, out, err))
            self.assertIn(message, err, args)
        self.assertEqual(self.admin("account", "list")[1],
                         "sip:alice@example.test\talice@example.test\tdefault\tenabled\tdefault\n")

    def test_wrongKeyAndBadConfig(self) -> None:
        """
        Another key file, or a broken configuration, is exit status 1 with
        the reason.
        """
        self.init()
        otherKey = os.path.join(self.folder, "other.key")
        otherConfig = self.writeConfig(self.url, otherKey, "other.conf")
        shutil.copy(self.keyFile, otherKey)
        with open(otherKey, "w") as f:
            f.write("sipxmpp-key-v1:" + "A" * 43 + "=\n")
        os.chmod(otherKey, 0o600)
        code, _, err = self.admin("account", "list", config=otherConfig)
        self.assertEqual(code, 1)
        self.assertIn("key check failed", err)
        broken = os.path.join(self.folder, "broken.conf")
        with open(broken, "w") as f:
            f.write("[store]\nurl = mysql://x\n")
        code, _, err = self.admin("account", "list", config=broken)
        self.assertEqual(code, 1)
        self.assertIn("configuration error", err)

    def test_state(self) -> None:
        """
        state shows what the gateways saved: telephony state computed like
        the gateway does, the XMPP session, saved client statuses.
        """
        self.init()
        self.assertEqual(self.admin("state")[1], "no saved runtime state\n")
        import time

        now = time.time()
        store = openStore(StoreSettings(self.url, self.keyFile), owner="gw-a")
        self.addCleanup(store.close)
        store.runtime.write([AoRChanges(
            ALICE,
            snapshot=UserSnapshot(ALICE, (BindingSnapshot("desk", now + 3600),),
                                  (DialogSnapshot(("c", "1", "2"), True, False, now + 600),)),
            statuses=(SavedStatus(ALICE, "alice@example.test/psi", "away", 5, "lunch", now),),
            session=SessionRecord(ALICE, "connected", "rc via psi", now),
        )], now)
        code, out, _ = self.admin("state")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertEqual(lines[0], f"{ALICE}\ton-the-phone\txmpp=connected\tgateway=gw-a")
        self.assertIn('  dialog ["c","1","2"] confirmed', out)
        self.assertIn("saved status of alice@example.test/psi: status=away message='lunch'", out)
        report = json.loads(self.admin("state", "--json")[1])
        self.assertEqual(report[0]["telephony"], "on-the-phone")
        self.assertEqual(report[0]["xmpp"]["state"], "connected")

    def writeFile(self, name: str, text: str, mode: int = 0o600) -> str:
        path = os.path.join(self.folder, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_importExportCSV(self) -> None:
        """
        account import of a CSV file provisions every line; account export
        writes them back without any password; list shows them.
        """
        self.init()
        path = self.writeFile("accounts.csv", (
            "aor,jid,password,mode,status_text,enabled\n"
            f"SIP:alice@Example.TEST,Alice@example.test,{PASSWORD},resource,\"On a call, busy\",\n"
            f"sip:bob@example.test,bob@example.test,{PASSWORD}2,,,false\n"
        ))
        code, out, err = self.admin("account", "import", path)
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"imported 2 account(s) (1 enabled) from {path}", out)
        code, out, err = self.admin("account", "export")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertEqual(lines[0], "aor,jid,mode,status_text,ringing_text,hold_text,enabled,"
                                   "backpublish,xmpp_server,created_at,updated_at")
        self.assertTrue(lines[1].startswith(
            'sip:alice@example.test,alice@example.test,resource,"On a call, busy",,,true,'))
        self.assertTrue(lines[2].startswith("sip:bob@example.test,bob@example.test,,,,,false,"))
        self.assertNotIn("password", out)
        code, out, _ = self.admin("account", "export", "--format", "jsonl")
        records = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([(r["aor"], r["enabled"], r["status_text"]) for r in records],
                         [(ALICE, True, "On a call, busy"),
                          ("sip:bob@example.test", False, None)])
        self.assertNotIn("password", records[0])
        store = openStore(StoreSettings(self.url, self.keyFile))
        self.addCleanup(store.close)
        credentials = store.accounts.credentials("sip:bob@example.test")
        self.assertEqual(self.successResultOf(credentials).password, PASSWORD + "2")

    def test_setBackpublish(self) -> None:
        """
        account set-backpublish opts a user out of back-publishing and in
        again; show, list --json, export and import carry it; a bad value
        is a usage error, an unknown AoR not found.
        """
        self.init()
        self.admin("account", "add", ALICE, "alice@example.test", "--password-stdin",
                   stdin=PASSWORD + "\n")
        self.assertIn("backpublish: yes\n", self.admin("account", "show", ALICE)[1])
        self.assertEqual(self.admin("account", "set-backpublish", ALICE, "off")[:2],
                         (0, f"back-publishing of {ALICE}: off (opted out)\n"))
        self.assertIn("backpublish: no (opted out)\n", self.admin("account", "show", ALICE)[1])
        [listed] = json.loads(self.admin("account", "list", "--json")[1])
        self.assertEqual(listed["backpublish"], False)
        self.assertTrue(self.admin("account", "export")[1].splitlines()[1].startswith(
            f"{ALICE},alice@example.test,,,,,true,false,"))
        self.assertEqual(self.admin("account", "set-backpublish", ALICE, "ON")[:2],
                         (0, f"back-publishing of {ALICE}: on\n"))
        code, _, err = self.admin("account", "set-backpublish", ALICE, "maybe")
        self.assertEqual(code, 2)
        self.assertIn("expected on or off, not 'maybe'", err)
        code, _, err = self.admin("account", "set-backpublish", "sip:nobody@example.test", "off")
        self.assertEqual(code, 3, err)
        path = self.writeFile("accounts.jsonl", json.dumps(
            {"aor": "sip:bob@example.test", "jid": "bob@example.test", "password": PASSWORD,
             "backpublish": "false"}) + "\n")
        self.assertEqual(self.admin("account", "import", path)[0], 0)
        code, out, _ = self.admin("account", "show", "sip:bob@example.test")
        self.assertIn("backpublish: no (opted out)\n", out)

    def test_setServer(self) -> None:
        """
        A user on another XMPP server: account add --server and
        set-server store it (one spelling), show, list, list --json and
        export show it, import takes it, default clears it; a malformed
        value is a usage error naming the forms, an unknown AoR not found.
        """
        self.init()
        code, out, err = self.admin("account", "add", ALICE, "alice@elsewhere.test",
                                    "--server", "TLS:xmpp.elsewhere.test:5223",
                                    "--password-stdin", stdin=PASSWORD + "\n")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("xmpp-server: tls:xmpp.elsewhere.test:5223\n",
                      self.admin("account", "show", ALICE)[1])
        self.assertEqual(self.admin("account", "list")[1],
                         f"{ALICE}\talice@elsewhere.test\tdefault\tenabled\t"
                         "tls:xmpp.elsewhere.test:5223\n")
        self.assertEqual(self.admin("account", "set-server", ALICE, "srv")[:2],
                         (0, f"XMPP server of {ALICE}: srv\n"))
        [listed] = json.loads(self.admin("account", "list", "--json")[1])
        self.assertEqual(listed["xmpp_server"], "srv")
        self.assertTrue(self.admin("account", "export")[1].splitlines()[1].startswith(
            f"{ALICE},alice@elsewhere.test,,,,,true,true,srv,"))
        self.assertEqual(self.admin("account", "set-server", ALICE, "default")[:2],
                         (0, f"XMPP server of {ALICE}: default (DNS SRV)\n"))
        self.assertIn("xmpp-server: default (DNS SRV)\n", self.admin("account", "show", ALICE)[1])
        for bad in (("account", "set-server", ALICE, "tls:nohost"),
                    ("account", "add", "sip:x@example.test", "x@example.test", "--server",
                     "xmpp.example.test")):
            code, _, err = self.admin(*bad)
            self.assertEqual(code, 2, err)
            self.assertIn("HOST:PORT (STARTTLS) or tls:HOST:PORT (Direct TLS", err)
        code, _, err = self.admin("account", "set-server", "sip:nobody@example.test", "srv")
        self.assertEqual(code, 3, err)
        path = self.writeFile("accounts.csv", (
            "aor,jid,password,xmpp_server\n"
            f"sip:bob@example.test,bob@example.test,{PASSWORD},127.0.0.1:5222\n"
            f"sip:carol@example.test,carol@example.test,{PASSWORD},tls:nohost\n"))
        code, _, err = self.admin("account", "import", path)
        self.assertEqual(code, 2)
        self.assertIn(f"{path}:3: xmpp_server: expected HOST:PORT", err)
        path = self.writeFile("accounts.jsonl", json.dumps(
            {"aor": "sip:bob@example.test", "jid": "bob@example.test", "password": PASSWORD,
             "xmpp_server": "[::1]:5222"}) + "\n")
        self.assertEqual(self.admin("account", "import", path)[0], 0)
        self.assertIn("xmpp-server: [::1]:5222\n",
                      self.admin("account", "show", "sip:bob@example.test")[1])

    def test_importJSONLines(self) -> None:
        """
        JSON lines are told by their content when the name says nothing,
        and can come from standard input.
        """
        self.init()
        text = (
            json.dumps({"aor": ALICE, "jid": "alice@example.test", "password": PASSWORD,
                        "ringing_text": "Ringing", "enabled": True}) + "\n\n"
            + json.dumps({"aor": "sip:bob@example.test", "jid": "bob@example.test",
                          "password": PASSWORD, "enabled": False}) + "\n"
        )
        path = self.writeFile("accounts.txt", text)
        code, out, err = self.admin("account", "import", path, "--dry-run")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("2 account(s) (1 enabled) would be imported", out)
        code, out, _ = self.admin("account", "list")
        self.assertEqual(out, "")
        code, out, err = self.admin("account", "import", "-", stdin=text)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("imported 2 account(s) (1 enabled) from <stdin>", out)
        code, out, _ = self.admin("account", "show", ALICE)
        self.assertIn("ringing-text: Ringing", out)

    def test_importBadLines(self) -> None:
        """
        Every bad line is reported with its number and reason, the exit
        status is 2, and nothing is stored, not even the good lines.
        """
        self.init()
        self.admin("account", "add", "sip:bob@example.test", "bob@example.test",
                   "--password-stdin", stdin=PASSWORD)
        path = self.writeFile("accounts.csv", (
            "aor,jid,password,mode\n"
            f"{ALICE},alice@example.test,{PASSWORD},\n"
            f"alice@example.test,x@example.test,{PASSWORD},\n"
            f"sip:carol@example.test,carol@example.test,,\n"
            f"sip:dave@example.test,dave@example.test,{PASSWORD},loud\n"
            f"sip:bob@example.test,b@example.test,{PASSWORD},\n"
            f"{ALICE},alice2@example.test,{PASSWORD},\n"
            f"sip:erin@example.test,erin@example.test\n"
        ))
        code, out, err = self.admin("account", "import", path)
        self.assertEqual(code, 2)
        lines = err.splitlines()
        self.assertEqual([line.split(": ", 1)[0] for line in lines[:-1]],
                         [f"{path}:{n}" for n in (3, 4, 5, 6, 7, 8)])
        self.assertIn("did you mean", lines[0])
        self.assertIn("no password", lines[1])
        self.assertIn("invalid mode 'loud'", lines[2])
        self.assertIn("sip:bob@example.test is already provisioned", lines[3])
        self.assertIn("given twice (first as entry", lines[4])
        self.assertIn("2 fields where the header has 4", lines[5])
        self.assertIn("6 bad line(s)", lines[-1])
        self.assertIn("nothing was imported", lines[-1])
        code, out, _ = self.admin("account", "list")
        self.assertEqual([line.split("\t")[0] for line in out.splitlines()],
                         ["sip:bob@example.test"])
        path = self.writeFile("bad.jsonl", "{nope\n[1]\n"
                              + json.dumps({"aor": ALICE, "extra": 1}) + "\n")
        code, out, err = self.admin("account", "import", path)
        self.assertEqual(code, 2)
        self.assertIn(f"{path}:1: not JSON", err)
        self.assertIn(f"{path}:2: not a JSON object", err)
        self.assertIn(f"{path}:3: unknown field(s): extra", err)
        path = self.writeFile("header.csv", "sip,jid\n")
        code, out, err = self.admin("account", "import", path)
        self.assertEqual(code, 2)
        self.assertIn(f"{path}:1: the header row must name the columns", err)

    def test_importWarnsReadableFile(self) -> None:
        """
        A file other users can read is imported, with a warning.
        """
        self.init()
        path = self.writeFile("accounts.csv", f"aor,jid,password\n{ALICE},a@example.test,"
                              f"{PASSWORD}\n", mode=0o644)
        code, out, err = self.admin("account", "import", path)
        self.assertEqual(code, 0)
        self.assertIn(f"warning: {path} holds passwords and other users can read it "
                      "(mode 0644)", err)

    def test_help(self) -> None:
        code, out, _ = self.admin("--help")
        self.assertEqual(code, 0)
        self.assertIn("3 not found", out)
        code, out, _ = self.admin("account", "add", "--help")
        self.assertEqual(code, 0)
        self.assertIn("--password-stdin", out)


class SQLiteAdminCLITests(AdminCLIMixin, SynchronousTestCase):
    def storeURL(self) -> str:
        return f"sqlite:///{self.folder}/var/sipxmpp.sqlite"

    def test_secretNotInDatabaseFile(self) -> None:
        """
        The SQLite file holds the password only encrypted.
        """
        self.init()
        self.admin("account", "add", ALICE, "alice@example.test", "--password-stdin",
                   stdin=PASSWORD)
        for name in os.listdir(os.path.join(self.folder, "var")):
            with open(os.path.join(self.folder, "var", name), "rb") as f:
                self.assertNotIn(PASSWORD.encode(), f.read())


class PostgreSQLAdminCLITests(AdminCLIMixin, SynchronousTestCase):
    postgres = SharedServer(PostgresServer)

    def storeURL(self) -> str:
        requirePostgres()
        server = self.postgres.get(self)
        url = server.createDatabase("cli")
        self.addCleanup(server.dropDatabase, url)
        return url

    def test_importNotifies(self) -> None:
        """
        After an import the gateways LISTENing are told (NOTIFY), once.
        """
        import psycopg

        self.init()
        connection = psycopg.connect(self.url, autocommit=True)
        self.addCleanup(connection.close)
        connection.execute("LISTEN sipxmpp_accounts")
        path = self.writeFile("accounts.csv", f"aor,jid,password\n{ALICE},a@example.test,"
                              f"{PASSWORD}\n")
        code, _, err = self.admin("account", "import", path)
        self.assertEqual((code, err), (0, ""))
        channels = [n.channel for n in connection.notifies(timeout=5, stop_after=1)]
        self.assertEqual(channels, ["sipxmpp_accounts"])
