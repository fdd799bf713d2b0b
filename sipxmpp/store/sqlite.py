"""
The SQLite backend: the embedded default, one file per gateway.

The file is created with mode 0600 (it holds encrypted secrets and the
users' addresses) and used in WAL mode, so the admin command can read while
the gateway writes; writers wait up to C{busyTimeout} seconds for each
other.
"""

from __future__ import annotations

import os
import sqlite3

from sipxmpp.store.database import Connection
from sipxmpp.store.errors import StoreUnavailable

MEMORY = ":memory:"


class SQLiteBackend:
    """
    An SQLite file (or C{:memory:}).
    """

    name = "sqlite"

    def __init__(self, path: str, busyTimeout: float = 10.0, create: bool = True) -> None:
        """
        @param create: create the file (and its folder) if missing; when
            false a missing file is an error telling to run C{init}.
        """
        self.path = path
        self.display = f"sqlite:///{path}"
        self.busyTimeout = busyTimeout
        self.create = create

    def connect(self) -> Connection:
        if self.path != MEMORY:
            self._prepareFile()
        connection = sqlite3.connect(
            self.path, timeout=self.busyTimeout, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:
            connection.close()
            raise
        return connection

    def _prepareFile(self) -> None:
        if os.path.exists(self.path):
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        if not self.create:
            raise StoreUnavailable(
                f"{self.display}: the database file does not exist (run 'sipxmpp-admin init')"
            )
        try:
            os.makedirs(folder, mode=0o750, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
        except OSError as e:
            raise StoreUnavailable(
                f"{self.display}: cannot create the database file: {e.strerror}"
            ) from None

    def sql(self, text: str) -> str:
        return text

    def beginStatement(self) -> str:
        # IMMEDIATE takes the write lock at once: two processes never both
        # read an old schema version and then both migrate.
        return "BEGIN IMMEDIATE"

    def lockForMigrationStatement(self) -> str | None:
        return None

    def isDatabaseError(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.Error)

    def isConnectionBroken(self, error: BaseException, connection: Connection) -> bool:
        return isinstance(error, sqlite3.ProgrammingError) and "closed" in str(error)
