"""
Tests for L{sipxmpp.store.accountwatch}: admin changes to accounts found by
the cheap periodic check on a real SQLite store, on a L{Clock}, and the
PostgreSQL LISTEN thread with a fake connection.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.store.accounts import SQLAccountStore
from sipxmpp.store.accountwatch import AccountWatcher, PostgreSQLNotifications
from sipxmpp.store.opening import StoreSettings, initialiseStore
from sipxmpp.store.records import AccountRecord
from sipxmpp.xmpp.accounts import Account

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"


class CountingAccounts:
    """
    The store, counting the full reads.
    """

    def __init__(self, accounts: SQLAccountStore) -> None:
        self.accounts = accounts
        self.fullReads = 0

    def changeToken(self) -> Deferred[tuple[object, ...]]:
        return self.accounts.changeToken()

    def accountVersions(self) -> Deferred[dict[str, tuple[float, bool]]]:
        self.fullReads += 1
        return self.accounts.accountVersions()

    def lookup(self, aor: str) -> Deferred[Account | None]:
        return self.accounts.lookup(aor)


class AccountWatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        folder = self.mktemp()
        os.makedirs(folder)
        settings = StoreSettings(f"sqlite:///{folder}/db.sqlite", f"{folder}/key")
        self.store = initialiseStore(settings, owner="gw")
        self.addCleanup(self.store.close)
        self.clock = Clock()
        self.counting = CountingAccounts(self.store.accounts)
        self.watcher = AccountWatcher(self.counting, self.clock, interval=2, safetyInterval=60)
        self.told: list[tuple[str, Account | None]] = []
        self.watcher.addListener(lambda aor, account: self.told.append((aor, account)))

    def add(self, aor: str, jid: str, password: str = "pw", **kw: Any) -> None:
        record = AccountRecord(aor, jid, **kw)
        self.successResultOf(self.store.accounts.addAccount(record, password))

    def start(self) -> None:
        self.watcher.startService()
        self.addCleanup(self.watcher.stopService)

    def test_firstCheckIsTheBaseline(self) -> None:
        """
        The accounts there at start are not reported: the publisher looks
        users up when it logs them in.
        """
        self.add(ALICE, "alice@example.test")
        self.start()
        self.clock.advance(10)
        self.assertEqual(self.told, [])

    def test_unchangedIsCheap(self) -> None:
        """
        While nothing changes only the summary is read.
        """
        self.add(ALICE, "alice@example.test")
        self.start()
        self.assertEqual(self.counting.fullReads, 1)
        self.clock.advance(20)
        self.assertEqual(self.counting.fullReads, 1)

    def test_eachAdminChange(self) -> None:
        """
        Add, disable, enable, a new password, a new text and remove are each
        reported within one interval: the account as it is now, or None.
        """
        self.add(ALICE, "alice@example.test")
        self.start()
        self.add(BOB, "bob@example.test", "bobpw")
        self.clock.advance(2)
        [(aor, account)] = self.told
        assert account is not None
        self.assertEqual((aor, account.jid.userhost(), account.password),
                         (BOB, "bob@example.test", "bobpw"))
        del self.told[:]
        self.successResultOf(self.store.accounts.setEnabled(ALICE, False))
        self.clock.advance(2)
        self.assertEqual(self.told, [(ALICE, None)])
        del self.told[:]
        self.successResultOf(self.store.accounts.setEnabled(ALICE, True))
        self.clock.advance(2)
        self.assertEqual([(a, x is not None) for a, x in self.told], [(ALICE, True)])
        del self.told[:]
        self.successResultOf(self.store.accounts.setPassword(ALICE, "new secret"))
        self.clock.advance(2)
        [(aor, account)] = self.told
        assert account is not None
        self.assertEqual((aor, account.password), (ALICE, "new secret"))
        del self.told[:]
        self.successResultOf(self.store.accounts.removeAccount(BOB))
        self.clock.advance(2)
        self.assertEqual(self.told, [(BOB, None)])

    def test_notifiedChecksAtOnce(self) -> None:
        """
        While notifications arrive the periodic check runs only every
        safety interval; a notification checks at once; when they stop the
        check runs every interval again.
        """
        self.start()
        self.watcher.listeningChanged(True)
        self.add(ALICE, "alice@example.test")
        self.clock.advance(10)
        self.assertEqual(self.told, [])
        self.watcher.notified()
        self.assertEqual([a for a, _ in self.told], [ALICE])
        self.successResultOf(self.store.accounts.setEnabled(ALICE, False))
        self.clock.advance(60)
        self.assertEqual(self.told[1:], [(ALICE, None)])
        self.watcher.listeningChanged(False)
        self.successResultOf(self.store.accounts.setEnabled(ALICE, True))
        self.clock.advance(2)
        self.assertEqual([a for a, _ in self.told[2:]], [ALICE])

    def test_unreadableStoreIsLoggedOnce(self) -> None:
        """
        A store that cannot be read is logged once; the watcher keeps
        trying and says when it can read again.
        """
        self.start()
        real = self.counting.accounts
        broken = Deferred[tuple[object, ...]]

        class Failing:
            def changeToken(self) -> Deferred[tuple[object, ...]]:
                d: Deferred[tuple[object, ...]] = broken()
                d.errback(RuntimeError("database is locked"))
                return d

        self.counting.accounts = Failing()  # type: ignore[assignment]
        self.clock.advance(2)
        self.clock.advance(2)
        self.counting.accounts = real
        self.add(ALICE, "alice@example.test")
        self.clock.advance(2)
        self.assertEqual([a for a, _ in self.told], [ALICE])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_listenerErrorsDoNotStopOthers(self) -> None:
        def broken(aor: str, account: Account | None) -> None:
            raise RuntimeError("boom")

        self.watcher._listeners.insert(0, broken)
        self.start()
        self.add(ALICE, "alice@example.test")
        self.clock.advance(2)
        self.assertEqual([a for a, _ in self.told], [ALICE])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FakeConnection:
    """
    A psycopg connection that hands out queued notifications.
    """

    def __init__(self, listen: bool = True) -> None:
        self.executed: list[str] = []
        self.pending = threading.Semaphore(0)
        self.listen = listen
        self.closed = False

    def execute(self, sql: str) -> None:
        if not self.listen:
            raise RuntimeError("permission denied\nDETAIL: more")
        self.executed.append(sql)

    def notifies(self, timeout: float) -> Iterator[object]:
        if self.pending.acquire(timeout=timeout):
            yield object()

    def close(self) -> None:
        self.closed = True


class PostgreSQLNotificationsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.called = threading.Semaphore(0)
        self.watcher = AccountWatcher(CountingAccounts(None), Clock())  # type: ignore[arg-type]

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.calls.append((f, *args))
        self.called.release()

    def test_listensAndForwards(self) -> None:
        connection = FakeConnection()
        listen = PostgreSQLNotifications(lambda: connection, self.watcher, self.callFromThread,
                                         poll=0.05)  # fmt: skip
        listen.startService()
        self.addCleanup(listen.stopService)
        self.assertTrue(self.called.acquire(timeout=5))
        self.assertEqual(connection.executed, ["LISTEN sipxmpp_accounts"])
        connection.pending.release()
        self.assertTrue(self.called.acquire(timeout=5))
        self.assertEqual(self.calls[1], (self.watcher.notified,))

    def test_listenFailsFallsBack(self) -> None:
        connection = FakeConnection(listen=False)
        listen = PostgreSQLNotifications(lambda: connection, self.watcher, self.callFromThread,
                                         retryDelay=60, poll=0.05)  # fmt: skip
        listen.startService()
        self.addCleanup(listen.stopService)
        self.assertTrue(self.called.acquire(timeout=5))
        f, *args = self.calls[0]
        self.assertEqual(args, ["permission denied", False])
        self.watcher.listening = True
        f(*args)
        self.assertFalse(self.watcher.listening)
        self.assertTrue(connection.closed)
