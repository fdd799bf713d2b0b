"""
No secret leaks: the admin command (in-process, all output captured) and
the store (every log event captured, failures included) are driven through
their normal and failing paths, and neither the password nor the key
appears anywhere.
"""

from __future__ import annotations

import io
import os
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.admin import main
from sipxmpp.store.errors import SecretUnreadable, WrongKey
from sipxmpp.store.keyfile import createKeyFile
from sipxmpp.store.opening import StoreSettings, openStore
from sipxmpp.store.persister import RuntimeStatePersister
from sipxmpp.telephony.state import TelephonyStateMachine

PASSWORD = "Unit-Leak-Probe-7x"
ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"


class NoSecretTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.keyFile = os.path.join(self.folder, "secret.key")
        self.url = f"sqlite:///{self.folder}/db.sqlite"
        self.config = os.path.join(self.folder, "sipxmpp.conf")
        with open(self.config, "w") as f:
            f.write(
                "[sip]\nupstream = sip:127.0.0.1:5070\ndomain = example.test\n"
                f"[store]\nurl = {self.url}\nkey_file = {self.keyFile}\n"
            )
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.output: list[str] = []

    def admin(self, *args: str, stdin: str = "") -> int:
        out, err = io.StringIO(), io.StringIO()
        code = main(["--config", self.config, *args], stdin=io.StringIO(stdin), stdout=out,
                    stderr=err)
        self.output += [out.getvalue(), err.getvalue()]
        return code

    def logged(self) -> list[str]:
        texts = []
        for event in self.events:
            texts.append(formatEvent(event))
            texts.append(repr(event))
            failure: Any = event.get("log_failure")
            if failure is not None:
                texts.append(failure.getTraceback())
        return texts

    def test_noSecretAnywhere(self) -> None:
        self.assertEqual(self.admin("init"), 0)
        with open(self.keyFile) as f:
            key = f.read().strip().split(":", 1)[1]
        self.assertEqual(self.admin("account", "add", ALICE, "alice@example.test",
                                    "--password-stdin", stdin=PASSWORD + "\n"), 0)
        self.assertEqual(self.admin("account", "add", BOB, "bob@example.test",
                                    "--password-stdin", stdin=PASSWORD + "-bob\n"), 0)
        for args in (("account", "list"), ("account", "list", "--json"),
                     ("account", "show", ALICE), ("account", "show", ALICE, "--json"),
                     ("state",), ("state", "--json")):
            self.assertEqual(self.admin(*args), 0, args)
        # An existing account and a mismatched retry: refusals echo nothing.
        self.assertEqual(self.admin("account", "add", ALICE, "x@example.test",
                                    "--password-stdin", stdin=PASSWORD), 4)

        store = openStore(StoreSettings(self.url, self.keyFile), owner="gw")
        self.addCleanup(store.close)
        account = self.successResultOf(store.accounts.lookup(ALICE))
        self.assertEqual(account.password, PASSWORD)
        texts = [repr(account), str(account), repr(store), repr(store.accounts)]

        # A secret moved to another row: the failure names the AoR only.
        store.database.interactBlocking(lambda tx: tx.execute(
            "UPDATE accounts SET secret = (SELECT secret FROM accounts WHERE aor = ?) "
            "WHERE aor = ?", (ALICE, BOB)))
        failure = self.failureResultOf(store.accounts.lookup(BOB), SecretUnreadable)
        texts.append(failure.getTraceback())

        # Another key: the message names the file, not the key.
        other = os.path.join(self.folder, "other.key")
        createKeyFile(other)
        e = self.assertRaises(WrongKey, openStore, StoreSettings(self.url, other))
        texts.append(str(e))

        # Runtime state writes that fail are logged.
        clock = Clock()
        machine = TelephonyStateMachine(clock)
        persister = RuntimeStatePersister(store.runtime, clock)
        persister.attach(machine)
        store.close()
        machine.bindingUpdated(ALICE, "c1", 60)
        clock.advance(0)
        self.assertTrue(any("retrying" in t for t in self.logged()))

        everything = self.output + self.logged() + texts
        self.assertTrue(any(ALICE in t for t in everything))
        for text in everything:
            for secret in (PASSWORD, key):
                self.assertNotIn(secret, text)
