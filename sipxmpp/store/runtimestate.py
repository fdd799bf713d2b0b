"""
Runtime state in an SQL database: each gateway's bindings, dialogs, saved
client statuses and XMPP session states.

Rows belong to an I{owner}, the gateway instance that wrote them, so
several gateways can share one PostgreSQL store: each restores only its
own users. Times are POSIX times (the reactor's clock), so they mean the
same after a restart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from sipxmpp.store.database import Database, Transaction
from sipxmpp.store.interfaces import IRuntimeStateStore
from sipxmpp.store.records import AoRChanges, SessionRecord, UserReport
from sipxmpp.store.statekeys import UnencodableKey, decodeKey, encodeKey
from sipxmpp.telephony.state import BindingSnapshot, DialogSnapshot, UserSnapshot
from sipxmpp.xmpp.savedstatuses import SavedStatus


@implementer(IRuntimeStateStore)
class SQLRuntimeStateStore:
    """
    The runtime state of gateway C{owner} in C{database}.
    """

    log = Logger()

    def __init__(self, database: Database, owner: str) -> None:
        self._db = database
        self.owner = owner
        self._unencodable: set[str] = set()

    def __repr__(self) -> str:
        return f"<SQLRuntimeStateStore {self.owner!r} in {self._db.display}>"

    # --- writing ---

    def write(self, changes: Sequence[AoRChanges], now: float) -> Deferred[None]:
        rows = [self._rows(change) for change in changes]

        def work(tx: Transaction) -> None:
            for change, (bindings, dialogs, statuses) in zip(changes, rows, strict=True):
                key = (self.owner, change.aor)
                if change.snapshot is not None:
                    tx.execute("DELETE FROM bindings WHERE owner = ? AND aor = ?", key)
                    tx.execute("DELETE FROM dialogs WHERE owner = ? AND aor = ?", key)
                    tx.executeMany(
                        "INSERT INTO bindings (owner, aor, contact, expires_at) "
                        "VALUES (?, ?, ?, ?)",
                        bindings,
                    )
                    tx.executeMany(
                        "INSERT INTO dialogs (owner, aor, dialog_id, confirmed, held, "
                        "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                        dialogs,
                    )
                if change.statuses is not None:
                    tx.execute("DELETE FROM saved_statuses WHERE owner = ? AND aor = ?", key)
                    tx.executeMany(
                        "INSERT INTO saved_statuses (owner, aor, resource, status, priority, "
                        "message, saved_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        statuses,
                    )
                if change.session is not None:
                    s = change.session
                    tx.execute("DELETE FROM xmpp_sessions WHERE owner = ? AND aor = ?", key)
                    tx.execute(
                        "INSERT INTO xmpp_sessions (owner, aor, state, detail, updated_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (self.owner, s.aor, s.state, s.detail, s.updatedAt),
                    )
            self._prune(tx, now)

        return self._db.interact(work)

    def _encode(self, aor: str, key: Hashable) -> str | None:
        try:
            return encodeKey(key)
        except UnencodableKey as e:
            if aor not in self._unencodable:
                self._unencodable.add(aor)
                self.log.warn(
                    "cannot save state of {aor} across restarts: {reason}", aor=aor, reason=e
                )
            return None

    def _rows(
        self, change: AoRChanges
    ) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]:
        bindings: list[tuple[object, ...]] = []
        dialogs: list[tuple[object, ...]] = []
        statuses: list[tuple[object, ...]] = []
        aor = change.aor
        if change.snapshot is not None:
            for b in change.snapshot.bindings:
                contact = self._encode(aor, b.contact)
                if contact is not None:
                    bindings.append((self.owner, aor, contact, b.expiresAt))
            for d in change.snapshot.dialogs:
                dialogId = self._encode(aor, d.dialogId)
                if dialogId is not None:
                    dialogs.append(
                        (self.owner, aor, dialogId, d.confirmed, d.held, d.expiresAt)
                    )
        for s in change.statuses or ():
            statuses.append(
                (self.owner, aor, s.resource, s.status, s.priority, s.message, s.savedAt)
            )
        return bindings, dialogs, statuses

    def _prune(self, tx: Transaction, now: float) -> None:
        tx.execute("DELETE FROM bindings WHERE owner = ? AND expires_at <= ?", (self.owner, now))
        tx.execute("DELETE FROM dialogs WHERE owner = ? AND expires_at <= ?", (self.owner, now))

    # --- reading ---

    def loadSnapshots(self, now: float) -> Deferred[list[UserSnapshot]]:
        def work(tx: Transaction) -> list[UserSnapshot]:
            self._prune(tx, now)
            snapshots = _snapshots(tx, "WHERE owner = ?", (self.owner,), now)
            return [snapshots[key] for key in sorted(snapshots)]

        return self._db.interact(work)

    def loadSavedStatuses(self) -> Deferred[list[SavedStatus]]:
        def work(tx: Transaction) -> list[SavedStatus]:
            return [
                status
                for (_, _), statuses in sorted(_statuses(tx, "WHERE owner = ?", (self.owner,))
                                               .items())
                for status in statuses
            ]

        return self._db.interact(work)

    def report(self, now: float) -> Deferred[list[UserReport]]:
        def work(tx: Transaction) -> list[UserReport]:
            snapshots = _snapshots(tx, "", (), now)
            statuses = _statuses(tx, "", ())
            sessions = {
                (row[0], row[1]): SessionRecord(row[1], row[2], row[3], float(row[4]))
                for row in tx.execute(
                    "SELECT owner, aor, state, detail, updated_at FROM xmpp_sessions"
                )
            }
            keys = sorted(set(snapshots) | set(statuses) | set(sessions))
            return [
                UserReport(
                    owner,
                    aor,
                    snapshots.get((owner, aor), UserSnapshot(aor)),
                    statuses.get((owner, aor), ()),
                    sessions.get((owner, aor)),
                )
                for owner, aor in keys
            ]

        return self._db.interact(work)


def _snapshots(
    tx: Transaction, where: str, params: tuple[object, ...], now: float
) -> dict[tuple[str, str], UserSnapshot]:
    bindings: dict[tuple[str, str], list[BindingSnapshot]] = defaultdict(list)
    dialogs: dict[tuple[str, str], list[DialogSnapshot]] = defaultdict(list)
    clause = f"{where} {'AND' if where else 'WHERE'} expires_at > ?"
    for owner, aor, contact, expiresAt in tx.execute(
        f"SELECT owner, aor, contact, expires_at FROM bindings {clause} "
        "ORDER BY owner, aor, contact",
        (*params, now),
    ):
        bindings[(owner, aor)].append(BindingSnapshot(decodeKey(contact), float(expiresAt)))
    for owner, aor, dialogId, confirmed, held, expiresAt in tx.execute(
        f"SELECT owner, aor, dialog_id, confirmed, held, expires_at FROM dialogs {clause} "
        "ORDER BY owner, aor, dialog_id",
        (*params, now),
    ):
        dialogs[(owner, aor)].append(
            DialogSnapshot(decodeKey(dialogId), bool(confirmed), bool(held), float(expiresAt))
        )
    return {
        key: UserSnapshot(key[1], tuple(bindings.get(key, ())), tuple(dialogs.get(key, ())))
        for key in set(bindings) | set(dialogs)
    }


def _statuses(
    tx: Transaction, where: str, params: tuple[object, ...]
) -> dict[tuple[str, str], tuple[SavedStatus, ...]]:
    result: dict[tuple[str, str], list[SavedStatus]] = defaultdict(list)
    for owner, aor, resource, status, priority, message, savedAt in tx.execute(
        "SELECT owner, aor, resource, status, priority, message, saved_at FROM saved_statuses "
        f"{where} ORDER BY owner, aor, resource",
        params,
    ):
        result[(owner, aor)].append(
            SavedStatus(aor, resource, status, None if priority is None else int(priority),
                        message, float(savedAt))
        )
    return {key: tuple(value) for key, value in result.items()}
