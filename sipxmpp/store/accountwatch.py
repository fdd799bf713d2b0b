"""
Admin changes to accounts, brought to the running gateway.

C{sipxmpp-admin} writes to the store and exits; the gateway finds out
within seconds, without a restart:

 - L{AccountWatcher} reads a cheap summary of the accounts table
   (L{SQLAccountStore.changeToken}: counts and C{updated_at} aggregates)
   every C{interval} seconds; only when it changed does it read each
   account's C{(updated_at, enabled)}, compare, look the changed accounts
   up and tell its listeners C{(aor, account)}, C{account} being L{None}
   for an account that was removed or disabled.
 - On PostgreSQL the admin command also sends C{NOTIFY sipxmpp_accounts};
   L{PostgreSQLNotifications} LISTENs on a connection of its own, in a
   thread of its own (never the reactor's), and asks the watcher to check
   at once. While it listens the periodic check runs only every
   C{safetyInterval} seconds; when LISTEN fails it logs once, the watcher
   goes back to checking every C{interval} seconds, and it tries again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from sipxmpp.xmpp.accounts import Account

CHANNEL = "sipxmpp_accounts"

AccountListener = Callable[[str, Account | None], None]


class WatchedAccounts(Protocol):
    """
    What the watcher reads (L{sipxmpp.store.accounts.SQLAccountStore}).
    """

    def changeToken(self) -> Deferred[tuple[object, ...]]: ...

    def accountVersions(self) -> Deferred[dict[str, tuple[float, bool]]]: ...

    def lookup(self, aor: str) -> Deferred[Account | None]: ...


class AccountWatcher(service.Service):
    """
    Tells listeners of accounts changed in the store since the last check.

    The first check only takes note of what is there: the publisher looks
    each user up when it logs them in.
    """

    log = Logger()

    def __init__(self, accounts: WatchedAccounts, clock: IReactorTime,
                 interval: float = 2.0, safetyInterval: float = 60.0) -> None:  # fmt: skip
        self._accounts = accounts
        self._clock = clock
        self.interval = interval
        self.safetyInterval = safetyInterval
        self._token: tuple[object, ...] | None = None
        self._versions: dict[str, tuple[float, bool]] | None = None
        self._listeners: list[AccountListener] = []
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._busy = False
        self._again = False
        self._waiters: list[Deferred[None]] = []
        self._failing = False
        self._lastCheck: float | None = None
        # Whether change notifications (PostgreSQL LISTEN) are arriving.
        self.listening = False

    def addListener(self, listener: AccountListener) -> None:
        """
        Call C{listener(aor, account)} for each account changed: the
        account as it is now, or L{None} if removed or disabled.
        """
        self._listeners.append(listener)

    # -- notifications -----------------------------------------------------

    def notified(self) -> None:
        """
        The store says accounts changed (PostgreSQL NOTIFY): check now.
        """
        self.check()

    def listeningChanged(self, listening: bool) -> None:
        """
        Notifications started (check once: some may have been missed) or
        stopped (check every C{interval} seconds again).
        """
        self.listening = listening
        if listening:
            self.check()

    # -- checking ----------------------------------------------------------

    def _tick(self) -> Deferred[None] | None:
        now = self._clock.seconds()
        if (self.listening and self._lastCheck is not None
                and now - self._lastCheck < self.safetyInterval):  # fmt: skip
            return None
        return self.check()

    def check(self) -> Deferred[None]:
        """
        Look for changes now; fires once the listeners were told (never
        fails: errors are logged).
        """
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if self._busy:
            self._again = True
            return d
        self._busy = True
        self._run()
        return d

    def _run(self) -> None:
        self._again = False
        self._lastCheck = self._clock.seconds()
        Deferred.fromCoroutine(self._checkOnce()).addCallbacks(self._worked, self._failed)

    def _worked(self, _: None) -> None:
        if self._failing:
            self.log.info("accounts readable again; admin changes are followed")
            self._failing = False
        self._ran()

    def _failed(self, reason: Failure) -> None:
        if not self._failing:
            self.log.error("cannot check the accounts for changes: {e}",
                           e=reason.getErrorMessage())  # fmt: skip
            self._failing = True
        self._ran()

    def _ran(self) -> None:
        if self._again:
            self._run()
            return
        self._busy = False
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.callback(None)

    async def _checkOnce(self) -> None:
        token = await self._accounts.changeToken()
        if token == self._token and self._versions is not None:
            return
        versions = await self._accounts.accountVersions()
        previous = self._versions
        self._token, self._versions = token, dict(versions)
        if previous is None:
            return
        changed = sorted(
            aor for aor in set(previous) | set(versions) if previous.get(aor) != versions.get(aor)
        )
        for aor in changed:
            version = versions.get(aor)
            account: Account | None = None
            if version is not None and version[1]:
                try:
                    account = await self._accounts.lookup(aor)
                except Exception:
                    # Try this one again at the next check.
                    self._token = None
                    self._versions.pop(aor, None)
                    raise
            what = "changed" if account is not None else (
                "removed" if version is None else "disabled")
            self.log.info("account {aor} {what} by the administrator", aor=aor, what=what)
            for listener in list(self._listeners):
                try:
                    listener(aor, account)
                except Exception:
                    self.log.failure("a listener of account changes failed")

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()


class PostgreSQLNotifications(service.Service):
    """
    LISTEN C{sipxmpp_accounts} on a dedicated connection in a thread of
    its own and tell the watcher (in the reactor thread) of each NOTIFY.

    @param connect: opens a new autocommit psycopg connection.
    @param callFromThread: the reactor's.
    """

    log = Logger()

    def __init__(self, connect: Callable[[], Any], watcher: AccountWatcher,
                 callFromThread: Callable[..., Any], retryDelay: float = 30.0,
                 poll: float = 1.0) -> None:  # fmt: skip
        self._connect = connect
        self._watcher = watcher
        self._callFromThread = callFromThread
        self.retryDelay = retryDelay
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def startService(self) -> None:
        super().startService()
        self._stop.clear()
        self._thread = threading.Thread(target=self._listen, name="sipxmpp-listen", daemon=True)
        self._thread.start()

    def stopService(self) -> None:
        super().stopService()
        self._stop.set()
        # The thread notices within `poll` seconds; it is a daemon thread,
        # so shutting down never waits for it.

    def _listen(self) -> None:
        failing = False
        while not self._stop.is_set():
            connection: Any = None
            try:
                connection = self._connect()
                connection.execute(f"LISTEN {CHANNEL}")
                self._callFromThread(self._started, failing)
                failing = False
                while not self._stop.is_set():
                    for _ in connection.notifies(timeout=self.poll):
                        self._callFromThread(self._watcher.notified)
            except Exception as e:
                if not self._stop.is_set():
                    self._callFromThread(self._lost, str(e).splitlines()[0] if str(e) else
                                         type(e).__name__, failing)  # fmt: skip
                    failing = True
            finally:
                if connection is not None:
                    try:
                        connection.close()
                    except Exception:
                        pass
            self._stop.wait(self.retryDelay)

    def _started(self, after: bool) -> None:
        self.log.info("listening for account changes (LISTEN {channel}){again}",
                      channel=CHANNEL, again=" again" if after else "")  # fmt: skip
        self._watcher.listeningChanged(True)

    def _lost(self, why: str, already: bool) -> None:
        if not already:
            self.log.warn("LISTEN {channel} failed ({why}); checking accounts every {n:g} s "
                          "instead", channel=CHANNEL, why=why,
                          n=self._watcher.interval)  # fmt: skip
        self._watcher.listeningChanged(False)
