"""
One database connection, used in transactions run by a L{Runner}.

SQL is written once with C{?} placeholders; a L{Backend} (SQLite or
PostgreSQL) adapts it, opens connections, and classifies errors. A
connection that broke (PostgreSQL restarted, network cut) is dropped and a
new one opened by the next transaction; the failed transaction itself
fails with L{StoreUnavailable} and the caller decides whether to retry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred

from sipxmpp.store.errors import StoreError, StoreUnavailable
from sipxmpp.store.runners import Runner

T = TypeVar("T")
Row = tuple[Any, ...]


class Connection(Protocol):
    """
    The part of a DB-API connection we use.
    """

    def cursor(self) -> Any: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """
    What differs between SQLite and PostgreSQL.

    @ivar name: C{"sqlite"} or C{"postgresql"}, which selects migrations.
    @ivar display: the store's name in messages (never a password).
    """

    name: str
    display: str

    def connect(self) -> Connection:
        """
        Open a connection in autocommit mode (transactions are explicit).
        """

    def sql(self, text: str) -> str:
        """
        Adapt a statement written with C{?} placeholders.
        """

    def beginStatement(self) -> str:
        """
        The statement that starts a read-write transaction.
        """

    def lockForMigrationStatement(self) -> str | None:
        """
        A statement that serialises migrations between processes within a
        transaction, or L{None} if beginning one already does.
        """

    def isDatabaseError(self, error: BaseException) -> bool:
        """
        Tell whether C{error} came from the database driver.
        """

    def isConnectionBroken(self, error: BaseException, connection: Connection) -> bool:
        """
        Tell whether C{connection} is unusable after C{error}.
        """


class Transaction:
    """
    A cursor inside one transaction.
    """

    def __init__(self, backend: Backend, cursor: Any) -> None:
        self._backend = backend
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """
        Run one statement; return its rows (empty for statements without).
        """
        self._cursor.execute(self._backend.sql(sql), tuple(params))
        if self._cursor.description is None:
            return []
        return [tuple(row) for row in self._cursor.fetchall()]

    def executeMany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """
        Run one statement for each parameter row.
        """
        if rows:
            self._cursor.executemany(self._backend.sql(sql), [tuple(r) for r in rows])

    @property
    def rowCount(self) -> int:
        """
        The rows changed by the last statement.
        """
        count: int = self._cursor.rowcount
        return count


class Database:
    """
    A connection to one store, reached through C{runner}.

    Transactions run one at a time (a lock guards the connection), which
    suits the store's load: provisioning is rare and runtime state writes
    are coalesced.
    """

    def __init__(self, backend: Backend, runner: Runner) -> None:
        self.backend = backend
        self._runner = runner
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._closed = False

    @property
    def display(self) -> str:
        """
        The store's name for messages.
        """
        return self.backend.display

    def interact(self, work: Callable[[Transaction], T]) -> Deferred[T]:
        """
        Run C{work} in a transaction (through the runner): committed when it
        returns, rolled back when it raises.

        @return: a Deferred of C{work}'s result; it fails with
            L{StoreUnavailable} for database errors and with whatever
            L{StoreError} C{work} raised.
        """
        return self._runner(lambda: self.interactBlocking(work))

    def run(self, function: Callable[[], T]) -> Deferred[T]:
        """
        Run a blocking C{function} (which may call L{interactBlocking})
        through the runner.
        """
        return self._runner(function)

    def interactBlocking(self, work: Callable[[Transaction], T]) -> T:
        """
        Like L{interact}, in the calling thread.
        """
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"{self.display}: the store is closed")
            connection = self._connect()
            cursor = None
            try:
                cursor = connection.cursor()
                cursor.execute(self.backend.beginStatement())
                result = work(Transaction(self.backend, cursor))
                cursor.execute("COMMIT")
                return result
            except BaseException as e:
                self._rollback(connection, cursor, e)
                if isinstance(e, StoreError) or not self.backend.isDatabaseError(e):
                    raise
                raise StoreUnavailable(f"{self.display}: {_oneLine(e)}") from None
            finally:
                if cursor is not None:
                    try:
                        cursor.close()
                    except Exception:
                        pass

    def _connect(self) -> Connection:
        if self._connection is None:
            try:
                self._connection = self.backend.connect()
            except StoreError:
                raise
            except Exception as e:
                if not self.backend.isDatabaseError(e):
                    raise
                raise StoreUnavailable(
                    f"{self.display}: cannot connect: {_oneLine(e)}"
                ) from None
        return self._connection

    def _rollback(self, connection: Connection, cursor: Any, error: BaseException) -> None:
        if self.backend.isConnectionBroken(error, connection) or cursor is None:
            self._drop()
            return
        try:
            cursor.execute("ROLLBACK")
        except Exception:
            self._drop()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass

    def close(self) -> None:
        """
        Close the connection (blocking; call it once nothing runs).
        """
        with self._lock:
            self._closed = True
            self._drop()


def _oneLine(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
