"""
The store's behaviour, as one suite run against every backend.

L{StoreBehaviourMixin} holds the tests; L{SQLiteStoreBehaviourTests} runs
them on an SQLite file here, and
C{tests.integration.test_store_postgresql} runs the same tests on a real
PostgreSQL. Queries go through the synchronous runner, so every Deferred
has fired when a store method returns: the tests are deterministic.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.registrations import Binding
from sipxmpp.store.addresses import InvalidAddress
from sipxmpp.store.database import Database
from sipxmpp.store.errors import (
    AccountExists,
    AccountNotFound,
    AlreadyInitialised,
    KeyFileExists,
    SchemaTooNew,
    SecretUnreadable,
    StoreUnavailable,
    WrongKey,
)
from sipxmpp.store.keyfile import createKeyFile
from sipxmpp.store.migrations import MIGRATIONS, latestVersion, migrateBlocking
from sipxmpp.store.opening import Store, StoreSettings, backendFor, initialiseStore, openStore
from sipxmpp.store.records import (
    DIALOG_TARGET,
    REGISTRATION,
    AccountRecord,
    AoRChanges,
    RouteRecord,
    SessionRecord,
)
from sipxmpp.store.runners import synchronousRunner
from sipxmpp.store.sqlite import SQLiteBackend
from sipxmpp.telephony.events import DialogPhase, DialogReport
from sipxmpp.telephony.snapshots import (
    BindingSnapshot,
    DialogSnapshot,
    PublicationSnapshot,
    UserSnapshot,
)
from sipxmpp.xmpp.accounts import IAccountDirectory
from sipxmpp.xmpp.savedstatuses import SavedStatus

T = TypeVar("T")

PASSWORD = "s3cret-Pässword"
ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"


def canon(snapshots: list[UserSnapshot]) -> list[tuple[str, frozenset[Any], frozenset[Any]]]:
    """
    Snapshots without the order of their bindings and dialogs.
    """
    return [(s.aor, frozenset(s.bindings), frozenset(s.dialogs)) for s in snapshots]


class StoreBehaviourMixin:
    """
    Tests every backend must pass. Subclasses implement L{newStoreURL}.
    """

    # Provided by SynchronousTestCase.
    successResultOf: Any
    failureResultOf: Any
    assertEqual: Any
    assertIn: Any
    assertNotIn: Any
    assertIsNone: Any
    assertTrue: Any
    assertFalse: Any
    assertRaises: Any
    addCleanup: Any
    mktemp: Any

    def newStoreURL(self) -> str:
        raise NotImplementedError()

    def setUp(self) -> None:
        self.url = self.newStoreURL()
        folder = self.mktemp()
        os.makedirs(folder)
        self.keyFile = os.path.join(folder, "secret.key")
        self.settings = StoreSettings(url=self.url, keyFile=self.keyFile)
        self.clockTime = 1_000_000.0
        self.store = self.track(initialiseStore(self.settings, owner="gw1", now=self.now))

    def now(self) -> float:
        return self.clockTime

    def track(self, store: Store) -> Store:
        self.addCleanup(store.close)
        return store

    def reopen(self, keyFile: str | None = None, owner: str = "gw1") -> Store:
        settings = StoreSettings(url=self.url, keyFile=keyFile or self.keyFile)
        return self.track(openStore(settings, owner=owner, now=self.now))

    def result(self, d: Deferred[T]) -> T:
        value: T = self.successResultOf(d)
        return value

    def add(self, aor: str = ALICE, jid: str = "alice@example.test", **kw: Any) -> AccountRecord:
        return self.result(self.store.accounts.addAccount(AccountRecord(aor, jid, **kw), PASSWORD))

    def rawSQL(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.store.database.interactBlocking(lambda tx: tx.execute(sql, params))

    # --- schema ---

    def test_schemaVersion(self) -> None:
        """
        Opening applies every migration once and records it.
        """
        backend = self.store.database.backend.name
        self.assertEqual(self.store.schemaVersion, latestVersion(backend))
        again = self.reopen()
        self.assertEqual(again.schemaVersion, latestVersion(backend))
        rows = self.rawSQL("SELECT version FROM schema_version ORDER BY version")
        self.assertEqual([r[0] for r in rows], list(range(1, latestVersion(backend) + 1)))

    def test_schemaTooNew(self) -> None:
        """
        A store migrated by a newer sipxmpp is refused with a clear message.
        """
        self.rawSQL(
            "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
            (99, "from the future", 0.0),
        )
        e = self.assertRaises(SchemaTooNew, self.reopen)
        self.assertIn("schema is at version 99", str(e))
        self.assertIn("upgrade sipxmpp", str(e))

    # --- keys ---

    def test_wrongKey(self) -> None:
        """
        A store opened with another key file says so at once.
        """
        other = os.path.join(os.path.dirname(self.keyFile), "other.key")
        createKeyFile(other)
        e = self.assertRaises(WrongKey, self.reopen, other)
        self.assertIn(other, str(e))
        self.assertIn("key check failed", str(e))

    def test_initRefusesExistingKeyFile(self) -> None:
        """
        C{init} never overwrites a key file.
        """
        with open(self.keyFile, "rb") as f:
            before = f.read()
        self.assertRaises(KeyFileExists, initialiseStore, self.settings)
        with open(self.keyFile, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_initRefusesStoreOfAnotherKey(self) -> None:
        """
        C{init} with a new key file on a store that has another key's check
        refuses, and leaves no new key file behind.
        """
        newKey = os.path.join(os.path.dirname(self.keyFile), "new.key")
        e = self.assertRaises(
            AlreadyInitialised, initialiseStore, StoreSettings(self.url, newKey)
        )
        self.assertIn("already initialised", str(e))
        self.assertFalse(os.path.exists(newKey))

    # --- accounts ---

    def test_addNormalises(self) -> None:
        """
        The AoR and JID are stored in their normal forms.
        """
        record = self.add("SIP:Alice@Example.TEST;transport=tcp", "Alice@Example.TEST",
                          mode="resource", statusText="On a call")
        self.assertEqual(record.aor, "sip:Alice@example.test")
        self.assertEqual(record.jid, "alice@example.test")
        self.assertEqual(record.createdAt, self.clockTime)
        stored = self.result(self.store.accounts.getAccount("sip:Alice@EXAMPLE.test"))
        self.assertEqual(stored, record)

    def test_roundTrip(self) -> None:
        """
        Everything but the secret comes back from getAccount and
        listAccounts; lookup gives the decrypted secret.
        """
        self.add(ALICE, "alice@example.test", mode="remote-control", statusText="busy",
                 ringingText="ring ring", holdText="holding")
        self.add(BOB, "bob@example.test")
        records = self.result(self.store.accounts.listAccounts())
        self.assertEqual([r.aor for r in records], [ALICE, BOB])
        alice = records[0]
        self.assertEqual(
            (alice.jid, alice.mode, alice.statusText, alice.ringingText, alice.holdText,
             alice.enabled),
            ("alice@example.test", "remote-control", "busy", "ring ring", "holding", True),
        )
        account = self.result(self.store.accounts.lookup(ALICE))
        self.assertEqual(account.password, PASSWORD)
        self.assertEqual(account.jid.full(), "alice@example.test")
        self.assertEqual(account.mode, "remote-control")
        self.assertEqual(account.holdText, "holding")
        self.assertIsNone(self.result(self.store.accounts.lookup(BOB)).mode)

    def test_implementsDirectory(self) -> None:
        """
        The account store is the publisher's account directory.
        """
        self.assertTrue(IAccountDirectory.providedBy(self.store.accounts))

    def test_lookupMisses(self) -> None:
        """
        lookup gives None for unknown, disabled and malformed AoRs.
        """
        self.add()
        self.result(self.store.accounts.setEnabled(ALICE, False))
        for aor in (BOB, ALICE, "not an aor"):
            self.assertIsNone(self.result(self.store.accounts.lookup(aor)))
        self.assertEqual(self.result(self.store.accounts.credentials(ALICE)).password, PASSWORD)
        record = self.result(self.store.accounts.setEnabled(ALICE, True))
        self.assertTrue(record.enabled)
        self.assertEqual(self.result(self.store.accounts.lookup(ALICE)).password, PASSWORD)

    def test_duplicates(self) -> None:
        """
        An AoR (in any spelling) or a JID can be provisioned once.
        """
        self.add()
        f = self.failureResultOf(
            self.store.accounts.addAccount(
                AccountRecord("sips:alice@EXAMPLE.test", "other@example.test"), PASSWORD
            ),
            AccountExists,
        )
        self.assertIn("sip:alice@example.test is already provisioned", f.getErrorMessage())
        f = self.failureResultOf(
            self.store.accounts.addAccount(AccountRecord(BOB, "alice@example.test"), PASSWORD),
            AccountExists,
        )
        self.assertIn("for sip:alice@example.test", f.getErrorMessage())
        self.assertEqual(len(self.result(self.store.accounts.listAccounts())), 1)

    def test_badInput(self) -> None:
        """
        Malformed AoRs, JIDs, modes, texts and passwords are refused with a
        message naming the problem, and nothing is stored.
        """
        cases = [
            (AccountRecord("alice@example.test", "alice@example.test"), PASSWORD,
             "did you mean 'sip:alice@example.test'"),
            (AccountRecord("tel:+123", "alice@example.test"), PASSWORD, "only sip: and sips:"),
            (AccountRecord(ALICE, "example.test"), PASSWORD, "no user part"),
            (AccountRecord(ALICE, "alice@example.test/phone"), PASSWORD, "has a resource"),
            (AccountRecord(ALICE, "al ice@example.test"), PASSWORD, "invalid JID"),
            (AccountRecord(ALICE, "alice@example.test", mode="loud"), PASSWORD,
             "invalid mode 'loud'"),
            (AccountRecord(ALICE, "alice@example.test", statusText="a\nb"), PASSWORD,
             "one line"),
            (AccountRecord(ALICE, "alice@example.test"), "", "password is empty"),
        ]
        for record, password, message in cases:
            f = self.failureResultOf(
                self.store.accounts.addAccount(record, password), InvalidAddress
            )
            self.assertIn(message, f.getErrorMessage())
        self.assertEqual(self.result(self.store.accounts.listAccounts()), [])

    def test_addAccounts(self) -> None:
        """
        addAccounts stores every entry, normalised, in one go; secrets are
        sealed per AoR as addAccount seals them.
        """
        self.add(BOB, "bob@example.test")
        records = self.result(self.store.accounts.addAccounts([
            (AccountRecord("SIP:Alice@Example.TEST", "Alice@Example.TEST", mode="resource",
                           statusText="busy", enabled=False), PASSWORD),
            (AccountRecord("sip:carol@example.test", "carol@example.test"), "other"),
        ]))
        self.assertEqual([(r.aor, r.jid, r.mode, r.enabled, r.createdAt) for r in records], [
            ("sip:Alice@example.test", "alice@example.test", "resource", False, self.clockTime),
            ("sip:carol@example.test", "carol@example.test", None, True, self.clockTime),
        ])
        stored = self.result(self.store.accounts.listAccounts())
        self.assertEqual([r.aor for r in stored],
                         ["sip:Alice@example.test", BOB, "sip:carol@example.test"])
        self.assertEqual(stored[0], records[0])
        self.assertEqual(
            self.result(self.store.accounts.credentials("sip:Alice@example.test")).password,
            PASSWORD)
        self.assertEqual(
            self.result(self.store.accounts.lookup("sip:carol@example.test")).password, "other")
        self.assertEqual(self.result(self.store.accounts.addAccounts([])), [])

    def test_addAccountsAllOrNothing(self) -> None:
        """
        One bad entry and nothing is stored; every bad entry is reported by
        index with its reason, never with a password.
        """
        from sipxmpp.store.accounts import AccountsRejected

        self.add(BOB, "bob@example.test")
        entries = [
            (AccountRecord(ALICE, "alice@example.test"), PASSWORD),
            (AccountRecord("alice@example.test", "x@example.test"), PASSWORD),
            (AccountRecord("sips:alice@EXAMPLE.test", "y@example.test"), PASSWORD),
            (AccountRecord("sip:z@example.test", "alice@example.test"), PASSWORD),
            (AccountRecord(BOB, "b2@example.test"), PASSWORD),
            (AccountRecord("sip:c@example.test", "bob@example.test"), PASSWORD),
            (AccountRecord("sip:d@example.test", "d@example.test", mode="loud"), PASSWORD),
            (AccountRecord("sip:e@example.test", "e@example.test"), ""),
            (AccountRecord("sip:f@example.test", "f@example.test"), PASSWORD),
        ]
        f = self.failureResultOf(self.store.accounts.addAccounts(entries), AccountsRejected)
        problems = f.value.problems
        self.assertEqual([i for i, _ in problems], [1, 2, 3, 4, 5, 6, 7])
        reasons = dict(problems)
        self.assertIn("did you mean", reasons[1])
        self.assertIn(f"{ALICE} is given twice (first as entry 1)", reasons[2])
        self.assertIn("JID alice@example.test is given twice", reasons[3])
        self.assertIn(f"{BOB} is already provisioned", reasons[4])
        self.assertIn(f"bob@example.test is already provisioned (for {BOB})", reasons[5])
        self.assertIn("invalid mode 'loud'", reasons[6])
        self.assertIn("password is empty", reasons[7])
        self.assertNotIn(PASSWORD, repr(problems) + str(f.value))
        self.assertEqual([r.aor for r in self.result(self.store.accounts.listAccounts())],
                         [BOB])

    def test_addAccountsMany(self) -> None:
        """
        A thousand accounts go in with one call.
        """
        entries = [(AccountRecord(f"sip:u{i}@example.test", f"u{i}@example.test"),
                    f"pw{i}") for i in range(1000)]
        self.assertEqual(len(self.result(self.store.accounts.addAccounts(entries))), 1000)
        self.assertEqual(self.rawSQL("SELECT COUNT(*) FROM accounts")[0][0], 1000)
        self.assertEqual(
            self.result(self.store.accounts.lookup("sip:u999@example.test")).password, "pw999")

    def test_enabledAoRs(self) -> None:
        """
        L{enabledAoRs} lists the normalised AoRs of enabled accounts only.
        """
        self.add()
        self.add("sip:Bob@Example.TEST", "bob@example.test", enabled=False)
        self.add("sip:carol@example.test", "carol@example.test")
        self.assertEqual(self.result(self.store.accounts.enabledAoRs()),
                         frozenset({ALICE, "sip:carol@example.test"}))
        self.result(self.store.accounts.setEnabled("sip:Bob@example.test", True))
        self.result(self.store.accounts.removeAccount(ALICE))
        self.assertEqual(self.result(self.store.accounts.enabledAoRs()),
                         frozenset({"sip:Bob@example.test", "sip:carol@example.test"}))

    def test_removeAndNotFound(self) -> None:
        """
        Removing deletes; unknown AoRs fail with AccountNotFound.
        """
        self.add()
        self.result(self.store.accounts.removeAccount("sip:alice@Example.Test"))
        self.assertEqual(self.result(self.store.accounts.listAccounts()), [])
        accounts = self.store.accounts
        for d in (
            accounts.removeAccount(ALICE),
            accounts.getAccount(ALICE),
            accounts.setEnabled(ALICE, True),
            accounts.setPassword(ALICE, "x"),
            accounts.credentials(ALICE),
        ):
            f = self.failureResultOf(d, AccountNotFound)
            self.assertEqual(f.getErrorMessage(), f"no account is provisioned for {ALICE}")

    def test_setPassword(self) -> None:
        """
        A new password replaces the old one.
        """
        self.add()
        self.result(self.store.accounts.setPassword(ALICE, "new one"))
        self.assertEqual(self.result(self.store.accounts.lookup(ALICE)).password, "new one")

    def test_secretEncryptedAtRest(self) -> None:
        """
        The database holds neither the password nor the key.
        """
        self.add()
        rows = self.rawSQL("SELECT secret FROM accounts")
        sealed = bytes(rows[0][0])
        self.assertNotIn(PASSWORD.encode("utf-8"), sealed)
        with open(self.keyFile, "rb") as f:
            keyLine = f.read().strip()
        for table in ("accounts", "store_meta"):
            for row in self.rawSQL(f"SELECT * FROM {table}"):
                for value in row:
                    data = bytes(value) if isinstance(value, bytes | memoryview) else (
                        str(value).encode("utf-8"))
                    self.assertNotIn(PASSWORD.encode("utf-8"), data)
                    self.assertNotIn(keyLine.split(b":", 1)[1], data)

    def test_secretsCannotBeSwapped(self) -> None:
        """
        A ciphertext copied into another account's row does not decrypt:
        the AoR is authenticated with it.
        """
        self.add()
        self.add(BOB, "bob@example.test")
        self.rawSQL(
            "UPDATE accounts SET secret = (SELECT secret FROM accounts WHERE aor = ?) "
            "WHERE aor = ?",
            (ALICE, BOB),
        )
        f = self.failureResultOf(self.store.accounts.lookup(BOB), SecretUnreadable)
        self.assertIn(BOB, f.getErrorMessage())
        self.assertNotIn(PASSWORD, f.getErrorMessage())

    def test_noSecretInRepr(self) -> None:
        """
        Neither an account nor the store shows the secret in its repr.
        """
        self.add()
        account = self.result(self.store.accounts.lookup(ALICE))
        for thing in (account, self.store.accounts, self.store.database.backend, self.store):
            self.assertNotIn(PASSWORD, repr(thing))
            self.assertNotIn(PASSWORD, str(thing))

    # --- runtime state ---

    def snapshot(self, aor: str = ALICE, expires: float = 100.0) -> UserSnapshot:
        t = self.clockTime
        return UserSnapshot(
            aor,
            (BindingSnapshot("sip:alice@192.0.2.1:5060", t + expires),
             BindingSnapshot(("mobile", 1), t + 2 * expires)),
            (DialogSnapshot(("call-1", "tag-a", "tag-b"), True, False, t + expires),
             DialogSnapshot("ringing-1", False, False, t + expires / 2)),
        )

    def test_runtimeRoundTrip(self) -> None:
        """
        Snapshots come back with their keys (strings and tuples) intact.
        """
        snap = self.snapshot()
        self.result(self.store.runtime.write([AoRChanges(ALICE, snapshot=snap)], self.clockTime))
        loaded = self.result(self.store.runtime.loadSnapshots(self.clockTime))
        self.assertEqual(canon(loaded), canon([snap]))

    def test_publicationsRoundTrip(self) -> None:
        """
        Publications come back with their keys, tags, dialogs and "busy";
        expired ones do not, and a new snapshot of the AoR replaces them.
        """
        t = self.clockTime
        published = (
            PublicationSnapshot(("dialog", "etag-0"), "etag-3", t + 100.0, (
                DialogReport(("call-1", "d1"), DialogPhase.CONFIRMED),
                DialogReport(("call-2", "d2"), DialogPhase.EARLY, True),
                DialogReport(("call-3", "d3"), DialogPhase.HELD),
            )),
            PublicationSnapshot(("presence", "p-0"), "p-1", t + 50.0, busy=True),
        )
        snap = UserSnapshot(ALICE, publications=published)
        runtime = self.store.runtime
        self.result(runtime.write([AoRChanges(ALICE, snapshot=snap)], t))
        loaded = self.result(runtime.loadSnapshots(t))
        self.assertEqual([s.aor for s in loaded], [ALICE])
        self.assertEqual(set(loaded[0].publications), set(published))
        later = self.result(runtime.loadSnapshots(t + 75.0))
        self.assertEqual(later[0].publications, published[:1])
        self.result(runtime.write([AoRChanges(ALICE, snapshot=UserSnapshot(ALICE))], t))
        self.assertEqual(self.result(runtime.loadSnapshots(t)), [])

    def test_runtimeExpiry(self) -> None:
        """
        What has expired is neither loaded nor kept.
        """
        snap = self.snapshot(expires=100.0)
        self.result(self.store.runtime.write([AoRChanges(ALICE, snapshot=snap)], self.clockTime))
        later = self.clockTime + 75.0
        loaded = self.result(self.store.runtime.loadSnapshots(later))
        self.assertEqual(canon(loaded), canon([UserSnapshot(ALICE, snap.bindings, snap.dialogs[:1])]))
        self.assertEqual(self.rawSQL("SELECT COUNT(*) FROM dialogs")[0][0], 1)
        self.assertEqual(self.result(self.store.runtime.loadSnapshots(later + 1000)), [])

    def test_runtimeReplace(self) -> None:
        """
        A write replaces what was saved for the AoR; an empty snapshot
        deletes it; parts left None are untouched.
        """
        runtime = self.store.runtime
        status = SavedStatus(ALICE, "alice@example.test/psi", "away", 5, "lunch", self.clockTime)
        self.result(runtime.write(
            [AoRChanges(ALICE, snapshot=self.snapshot(), statuses=(status,)),
             AoRChanges(BOB, snapshot=self.snapshot(BOB))],
            self.clockTime,
        ))
        self.result(runtime.write([AoRChanges(ALICE, snapshot=UserSnapshot(ALICE))],
                                  self.clockTime))
        self.assertEqual([s.aor for s in self.result(runtime.loadSnapshots(self.clockTime))],
                         [BOB])
        self.assertEqual(self.result(runtime.loadSavedStatuses()), [status])
        self.result(runtime.write([AoRChanges(ALICE, statuses=())], self.clockTime))
        self.assertEqual(self.result(runtime.loadSavedStatuses()), [])

    def test_runtimeOwners(self) -> None:
        """
        Each gateway restores only its own state; the report shows all.
        """
        other = self.reopen(owner="gw2")
        status = SavedStatus(BOB, "bob@example.test/tkabber", "online", None, "", self.clockTime)
        session = SessionRecord(BOB, "online", "remote-control", self.clockTime)
        self.result(other.runtime.write(
            [AoRChanges(BOB, snapshot=self.snapshot(BOB), statuses=(status,), session=session)],
            self.clockTime,
        ))
        self.result(self.store.runtime.write([AoRChanges(ALICE, snapshot=self.snapshot())],
                                             self.clockTime))
        mine = self.result(self.store.runtime.loadSnapshots(self.clockTime))
        self.assertEqual([s.aor for s in mine], [ALICE])
        self.assertEqual(self.result(self.store.runtime.loadSavedStatuses()), [])
        report = self.result(self.store.runtime.report(self.clockTime))
        self.assertEqual([(r.owner, r.aor) for r in report], [("gw1", ALICE), ("gw2", BOB)])
        self.assertEqual(report[1].session, session)
        self.assertEqual(report[1].statuses, (status,))
        self.assertEqual(canon([report[1].snapshot]), canon([self.snapshot(BOB)]))

    # --- SIP routes to the phones ---

    def route(self, user: str = "alice", kind: str = REGISTRATION, port: int = 5080,
              expires: float = 3600.0, source: Peer | None = None,
              gruu: str = "") -> RouteRecord:
        contact = f"sip:{user}@192.0.2.1:{port}" + (f";gr={gruu}" if gruu else "")
        return RouteRecord(kind, (user, "192.0.2.1", port, gruu), Binding(
            f"sip:{user}@example.test", contact, Peer("UDP", "192.0.2.1", port),
            self.clockTime + expires, source))

    def test_routesRoundTrip(self) -> None:
        """
        Bindings and dialog targets come back with their keys, flows,
        sources and expiry times; the two kinds are kept apart.
        """
        routes = [
            self.route(),
            self.route(kind=DIALOG_TARGET, expires=14400.0),
            self.route("bob", port=5090, source=Peer("UDP", "192.0.2.1", 5091),
                       gruu="urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
            self.route("zoë", port=5100),
        ]
        self.result(self.store.runtime.write([], self.clockTime, routes))
        loaded = self.result(self.store.runtime.loadRoutes(self.clockTime))
        self.assertEqual(sorted(loaded, key=repr), sorted(routes, key=repr))
        self.assertEqual(self.store.runtime.loadRoutesBlocking(self.clockTime), loaded)

    def test_routesReplacedAndRemoved(self) -> None:
        """
        A route written again replaces the saved one; one written without
        a binding is deleted; the others are left alone.
        """
        runtime = self.store.runtime
        self.result(runtime.write([], self.clockTime, [self.route(), self.route("bob", port=5090)]))
        refreshed = self.route(expires=7200.0)
        gone = RouteRecord(REGISTRATION, ("bob", "192.0.2.1", 5090, ""), None)
        self.result(runtime.write([AoRChanges(ALICE, snapshot=self.snapshot())], self.clockTime,
                                  [refreshed, gone]))
        self.assertEqual(self.result(runtime.loadRoutes(self.clockTime)), [refreshed])
        self.assertEqual(canon(self.result(runtime.loadSnapshots(self.clockTime))),
                         canon([self.snapshot()]))

    def test_routesExpiry(self) -> None:
        """
        What expired is neither loaded nor kept.
        """
        runtime = self.store.runtime
        self.result(runtime.write([], self.clockTime,
                                  [self.route(expires=60.0), self.route("bob", port=5090)]))
        later = self.clockTime + 60.0
        self.assertEqual([r.key[0] for r in self.result(runtime.loadRoutes(later))], ["bob"])
        self.assertEqual(self.rawSQL("SELECT COUNT(*) FROM phone_routes")[0][0], 1)

    def test_routesOwners(self) -> None:
        """
        Each gateway restores only its own routes.
        """
        other = self.reopen(owner="gw2")
        self.result(other.runtime.write([], self.clockTime, [self.route("bob", port=5090)]))
        self.result(self.store.runtime.write([], self.clockTime, [self.route()]))
        self.assertEqual([r.key[0] for r in self.result(self.store.runtime.loadRoutes(
            self.clockTime))], ["alice"])
        self.assertEqual([r.key[0] for r in self.result(other.runtime.loadRoutes(
            self.clockTime))], ["bob"])

    def test_upgradeKeepsRuntimeState(self) -> None:
        """
        A store at schema version 1 (before the routes were saved) is
        migrated when opened, and what it held is kept.
        """
        self.store.close()
        url = self.newStoreURL()
        database = Database(backendFor(url), synchronousRunner)
        backend = database.backend.name
        self.assertEqual(migrateBlocking(database, MIGRATIONS[backend][:1]), 1)
        database.interactBlocking(lambda tx: tx.execute(
            "INSERT INTO bindings (owner, aor, contact, expires_at) VALUES (?, ?, ?, ?)",
            ("gw1", ALICE, '"desk"', self.clockTime + 60)))
        database.close()
        upgraded = self.track(openStore(StoreSettings(url, self.keyFile), owner="gw1",
                                        now=self.now))
        self.assertEqual(upgraded.schemaVersion, latestVersion(backend))
        [snapshot] = self.result(upgraded.runtime.loadSnapshots(self.clockTime))
        self.assertEqual(snapshot.bindings, (BindingSnapshot("desk", self.clockTime + 60),))
        self.assertEqual(self.result(upgraded.runtime.loadRoutes(self.clockTime)), [])

    def test_unreadableRouteSkipped(self) -> None:
        """
        A saved route whose key cannot be read is left out, not fatal.
        """
        self.result(self.store.runtime.write([], self.clockTime, [self.route()]))
        self.rawSQL("UPDATE phone_routes SET contact_key = ?", ("not json",))
        self.assertEqual(self.result(self.store.runtime.loadRoutes(self.clockTime)), [])

    def test_unreachable(self) -> None:
        """
        A query on a closed store fails with StoreUnavailable, not a driver
        exception.
        """
        self.store.close()
        f = self.failureResultOf(self.store.accounts.listAccounts(), StoreUnavailable)
        self.assertIn("closed", f.getErrorMessage())


class SQLiteStoreBehaviourTests(StoreBehaviourMixin, SynchronousTestCase):
    """
    The behaviour suite on an SQLite file.
    """

    def newStoreURL(self) -> str:
        folder = os.path.abspath(self.mktemp())
        return f"sqlite:///{folder}/state/sipxmpp.sqlite"

    def test_fileMode(self) -> None:
        """
        The database file is private to its owner.
        """
        path = self.url[len("sqlite:///"):]
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_relativePath(self) -> None:
        """
        sqlite:///relative is relative to the working directory.
        """
        relative = backendFor("sqlite:///state/db.sqlite")
        assert isinstance(relative, SQLiteBackend)
        self.assertEqual(relative.path, "state/db.sqlite")
        absolute = backendFor("sqlite:////var/lib/x.sqlite")
        assert isinstance(absolute, SQLiteBackend)
        self.assertEqual(absolute.path, "/var/lib/x.sqlite")
