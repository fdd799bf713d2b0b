"""
The PostgreSQL backend (psycopg 3), for several gateways sharing a store.

The connection URI goes to libpq as is, so every libpq parameter works
(C{sslmode=verify-full}, C{passfile=}, C{connect_timeout=}); messages name
the store without its password. psycopg is imported only when a PostgreSQL
store is opened, so an SQLite-only installation does not need it.
"""

from __future__ import annotations

from typing import Any

from sipxmpp.store.database import Connection
from sipxmpp.store.errors import StoreUnavailable

# pg_advisory_xact_lock key serialising schema migrations between gateways.
MIGRATION_LOCK = 0x5149_5850  # "SIXP"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreUnavailable(
            "a postgresql:// store needs the psycopg package: pip install 'psycopg[binary]'"
        ) from None
    return psycopg


class PostgreSQLBackend:
    """
    A PostgreSQL database reached with a libpq connection URI.
    """

    name = "postgresql"

    def __init__(self, conninfo: str, display: str, connectTimeout: int = 10) -> None:
        self._conninfo = conninfo
        self.display = display
        self.connectTimeout = connectTimeout

    def __repr__(self) -> str:
        return f"<PostgreSQLBackend {self.display}>"

    def connect(self) -> Connection:
        psycopg = _psycopg()
        connection: Connection = psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=self.connectTimeout,
            application_name="sipxmpp",
        )
        return connection

    def sql(self, text: str) -> str:
        # Our statements hold no literal '?' or '%'.
        return text.replace("?", "%s")

    def beginStatement(self) -> str:
        return "BEGIN"

    def lockForMigrationStatement(self) -> str | None:
        return f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"

    def isDatabaseError(self, error: BaseException) -> bool:
        psycopg = _psycopg()
        return isinstance(error, psycopg.Error)

    def isConnectionBroken(self, error: BaseException, connection: Connection) -> bool:
        psycopg = _psycopg()
        closed = bool(getattr(connection, "closed", False))
        broken = bool(getattr(connection, "broken", False))
        return closed or broken or isinstance(error, psycopg.OperationalError)
