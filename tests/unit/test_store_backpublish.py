"""
The per-account back-publishing opt-out in the store (issue 18, item 2):
the C{backpublish} column, its migration from an older schema, and the
admin change the running gateway's account watch notices. SQLite here;
L{tests.integration.test_store_backpublish_postgresql} runs the same on
PostgreSQL.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.store.accounts import verifyOrWriteKeyCheck
from sipxmpp.store.database import Database
from sipxmpp.store.errors import AccountNotFound
from sipxmpp.store.keyfile import createKeyFile
from sipxmpp.store.migrations import MIGRATIONS, latestVersion, migrateBlocking
from sipxmpp.store.opening import Store, StoreSettings, backendFor, initialiseStore, openStore
from sipxmpp.store.records import AccountRecord
from sipxmpp.store.runners import synchronousRunner
from tests.unit.test_store_behaviour import ALICE, PASSWORD

BOB = "sip:bob@example.test"
OPT_OUT = "per-account back-publishing opt-out"


class BackpublishStoreMixin:
    """
    Tests every backend must pass. Subclasses implement L{newStoreURL}.
    """

    successResultOf: Any
    failureResultOf: Any
    assertEqual: Any
    assertTrue: Any
    assertFalse: Any
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

    def test_onByDefault(self) -> None:
        """
        A new account lets its presence go back to SIP; one added opted
        out is stored so; both as the publisher looks them up.
        """
        self.assertTrue(self.add(ALICE, "alice@example.test").backpublish)
        self.assertFalse(self.add(BOB, "bob@example.test", backpublish=False).backpublish)
        accounts = self.store.accounts
        self.assertEqual([r.backpublish for r in self.successResultOf(accounts.listAccounts())],
                         [True, False])  # fmt: skip
        self.assertTrue(self.successResultOf(accounts.lookup(ALICE)).backpublish)
        self.assertFalse(self.successResultOf(accounts.lookup(BOB)).backpublish)

    def test_setBackpublish(self) -> None:
        """
        Opting out and in again is stored and changes what the account
        watch compares (so a running gateway hears of it); an unknown AoR
        fails.
        """
        self.add(ALICE, "alice@example.test")
        accounts = self.store.accounts
        before = self.successResultOf(accounts.accountVersions())
        token = self.successResultOf(accounts.changeToken())
        self.clockTime += 1
        record = self.successResultOf(accounts.setBackpublish(ALICE, False))
        self.assertEqual((record.aor, record.backpublish, record.updatedAt),
                         (ALICE, False, self.clockTime))  # fmt: skip
        self.assertFalse(self.successResultOf(accounts.lookup(ALICE)).backpublish)
        self.assertNotEqual(self.successResultOf(accounts.accountVersions()), before)
        self.assertNotEqual(self.successResultOf(accounts.changeToken()), token)
        self.assertTrue(self.successResultOf(accounts.setBackpublish(ALICE, True)).backpublish)
        self.failureResultOf(accounts.setBackpublish(BOB, False), AccountNotFound)

    def test_upgradeOldDatabase(self) -> None:
        """
        A store from before the opt-out (migrated only that far, with
        accounts written as that schema had them) is migrated when opened:
        every account keeps its secret and is in; opting out works after.
        """
        self.store.close()
        url = self.newStoreURL()
        database = Database(backendFor(url), synchronousRunner)
        backend = database.backend.name
        [mine] = [m for m in MIGRATIONS[backend] if m.description == OPT_OUT]
        before = [m for m in MIGRATIONS[backend] if m.version < mine.version]
        self.assertEqual(migrateBlocking(database, before), mine.version - 1)
        box = createKeyFile(os.path.join(os.path.dirname(self.settings.keyFile), "old.key"))

        def provision(tx: Any) -> None:
            verifyOrWriteKeyCheck(tx, box)
            for aor, jid, mode, enabled in ((ALICE, "alice@example.test", "resource", True),
                                            (BOB, "bob@example.test", None, False)):
                tx.execute(
                    "INSERT INTO accounts (aor, jid, secret, mode, enabled, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (aor, jid, box.encrypt(aor, PASSWORD), mode, enabled, 1.0, 1.0),
                )

        database.interactBlocking(provision)
        database.close()
        settings = StoreSettings(url=url, keyFile=box.path)
        upgraded = self.track(openStore(settings, now=lambda: self.clockTime))
        self.assertEqual(upgraded.schemaVersion, latestVersion(backend))
        records = self.successResultOf(upgraded.accounts.listAccounts())
        self.assertEqual([(r.aor, r.mode, r.enabled, r.backpublish) for r in records],
                         [(ALICE, "resource", True, True), (BOB, None, False, True)])  # fmt: skip
        account = self.successResultOf(upgraded.accounts.lookup(ALICE))
        self.assertEqual((account.password, account.backpublish), (PASSWORD, True))
        self.successResultOf(upgraded.accounts.setBackpublish(ALICE, False))
        self.assertFalse(self.successResultOf(upgraded.accounts.lookup(ALICE)).backpublish)


class SQLiteBackpublishStoreTests(BackpublishStoreMixin, SynchronousTestCase):
    def newStoreURL(self) -> str:
        folder = os.path.abspath(self.mktemp())
        return f"sqlite:///{folder}/state/sipxmpp.sqlite"
