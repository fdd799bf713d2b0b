"""
The per-account XMPP server in the store (issue 19, item 4): the
C{xmpp_server} column, its migration from an older schema, and the admin
change the running gateway's account watch notices. SQLite here;
L{tests.integration.test_store_xmppserver_postgresql} runs the same on
PostgreSQL.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.store.accounts import verifyOrWriteKeyCheck
from sipxmpp.store.addresses import InvalidAddress
from sipxmpp.store.database import Database
from sipxmpp.store.errors import AccountNotFound
from sipxmpp.store.keyfile import createKeyFile
from sipxmpp.store.migrations import MIGRATIONS, latestVersion, migrateBlocking
from sipxmpp.store.opening import Store, StoreSettings, backendFor, initialiseStore, openStore
from sipxmpp.store.records import AccountRecord
from sipxmpp.store.runners import synchronousRunner
from tests.unit.test_store_behaviour import ALICE, PASSWORD

BOB = "sip:bob@example.test"
CAROL = "sip:carol@example.test"
MIGRATION = "per-account XMPP server"


class XMPPServerStoreMixin:
    """
    Tests every backend must pass. Subclasses implement L{newStoreURL}.
    """

    successResultOf: Any
    failureResultOf: Any
    assertEqual: Any
    assertIn: Any
    assertIsNone: Any
    assertNotEqual: Any
    addCleanup: Any
    mktemp: Any

    def newStoreURL(self) -> str:
        raise NotImplementedError()

    def setUp(self) -> None:
        self.url = self.newStoreURL()
        folder = self.mktemp()
        os.makedirs(folder)
        self.settings = StoreSettings(url=self.url, keyFile=os.path.join(folder, "secret.key"))
        self.clockTime = 1_000_000.0
        self.store = self.track(initialiseStore(self.settings, now=lambda: self.clockTime))

    def track(self, store: Store) -> Store:
        self.addCleanup(store.close)
        return store

    def add(self, aor: str, jid: str, **kw: Any) -> AccountRecord:
        record: AccountRecord = self.successResultOf(
            self.store.accounts.addAccount(AccountRecord(aor, jid, **kw), PASSWORD))
        return record

    def test_defaultAndOwn(self) -> None:
        """
        A new account uses C{[xmpp] server} (L{None}); one added with its
        own server keeps it, spelled one way, as the publisher looks it up
        and as a bulk import stores it.
        """
        self.assertIsNone(self.add(ALICE, "alice@example.test").server)
        self.assertEqual(self.add(BOB, "bob@elsewhere.test", server="TLS:xmpp.elsewhere.test:5223")
                         .server, "tls:xmpp.elsewhere.test:5223")  # fmt: skip
        accounts = self.store.accounts
        added = self.successResultOf(accounts.addAccounts(
            [(AccountRecord(CAROL, "carol@third.test", server="SRV"), PASSWORD)]))
        self.assertEqual([r.server for r in added], ["srv"])
        self.assertEqual([r.server for r in self.successResultOf(accounts.listAccounts())],
                         [None, "tls:xmpp.elsewhere.test:5223", "srv"])  # fmt: skip
        self.assertIsNone(self.successResultOf(accounts.lookup(ALICE)).server)
        self.assertEqual(self.successResultOf(accounts.lookup(BOB)).server,
                         "tls:xmpp.elsewhere.test:5223")  # fmt: skip
        self.assertEqual(self.successResultOf(accounts.credentials(CAROL)).server, "srv")

    def test_malformedRefused(self) -> None:
        accounts = self.store.accounts
        failure = self.failureResultOf(accounts.addAccount(
            AccountRecord(ALICE, "alice@example.test", server="tls:nohost"), PASSWORD),
            InvalidAddress)  # fmt: skip
        self.assertIn("tls:HOST:PORT", str(failure.value))
        self.add(ALICE, "alice@example.test")
        self.failureResultOf(accounts.setServer(ALICE, "default"), InvalidAddress)
        self.assertIsNone(self.successResultOf(accounts.lookup(ALICE)).server)

    def test_setServer(self) -> None:
        """
        Setting and clearing the server is stored and changes what the
        account watch compares (so a running gateway hears of it); an
        unknown AoR fails.
        """
        self.add(ALICE, "alice@example.test")
        accounts = self.store.accounts
        before = self.successResultOf(accounts.accountVersions())
        token = self.successResultOf(accounts.changeToken())
        self.clockTime += 1
        record = self.successResultOf(accounts.setServer(ALICE, "127.0.0.1:5223"))
        self.assertEqual((record.aor, record.server, record.updatedAt),
                         (ALICE, "127.0.0.1:5223", self.clockTime))  # fmt: skip
        self.assertEqual(self.successResultOf(accounts.lookup(ALICE)).server, "127.0.0.1:5223")
        self.assertNotEqual(self.successResultOf(accounts.accountVersions()), before)
        self.assertNotEqual(self.successResultOf(accounts.changeToken()), token)
        self.assertIsNone(self.successResultOf(accounts.setServer(ALICE, None)).server)
        self.assertIsNone(self.successResultOf(accounts.lookup(ALICE)).server)
        self.failureResultOf(accounts.setServer(BOB, "srv"), AccountNotFound)

    def test_upgradeOldDatabase(self) -> None:
        """
        A store from before the per-account server (migrated only that far,
        with accounts written as that schema had them) is migrated when
        opened: every account keeps its secret and uses the default;
        setting a server works after.
        """
        self.store.close()
        url = self.newStoreURL()
        database = Database(backendFor(url), synchronousRunner)
        backend = database.backend.name
        [mine] = [m for m in MIGRATIONS[backend] if m.description == MIGRATION]
        before = [m for m in MIGRATIONS[backend] if m.version < mine.version]
        self.assertEqual(migrateBlocking(database, before), mine.version - 1)
        box = createKeyFile(os.path.join(os.path.dirname(self.settings.keyFile), "old.key"))

        def provision(tx: Any) -> None:
            verifyOrWriteKeyCheck(tx, box)
            for aor, jid, enabled, backpublish in ((ALICE, "alice@example.test", True, False),
                                                   (BOB, "bob@example.test", False, True)):
                tx.execute(
                    "INSERT INTO accounts (aor, jid, secret, enabled, created_at, updated_at, "
                    "backpublish) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (aor, jid, box.encrypt(aor, PASSWORD), enabled, 1.0, 1.0, backpublish),
                )

        database.interactBlocking(provision)
        database.close()
        settings = StoreSettings(url=url, keyFile=box.path)
        upgraded = self.track(openStore(settings, now=lambda: self.clockTime))
        self.assertEqual(upgraded.schemaVersion, latestVersion(backend))
        records = self.successResultOf(upgraded.accounts.listAccounts())
        self.assertEqual([(r.aor, r.enabled, r.backpublish, r.server) for r in records],
                         [(ALICE, True, False, None), (BOB, False, True, None)])  # fmt: skip
        account = self.successResultOf(upgraded.accounts.lookup(ALICE))
        self.assertEqual((account.password, account.server), (PASSWORD, None))
        self.successResultOf(upgraded.accounts.setServer(ALICE, "tls:[::1]:5223"))
        self.assertEqual(self.successResultOf(upgraded.accounts.lookup(ALICE)).server,
                         "tls:[::1]:5223")  # fmt: skip


class SQLiteXMPPServerStoreTests(XMPPServerStoreMixin, SynchronousTestCase):
    def newStoreURL(self) -> str:
        folder = os.path.abspath(self.mktemp())
        return f"sqlite:///{folder}/state/sipxmpp.sqlite"
