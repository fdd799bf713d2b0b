"""
Provisioned accounts in an SQL database (SQLite or PostgreSQL).

Secrets are encrypted by a L{SecretBox} before they reach SQL, with the
AoR as associated data, and decrypted only by L{SQLAccountStore.lookup}
and L{SQLAccountStore.credentials}.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from sipxmpp.store.addresses import (
    InvalidAddress,
    normaliseAoR,
    normaliseBareJID,
    parseBareJID,
)
from sipxmpp.store.database import Database, Row, Transaction
from sipxmpp.store.errors import AccountExists, AccountNotFound, StoreError
from sipxmpp.store.interfaces import IAccountStore
from sipxmpp.store.keyfile import SecretBox
from sipxmpp.store.records import AccountRecord
from sipxmpp.xmpp.accounts import MODES, Account, IAccountDirectory
from sipxmpp.xmpp.endpoints import canonicalServer

T = TypeVar("T")

_COLUMNS = (
    "aor, jid, mode, status_text, ringing_text, hold_text, enabled, created_at, updated_at, "
    "backpublish, xmpp_server"
)
# Where the secret is in a row of _COLUMNS and the secret.
_SECRET = 11
# Longest status text accepted (XMPP servers cap stanzas; this is generous).
MAX_TEXT = 1024


def _record(row: Row) -> AccountRecord:
    return AccountRecord(
        aor=row[0],
        jid=row[1],
        mode=row[2],
        statusText=row[3],
        ringingText=row[4],
        holdText=row[5],
        enabled=bool(row[6]),
        createdAt=float(row[7]),
        updatedAt=float(row[8]),
        backpublish=bool(row[9]),
        server=row[10],
    )


def _checkText(name: str, text: str | None) -> str | None:
    if text is None:
        return None
    if not text.strip():
        raise InvalidAddress(f"the {name} must not be empty (omit it to use the default)")
    if len(text) > MAX_TEXT or any(ord(c) < 32 for c in text):
        raise InvalidAddress(
            f"the {name} must be one line of at most {MAX_TEXT} characters"
        )
    return text


def _checkServer(server: str | None) -> str | None:
    if server is None:
        return None
    try:
        return canonicalServer(server)
    except ValueError as e:
        raise InvalidAddress(f"the XMPP server: {e}") from None


def _checkPassword(password: str) -> str:
    if not password:
        raise InvalidAddress("the password is empty")
    if "\n" in password or "\r" in password or "\0" in password:
        raise InvalidAddress("the password contains a line break or NUL")
    return password


class AccountsRejected(StoreError):
    """
    A bulk provisioning was refused and nothing was stored.

    @ivar problems: C{(index, reason)} for every rejected entry, the index
        into the entries given, in order; a reason never holds a secret.
    """

    def __init__(self, problems: Sequence[tuple[int, str]]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} account(s) refused, nothing was stored"
        )


def _guard(function: Callable[[], Deferred[T]]) -> Deferred[T]:
    # Validation errors go into the Deferred, like database errors.
    try:
        return function()
    except Exception:
        return fail()


@implementer(IAccountStore, IAccountDirectory)
class SQLAccountStore:
    """
    Accounts in C{database}, secrets sealed by C{box}.

    @param now: returns the POSIX time, for C{created_at}/C{updated_at}.
    """

    def __init__(
        self, database: Database, box: SecretBox, now: Callable[[], float] = time.time
    ) -> None:
        self._db = database
        self._box = box
        self._now = now

    def __repr__(self) -> str:
        return f"<SQLAccountStore {self._db.display}>"

    # --- IAccountStore ---

    def addAccount(self, record: AccountRecord, password: str) -> Deferred[AccountRecord]:
        def prepare() -> Deferred[AccountRecord]:
            aor = normaliseAoR(record.aor)
            jid = normaliseBareJID(record.jid)
            if record.mode is not None and record.mode not in MODES:
                raise InvalidAddress(
                    f"invalid mode {record.mode!r}; expected one of {', '.join(MODES)}"
                )
            texts = (
                _checkText("status text", record.statusText),
                _checkText("ringing text", record.ringingText),
                _checkText("hold text", record.holdText),
            )
            server = _checkServer(record.server)
            sealed = self._box.encrypt(aor, _checkPassword(password))
            now = self._now()

            def insert(tx: Transaction) -> AccountRecord:
                for column, value, what in (("aor", aor, "SIP AoR"), ("jid", jid, "JID")):
                    taken = tx.execute(f"SELECT aor FROM accounts WHERE {column} = ?", (value,))
                    if taken:
                        raise AccountExists(
                            f"the {what} {value} is already provisioned"
                            + ("" if column == "aor" else f" (for {taken[0][0]})")
                        )
                tx.execute(
                    f"INSERT INTO accounts ({_COLUMNS}, secret) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (aor, jid, record.mode, *texts, record.enabled, now, now,
                     record.backpublish, server, sealed),
                )
                return AccountRecord(
                    aor, jid, record.mode, *texts, enabled=record.enabled,
                    createdAt=now, updatedAt=now, backpublish=record.backpublish,
                    server=server,
                )

            return self._db.interact(insert)

        return _guard(prepare)

    def addAccounts(
        self, entries: Sequence[tuple[AccountRecord, str]], dryRun: bool = False
    ) -> Deferred[list[AccountRecord]]:
        """
        Provision every C{(record, password)} of C{entries} in one
        transaction, all or none; see L{IAccountStore.addAccounts}.
        """

        def prepare() -> Deferred[list[AccountRecord]]:
            problems: list[tuple[int, str]] = []
            rows: list[tuple[object, ...]] = []
            records: list[AccountRecord] = []
            firstAoR: dict[str, int] = {}
            firstJID: dict[str, int] = {}
            now = self._now()
            encrypt = self._box.encrypt
            for index, (record, password) in enumerate(entries):
                try:
                    aor = normaliseAoR(record.aor)
                    jid = normaliseBareJID(record.jid)
                    if record.mode is not None and record.mode not in MODES:
                        raise InvalidAddress(
                            f"invalid mode {record.mode!r}; expected one of {', '.join(MODES)}"
                        )
                    texts = (
                        _checkText("status text", record.statusText),
                        _checkText("ringing text", record.ringingText),
                        _checkText("hold text", record.holdText),
                    )
                    server = _checkServer(record.server)
                    _checkPassword(password)
                except InvalidAddress as e:
                    problems.append((index, str(e)))
                    continue
                if aor in firstAoR:
                    problems.append((index, f"the SIP AoR {aor} is given twice "
                                            f"(first as entry {firstAoR[aor] + 1})"))
                    continue
                if jid in firstJID:
                    problems.append((index, f"the JID {jid} is given twice "
                                            f"(first as entry {firstJID[jid] + 1})"))
                    continue
                firstAoR[aor] = index
                firstJID[jid] = index
                if not (problems or dryRun):
                    # All or nothing: nothing more is encrypted after a problem.
                    rows.append((aor, jid, record.mode, *texts, record.enabled, now, now,
                                 record.backpublish, server, encrypt(aor, password)))
                records.append(AccountRecord(aor, jid, record.mode, *texts,
                                             enabled=record.enabled,
                                             createdAt=now, updatedAt=now,
                                             backpublish=record.backpublish, server=server))

            def insert(tx: Transaction) -> list[AccountRecord]:
                taken = tx.execute("SELECT aor, jid FROM accounts")
                takenAoRs = {str(r[0]) for r in taken}
                takenJIDs = {str(r[1]): str(r[0]) for r in taken}
                clashes = list(problems)
                for aor, index in firstAoR.items():
                    if aor in takenAoRs:
                        clashes.append((index, f"the SIP AoR {aor} is already provisioned"))
                for jid, index in firstJID.items():
                    owner = takenJIDs.get(jid)
                    if owner is not None:
                        clashes.append((index, f"the JID {jid} is already provisioned "
                                               f"(for {owner})"))
                if clashes:
                    raise AccountsRejected(sorted(clashes))
                if dryRun:
                    return records
                tx.executeMany(
                    f"INSERT INTO accounts ({_COLUMNS}, secret) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                return records

            return self._db.interact(insert)

        return _guard(prepare)

    def getAccount(self, aor: str) -> Deferred[AccountRecord]:
        def prepare() -> Deferred[AccountRecord]:
            key = normaliseAoR(aor)
            return self._db.interact(lambda tx: _record(self._row(tx, key)))

        return _guard(prepare)

    def listAccounts(self) -> Deferred[list[AccountRecord]]:
        def select(tx: Transaction) -> list[AccountRecord]:
            rows = tx.execute(f"SELECT {_COLUMNS} FROM accounts ORDER BY aor")
            return [_record(row) for row in rows]

        return self._db.interact(select)

    def enabledAoRs(self) -> Deferred[frozenset[str]]:
        def select(tx: Transaction) -> frozenset[str]:
            rows = tx.execute("SELECT aor FROM accounts WHERE enabled")
            return frozenset(str(row[0]) for row in rows)

        return self._db.interact(select)

    def changeToken(self) -> Deferred[tuple[object, ...]]:
        """
        Return a cheap summary of all accounts that changes whenever one is
        added, removed, enabled, disabled or given a new password (each
        such change sets C{updated_at}): the count, the latest and the sum
        of C{updated_at}, and the count of enabled accounts.
        """

        def select(tx: Transaction) -> tuple[object, ...]:
            rows = tx.execute(
                "SELECT COUNT(*), MAX(updated_at), SUM(updated_at), "
                "SUM(CASE WHEN enabled THEN 1 ELSE 0 END) FROM accounts"
            )
            return tuple(rows[0]) if rows else ()

        return self._db.interact(select)

    def accountVersions(self) -> Deferred[dict[str, tuple[float, bool]]]:
        """
        Return each account's C{(updated_at, enabled)} by AoR, to tell
        which accounts changed since the last read.
        """

        def select(tx: Transaction) -> dict[str, tuple[float, bool]]:
            rows = tx.execute("SELECT aor, updated_at, enabled FROM accounts")
            return {str(r[0]): (float(r[1]), bool(r[2])) for r in rows}

        return self._db.interact(select)

    def removeAccount(self, aor: str) -> Deferred[None]:
        def prepare() -> Deferred[None]:
            key = normaliseAoR(aor)

            def delete(tx: Transaction) -> None:
                tx.execute("DELETE FROM accounts WHERE aor = ?", (key,))
                if tx.rowCount == 0:
                    raise AccountNotFound(f"no account is provisioned for {key}")

            return self._db.interact(delete)

        return _guard(prepare)

    def setEnabled(self, aor: str, enabled: bool) -> Deferred[AccountRecord]:
        def prepare() -> Deferred[AccountRecord]:
            key = normaliseAoR(aor)
            now = self._now()

            def update(tx: Transaction) -> AccountRecord:
                tx.execute(
                    "UPDATE accounts SET enabled = ?, updated_at = ? WHERE aor = ?",
                    (enabled, now, key),
                )
                return _record(self._row(tx, key))

            return self._db.interact(update)

        return _guard(prepare)

    def setBackpublish(self, aor: str, backpublish: bool) -> Deferred[AccountRecord]:
        """
        Let the user's XMPP presence go back to SIP, or opt the user out
        (C{[backpublish]}); a running gateway follows within seconds (the
        change sets C{updated_at}, which
        L{sipxmpp.store.accountwatch.AccountWatcher} notices).
        """

        def prepare() -> Deferred[AccountRecord]:
            key = normaliseAoR(aor)
            now = self._now()

            def update(tx: Transaction) -> AccountRecord:
                tx.execute(
                    "UPDATE accounts SET backpublish = ?, updated_at = ? WHERE aor = ?",
                    (backpublish, now, key),
                )
                return _record(self._row(tx, key))

            return self._db.interact(update)

        return _guard(prepare)

    def setServer(self, aor: str, server: str | None) -> Deferred[AccountRecord]:
        """
        Give the account its own XMPP server, or L{None} for C{[xmpp]
        server}; a running gateway logs the user in there within seconds
        (the change sets C{updated_at}, which
        L{sipxmpp.store.accountwatch.AccountWatcher} notices).
        """

        def prepare() -> Deferred[AccountRecord]:
            key = normaliseAoR(aor)
            value = _checkServer(server)
            now = self._now()

            def update(tx: Transaction) -> AccountRecord:
                tx.execute(
                    "UPDATE accounts SET xmpp_server = ?, updated_at = ? WHERE aor = ?",
                    (value, now, key),
                )
                return _record(self._row(tx, key))

            return self._db.interact(update)

        return _guard(prepare)

    def setPassword(self, aor: str, password: str) -> Deferred[None]:
        def prepare() -> Deferred[None]:
            key = normaliseAoR(aor)
            sealed = self._box.encrypt(key, _checkPassword(password))
            now = self._now()

            def update(tx: Transaction) -> None:
                tx.execute(
                    "UPDATE accounts SET secret = ?, updated_at = ? WHERE aor = ?",
                    (sealed, now, key),
                )
                if tx.rowCount == 0:
                    raise AccountNotFound(f"no account is provisioned for {key}")

            return self._db.interact(update)

        return _guard(prepare)

    def credentials(self, aor: str) -> Deferred[Account]:
        def prepare() -> Deferred[Account]:
            key = normaliseAoR(aor)
            return self._db.interact(lambda tx: self._account(self._row(tx, key, True)))

        return _guard(prepare)

    # --- IAccountDirectory ---

    def lookup(self, aor: str) -> Deferred[Account | None]:
        """
        Return the enabled account of C{aor} with its secret, or L{None} if
        it is not provisioned, disabled, or not a valid AoR.
        """
        try:
            key = normaliseAoR(aor)
        except InvalidAddress:
            return succeed(None)

        def select(tx: Transaction) -> Account | None:
            rows = tx.execute(
                f"SELECT {_COLUMNS}, secret FROM accounts WHERE aor = ?", (key,)
            )
            if not rows or not bool(rows[0][6]):
                return None
            return self._account(rows[0])

        return self._db.interact(select)

    # --- helpers ---

    def _row(self, tx: Transaction, aor: str, secret: bool = False) -> Row:
        extra = ", secret" if secret else ""
        rows = tx.execute(f"SELECT {_COLUMNS}{extra} FROM accounts WHERE aor = ?", (aor,))
        if not rows:
            raise AccountNotFound(f"no account is provisioned for {aor}")
        return rows[0]

    def _account(self, row: Row) -> Account:
        record = _record(row)
        password = self._box.decrypt(record.aor, row[_SECRET])
        return Account(
            aor=record.aor,
            jid=parseBareJID(record.jid),
            password=password,
            mode=record.mode,
            statusText=record.statusText,
            ringingText=record.ringingText,
            holdText=record.holdText,
            backpublish=record.backpublish,
            server=record.server,
        )


def verifyOrWriteKeyCheck(tx: Transaction, box: SecretBox) -> bool:
    """
    Check C{box} against the key check in the database, or store one made
    with it if there is none yet.

    @return: whether a key check was written (a new store).
    @raise WrongKey: if the database's key check was made with another key.
    """
    rows = tx.execute("SELECT value FROM store_meta WHERE name = 'key_check'")
    if rows:
        box.verifyKeyCheck(bytes(rows[0][0]))
        return False
    accounts = tx.execute("SELECT COUNT(*) FROM accounts")[0][0]
    if accounts:
        raise StoreError(
            "the store holds accounts but no key check; it was altered outside sipxmpp"
        )
    tx.execute("INSERT INTO store_meta (name, value) VALUES ('key_check', ?)", (box.keyCheck(),))
    return True


def hasKeyCheck(tx: Transaction) -> bool:
    """
    Tell whether the store was initialised with a key.
    """
    return bool(tx.execute("SELECT 1 FROM store_meta WHERE name = 'key_check'"))
