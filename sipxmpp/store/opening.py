"""
Opening the store named by C{[store]}: backend, migrations, key.

L{openStore} blocks (it runs before the reactor, so a broken store stops
the gateway at once with one clear line); the returned L{Store}'s methods
then go through the given runner and never block the reactor.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from sipxmpp.store.accounts import SQLAccountStore, hasKeyCheck, verifyOrWriteKeyCheck
from sipxmpp.store.database import Backend, Database
from sipxmpp.store.errors import AlreadyInitialised, KeyFileExists, StoreError
from sipxmpp.store.keyfile import SecretBox, createKeyFile, loadKeyFile
from sipxmpp.store.migrations import migrateBlocking
from sipxmpp.store.postgresql import PostgreSQLBackend
from sipxmpp.store.runners import Runner, synchronousRunner
from sipxmpp.store.runtimestate import SQLRuntimeStateStore
from sipxmpp.store.sqlite import SQLiteBackend
from sipxmpp.store.storeurl import POSTGRESQL, parseStoreURL


@dataclass(frozen=True)
class StoreSettings:
    """
    C{[store]}: provisioning and restart state (built by
    L{sipxmpp.config} from the configuration file).
    """

    url: str
    keyFile: str
    # This gateway's name for its runtime state in a shared store; empty:
    # the host name.
    instance: str = ""


def defaultOwner() -> str:
    """
    The name under which this gateway saves its runtime state: the host
    name. Gateways sharing a store need distinct names that stay the same
    across restarts.
    """
    return socket.gethostname() or "sipxmpp"


@dataclass
class Store:
    """
    An open store.

    @ivar accounts: provisioning; also the publisher's
        L{sipxmpp.xmpp.accounts.IAccountDirectory}.
    @ivar runtime: this gateway's runtime state.
    @ivar schemaVersion: the schema version after migrations.
    """

    database: Database
    accounts: SQLAccountStore
    runtime: SQLRuntimeStateStore
    schemaVersion: int

    @property
    def display(self) -> str:
        """
        The store's name for messages (never a password).
        """
        return self.database.display

    def close(self) -> None:
        """
        Close the connection (blocking).
        """
        self.database.close()


def backendFor(url: str, create: bool = True) -> Backend:
    """
    Return the backend for C{[store] url}.

    @param create: whether a missing SQLite file may be created.
    @raise StoreError: for an unsupported URL.
    """
    location = parseStoreURL(url)
    if location.kind == POSTGRESQL:
        return PostgreSQLBackend(location.target, location.display)
    return SQLiteBackend(location.target, create=create)


def openStore(
    settings: StoreSettings,
    runner: Runner = synchronousRunner,
    owner: str | None = None,
    now: Callable[[], float] = time.time,
    createSQLite: bool = True,
) -> Store:
    """
    Open the store (blocking): connect, apply migrations, load the key file
    and check it against the store (a new store gets the key's check).

    @param runner: how the store's methods run their queries later.
    @param owner: this gateway's name for its runtime state (default:
        L{defaultOwner}).
    @raise StoreError: with a one-line explanation (unreachable store,
        schema too new, missing or wrong key, ...).
    """
    database = Database(backendFor(settings.url, create=createSQLite), runner)
    try:
        version = migrateBlocking(database)
        box = loadKeyFile(settings.keyFile)
        database.interactBlocking(lambda tx: verifyOrWriteKeyCheck(tx, box))
    except BaseException:
        database.close()
        raise
    return _store(database, box, owner, now, version)


def _store(
    database: Database, box: SecretBox, owner: str | None, now: Callable[[], float],
    version: int,
) -> Store:
    return Store(
        database,
        SQLAccountStore(database, box, now),
        SQLRuntimeStateStore(database, owner if owner is not None else defaultOwner()),
        version,
    )


def initialiseStore(
    settings: StoreSettings, owner: str | None = None, now: Callable[[], float] = time.time
) -> Store:
    """
    Create the key file and the schema (blocking), for C{sipxmpp-admin
    init}: refuses to overwrite a key file, and refuses a store that was
    already initialised with another key. The store is checked first so
    that a refused C{init} leaves no new key file behind.

    @raise KeyFileExists: if the key file exists.
    @raise AlreadyInitialised: if the store holds another key's check.
    """
    if os.path.lexists(settings.keyFile):
        raise KeyFileExists(
            f"{settings.keyFile}: the key file already exists; refusing to overwrite it "
            "(a new key would make every stored secret unreadable)"
        )
    database = Database(backendFor(settings.url), synchronousRunner)
    try:
        version = migrateBlocking(database)
        if database.interactBlocking(hasKeyCheck):
            raise AlreadyInitialised(
                f"{database.display} was already initialised with another key; copy that "
                f"key file to {settings.keyFile} instead of creating a new one"
            )
        box = createKeyFile(settings.keyFile)
        try:
            database.interactBlocking(lambda tx: verifyOrWriteKeyCheck(tx, box))
        except StoreError:
            os.unlink(settings.keyFile)
            raise
    except BaseException:
        database.close()
        raise
    return _store(database, box, owner, now, version)
