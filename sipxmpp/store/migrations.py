"""
Versioned schema migrations, applied when a store is opened.

Each backend has its ordered list of L{Migration}s; the table
C{schema_version} records which were applied. Opening applies the missing
ones in order, each in its own transaction together with its row in
C{schema_version}; concurrent gateways serialise on a lock (SQLite's write
lock, a PostgreSQL advisory lock), so each migration runs exactly once. A
database migrated by a newer sipxmpp is refused rather than misread.

Never edit a released migration: append a new one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sipxmpp.store.database import Database, Transaction
from sipxmpp.store.errors import SchemaTooNew


@dataclass(frozen=True)
class Migration:
    """
    @ivar version: 1, 2, ... in order, without gaps.
    @ivar description: what it changes, for C{schema_version}.
    @ivar statements: the SQL, run in order in one transaction.
    """

    version: int
    description: str
    statements: tuple[str, ...]


def _v1(blob: str, boolean: str, true: str, real: str) -> tuple[str, ...]:
    return (
        f"CREATE TABLE store_meta (name TEXT PRIMARY KEY, value {blob} NOT NULL)",
        f"""CREATE TABLE accounts (
            aor TEXT PRIMARY KEY,
            jid TEXT NOT NULL UNIQUE,
            secret {blob} NOT NULL,
            mode TEXT CHECK (mode IS NULL OR mode IN ('remote-control', 'resource')),
            status_text TEXT,
            ringing_text TEXT,
            hold_text TEXT,
            enabled {boolean} NOT NULL DEFAULT {true},
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL)""",
        f"""CREATE TABLE bindings (
            owner TEXT NOT NULL,
            aor TEXT NOT NULL,
            contact TEXT NOT NULL,
            expires_at {real} NOT NULL,
            PRIMARY KEY (owner, aor, contact))""",
        f"""CREATE TABLE dialogs (
            owner TEXT NOT NULL,
            aor TEXT NOT NULL,
            dialog_id TEXT NOT NULL,
            confirmed {boolean} NOT NULL,
            held {boolean} NOT NULL,
            expires_at {real} NOT NULL,
            PRIMARY KEY (owner, aor, dialog_id))""",
        f"""CREATE TABLE saved_statuses (
            owner TEXT NOT NULL,
            aor TEXT NOT NULL,
            resource TEXT NOT NULL,
            status TEXT NOT NULL,
            priority INTEGER,
            message TEXT NOT NULL,
            saved_at {real} NOT NULL,
            PRIMARY KEY (owner, aor, resource))""",
        f"""CREATE TABLE xmpp_sessions (
            owner TEXT NOT NULL,
            aor TEXT NOT NULL,
            state TEXT NOT NULL,
            detail TEXT NOT NULL,
            updated_at {real} NOT NULL,
            PRIMARY KEY (owner, aor))""",
    )


def _v2(real: str) -> tuple[str, ...]:
    # The proxy's routes back to the phones (PhoneRoutes): without them a
    # restarted gateway refuses the registrar's requests to its phones
    # until each phone registers again. source_*: where the phone sends
    # from, when not where it is reached (NULL: the same).
    return (
        f"""CREATE TABLE phone_routes (
            owner TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('registration', 'dialog')),
            contact_key TEXT NOT NULL,
            aor TEXT NOT NULL,
            contact TEXT NOT NULL,
            transport TEXT NOT NULL,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            source_host TEXT,
            source_port INTEGER,
            expires_at {real} NOT NULL,
            PRIMARY KEY (owner, kind, contact_key))""",
        "CREATE INDEX phone_routes_expiry ON phone_routes (owner, expires_at)",
    )


def _v3(real: str) -> tuple[str, ...]:
    # Users whose XEP-0108 activity may still show a call at their server
    # (published, its retraction not acknowledged): a restarted gateway
    # retracts it even for users it would not log in otherwise.
    return (
        f"""CREATE TABLE user_activities (
            owner TEXT NOT NULL,
            aor TEXT NOT NULL,
            published_at {real} NOT NULL,
            PRIMARY KEY (owner, aor))""",
    )


def _v4(boolean: str, real: str) -> tuple[str, ...]:
    # PUBLISH publications (RFC 3903) with their entity-tags: without them
    # a restarted gateway shows a call in progress only at the publisher's
    # next change. dialogs: JSON, [[dialog key, phase, outgoing], ...].
    return (
        f"""CREATE TABLE publications (
            owner TEXT NOT NULL,
            aor TEXT NOT NULL,
            publication_key TEXT NOT NULL,
            tag TEXT NOT NULL,
            busy {boolean} NOT NULL,
            dialogs TEXT NOT NULL,
            expires_at {real} NOT NULL,
            PRIMARY KEY (owner, aor, publication_key))""",
        "CREATE INDEX publications_expiry ON publications (owner, expires_at)",
    )


def _accountsBackpublish(boolean: str, true: str) -> tuple[str, ...]:
    # A user may opt out of back-publishing (issue 18): SIP watchers are
    # refused and the publication is removed. Everyone is in until then.
    return (f"ALTER TABLE accounts ADD COLUMN backpublish {boolean} NOT NULL DEFAULT {true}",)


def _accountsServer() -> tuple[str, ...]:
    # A user on a foreign XMPP server (issue 19): where that account's
    # session connects, HOST:PORT, tls:HOST:PORT or srv; NULL: [xmpp] server.
    return ("ALTER TABLE accounts ADD COLUMN xmpp_server TEXT",)


MIGRATIONS: dict[str, tuple[Migration, ...]] = {
    "sqlite": (
        Migration(
            1,
            "accounts, key check and runtime state",
            _v1(blob="BLOB", boolean="INTEGER", true="1", real="REAL"),
        ),
        Migration(2, "SIP routes back to the phones", _v2(real="REAL")),
        Migration(3, "user activities to retract", _v3(real="REAL")),
        Migration(4, "per-account back-publishing opt-out",
                  _accountsBackpublish(boolean="INTEGER", true="1")),
        Migration(5, "PUBLISH publications", _v4(boolean="INTEGER", real="REAL")),
        Migration(6, "per-account XMPP server", _accountsServer()),
    ),
    "postgresql": (
        Migration(
            1,
            "accounts, key check and runtime state",
            _v1(blob="BYTEA", boolean="BOOLEAN", true="TRUE", real="DOUBLE PRECISION"),
        ),
        Migration(2, "SIP routes back to the phones", _v2(real="DOUBLE PRECISION")),
        Migration(3, "user activities to retract", _v3(real="DOUBLE PRECISION")),
        Migration(4, "per-account back-publishing opt-out",
                  _accountsBackpublish(boolean="BOOLEAN", true="TRUE")),
        Migration(5, "PUBLISH publications",
                  _v4(boolean="BOOLEAN", real="DOUBLE PRECISION")),
        Migration(6, "per-account XMPP server", _accountsServer()),
    ),
}

_VERSION_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
    "description TEXT NOT NULL, applied_at REAL NOT NULL)",
    "postgresql": "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
    "description TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)",
}


def currentVersion(tx: Transaction) -> int:
    """
    Return the highest applied version (0 for a new database).
    """
    rows = tx.execute("SELECT MAX(version) FROM schema_version")
    value = rows[0][0] if rows else None
    return int(value) if value is not None else 0


def _applyNext(
    tx: Transaction, database: Database, migrations: Sequence[Migration]
) -> int | None:
    lock = database.backend.lockForMigrationStatement()
    if lock is not None:
        tx.execute(lock)
    tx.execute(_VERSION_TABLE[database.backend.name])
    version = currentVersion(tx)
    latest = migrations[-1].version if migrations else 0
    if version > latest:
        raise SchemaTooNew(
            f"{database.display}: the schema is at version {version} but this sipxmpp "
            f"knows versions up to {latest}; upgrade sipxmpp"
        )
    pending = [m for m in migrations if m.version > version]
    if not pending:
        return None
    migration = pending[0]
    for statement in migration.statements:
        tx.execute(statement)
    tx.execute(
        "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
        (migration.version, migration.description, time.time()),
    )
    return migration.version


def migrateBlocking(database: Database, migrations: Sequence[Migration] | None = None) -> int:
    """
    Apply every missing migration (blocking) and return the schema version.

    @raise SchemaTooNew: if the database is newer than C{migrations}.
    """
    if migrations is None:
        migrations = MIGRATIONS[database.backend.name]
    while True:
        applied = database.interactBlocking(lambda tx: _applyNext(tx, database, migrations))
        if applied is None:
            return database.interactBlocking(currentVersion)


def latestVersion(backend: str) -> int:
    """
    Return the schema version this sipxmpp migrates C{backend} stores to.
    """
    return MIGRATIONS[backend][-1].version
