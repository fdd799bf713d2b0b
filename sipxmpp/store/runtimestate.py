"""
Runtime state in an SQL database: each gateway's bindings, dialogs, saved
client statuses, XMPP session states and SIP routes back to the phones.

Rows belong to an I{owner}, the gateway instance that wrote them, so
several gateways can share one PostgreSQL store: each restores only its
own users. Times are POSIX times (the reactor's clock), so they mean the
same after a restart.

Taking a user over (L{SQLRuntimeStateStore.claim}): rows belong to whoever
claimed them last. An instance that is sent the publications of a user
whose saved client statuses another instance wrote (that one died, or the
dispatcher moved the user) moves those statuses to its own name and drops
the other's bindings, dialogs and session row of that user, in one
transaction. An instance only ever writes and deletes rows under its own
name, and restores only those: one that comes back after its users were
taken over does not find them, and does not act on them again; if their
publications come back to it, it claims them back the same way.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Hashable, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.registrations import Binding, ContactKey
from sipxmpp.store.database import Database, Transaction
from sipxmpp.store.interfaces import IRuntimeStateStore
from sipxmpp.store.records import ROUTE_KINDS, AoRChanges, RouteRecord, SessionRecord, UserReport
from sipxmpp.store.statekeys import UnencodableKey, decodeKey, encodeKey
from sipxmpp.telephony.events import DialogPhase, DialogReport
from sipxmpp.telephony.snapshots import (
    BindingSnapshot,
    DialogSnapshot,
    PublicationSnapshot,
    UserSnapshot,
)
from sipxmpp.xmpp.savedstatuses import SavedStatus

# Every table whose rows belong to an owner.
_OWNED_TABLES = ("bindings", "dialogs", "publications", "saved_statuses", "xmpp_sessions",
                 "phone_routes", "user_activities")


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

    def write(self, changes: Sequence[AoRChanges], now: float,
              routes: Sequence[RouteRecord] = ()) -> Deferred[None]:
        rows = [self._rows(change) for change in changes]
        gone = [(self.owner, r.kind, encodeContactKey(r.key)) for r in routes]
        routeRows = [_routeRow(self.owner, r) for r in routes if r.binding is not None]

        def work(tx: Transaction) -> None:
            if gone:
                tx.executeMany(
                    "DELETE FROM phone_routes WHERE owner = ? AND kind = ? AND contact_key = ?",
                    gone,
                )
                tx.executeMany(
                    "INSERT INTO phone_routes (owner, kind, contact_key, aor, contact, "
                    "transport, host, port, source_host, source_port, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    routeRows,
                )
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
                    tx.execute("DELETE FROM publications WHERE owner = ? AND aor = ?", key)
                    tx.executeMany(
                        "INSERT INTO publications (owner, aor, publication_key, tag, busy, "
                        "dialogs, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        self._publicationRows(change.snapshot),
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
                if change.activity is not None:
                    tx.execute("DELETE FROM user_activities WHERE owner = ? AND aor = ?", key)
                    if change.activity:
                        tx.execute("INSERT INTO user_activities (owner, aor, published_at) "
                                   "VALUES (?, ?, ?)", (self.owner, change.aor, now))
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

    def _publicationRows(self, snapshot: UserSnapshot) -> list[tuple[object, ...]]:
        rows: list[tuple[object, ...]] = []
        aor = snapshot.aor
        for p in snapshot.publications:
            key = self._encode(aor, p.publication)
            dialogs = [(self._encode(aor, d.dialogId), d.phase.value, d.outgoing)
                       for d in p.dialogs]  # fmt: skip
            if key is not None and all(d[0] is not None for d in dialogs):
                rows.append((self.owner, aor, key, p.tag, p.busy,
                             json.dumps(dialogs, separators=(",", ":")), p.expiresAt))
        return rows

    def _prune(self, tx: Transaction, now: float) -> None:
        tx.execute("DELETE FROM bindings WHERE owner = ? AND expires_at <= ?", (self.owner, now))
        tx.execute("DELETE FROM dialogs WHERE owner = ? AND expires_at <= ?", (self.owner, now))
        tx.execute("DELETE FROM publications WHERE owner = ? AND expires_at <= ?",
                   (self.owner, now))
        tx.execute("DELETE FROM phone_routes WHERE owner = ? AND expires_at <= ?",
                   (self.owner, now))

    # --- reading ---

    def loadSnapshots(self, now: float) -> Deferred[list[UserSnapshot]]:
        def work(tx: Transaction) -> list[UserSnapshot]:
            self._prune(tx, now)
            snapshots = _snapshots(tx, "WHERE owner = ?", (self.owner,), now)
            return [snapshots[key] for key in sorted(snapshots)]

        return self._db.interact(work)

    def loadRoutes(self, now: float) -> Deferred[list[RouteRecord]]:
        return self._db.interact(lambda tx: self._loadRoutes(tx, now))

    def loadRoutesBlocking(self, now: float) -> list[RouteRecord]:
        """
        L{loadRoutes} in the calling thread: for the start, before the
        reactor handles any SIP (blocking, like opening the store).
        """
        return self._db.interactBlocking(lambda tx: self._loadRoutes(tx, now))

    def _loadRoutes(self, tx: Transaction, now: float) -> list[RouteRecord]:
        self._prune(tx, now)
        routes = []
        for (kind, key, aor, contact, transport, host, port, sourceHost, sourcePort,
             expiresAt) in tx.execute(
            "SELECT kind, contact_key, aor, contact, transport, host, port, source_host, "
            "source_port, expires_at FROM phone_routes WHERE owner = ? AND expires_at > ? "
            "ORDER BY kind, contact_key",
            (self.owner, now),
        ):
            try:
                contactKey = decodeContactKey(key)
            except ValueError:
                self.log.warn("ignoring a saved route with an unreadable key {key!r}", key=key)
                continue
            if kind not in ROUTE_KINDS:
                continue
            flow = Peer(transport, host, int(port))
            source = (None if sourceHost is None or sourcePort is None
                      else Peer(transport, sourceHost, int(sourcePort)))
            routes.append(RouteRecord(
                kind, contactKey, Binding(aor, contact, flow, float(expiresAt), source)))
        return routes

    def loadSavedStatuses(self) -> Deferred[list[SavedStatus]]:
        def work(tx: Transaction) -> list[SavedStatus]:
            return [
                status
                for (_, _), statuses in sorted(_statuses(tx, "WHERE owner = ?", (self.owner,))
                                               .items())
                for status in statuses
            ]

        return self._db.interact(work)

    def loadPendingActivities(self) -> Deferred[list[str]]:
        def work(tx: Transaction) -> list[str]:
            return [row[0] for row in tx.execute(
                "SELECT aor FROM user_activities WHERE owner = ? ORDER BY aor", (self.owner,))]

        return self._db.interact(work)

    def claim(self, aor: str) -> Deferred[list[SavedStatus]]:
        def work(tx: Transaction) -> list[SavedStatus]:
            # This owner serves the user now and publishes its activity
            # afresh: another's retraction after its restart would undo it.
            tx.execute("DELETE FROM user_activities WHERE aor = ? AND owner <> ?",
                       (aor, self.owner))
            others = tx.execute(
                "SELECT resource, status, priority, message, saved_at FROM saved_statuses "
                "WHERE aor = ? AND owner <> ? ORDER BY saved_at, owner",
                (aor, self.owner),
            )
            if not others:
                return []
            own = {row[0] for row in tx.execute(
                "SELECT resource FROM saved_statuses WHERE owner = ? AND aor = ?",
                (self.owner, aor),
            )}
            # Per client: what this owner saved itself wins, else the newest.
            chosen: dict[str, SavedStatus] = {}
            for resource, status, priority, message, savedAt in others:
                if resource not in own:
                    chosen[resource] = SavedStatus(
                        aor, resource, status, None if priority is None else int(priority),
                        message, float(savedAt))
            for table in ("saved_statuses", "bindings", "dialogs", "xmpp_sessions"):
                tx.execute(f"DELETE FROM {table} WHERE aor = ? AND owner <> ?",
                           (aor, self.owner))
            claimed = [chosen[resource] for resource in sorted(chosen)]
            tx.executeMany(
                "INSERT INTO saved_statuses (owner, aor, resource, status, priority, "
                "message, saved_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(self.owner, aor, s.resource, s.status, s.priority, s.message, s.savedAt)
                 for s in claimed],
            )
            return claimed

        return self._db.interact(work)

    def adoptPreviousNameBlocking(self) -> tuple[str | None, list[str]]:
        """
        Move the rows of the one other owner in the store to this owner, if
        this owner has none: the gateway's host name, its default name,
        changed (a new container). Only for a store of one gateway (SQLite):
        in a shared store the other owner may be alive. Blocking, for the
        start.

        @return: the name adopted (or L{None}) and the owners found.
        """
        def work(tx: Transaction) -> tuple[str | None, list[str]]:
            owners: set[str] = set()
            for table in _OWNED_TABLES:
                owners.update(row[0] for row in tx.execute(f"SELECT DISTINCT owner FROM {table}"))
            found = sorted(owners)
            if self.owner in owners or len(owners) != 1:
                return None, found
            previous = found[0]
            for table in _OWNED_TABLES:
                tx.execute(f"UPDATE {table} SET owner = ? WHERE owner = ?",
                           (self.owner, previous))
            return previous, found

        return self._db.interactBlocking(work)

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


def encodeContactKey(key: ContactKey) -> str:
    """
    A contact key (user, host, port, GRUU) as the text saved for it.
    """
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


def decodeContactKey(text: str) -> ContactKey:
    """
    The contact key L{encodeContactKey} saved as C{text}.

    @raise ValueError: if C{text} is not one.
    """
    value = json.loads(text)
    if (not isinstance(value, list) or len(value) != 4
            or not all(isinstance(value[i], str) for i in (0, 1, 3))
            or not isinstance(value[2], int)):
        raise ValueError(f"not a contact key: {text!r}")
    return (value[0], value[1], value[2], value[3])


def _routeRow(owner: str, route: RouteRecord) -> tuple[object, ...]:
    b = route.binding
    assert b is not None
    source = b.source
    return (owner, route.kind, encodeContactKey(route.key), b.aor, b.contact,
            b.flow.transport, b.flow.host, b.flow.port,
            None if source is None else source.host, None if source is None else source.port,
            b.expiresAt)


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
    publications: dict[tuple[str, str], list[PublicationSnapshot]] = defaultdict(list)
    for owner, aor, publicationKey, tag, busy, published, expiresAt in tx.execute(
        f"SELECT owner, aor, publication_key, tag, busy, dialogs, expires_at FROM publications "
        f"{clause} ORDER BY owner, aor, publication_key",
        (*params, now),
    ):
        try:
            reports = tuple(DialogReport(decodeKey(key), DialogPhase(phase), bool(outgoing))
                            for key, phase, outgoing in json.loads(published))
            publication = decodeKey(publicationKey)
        except (ValueError, TypeError):
            continue  # not written by this code: nothing to restore from it
        publications[(owner, aor)].append(PublicationSnapshot(
            publication, tag, float(expiresAt), reports, bool(busy)))
    return {
        key: UserSnapshot(key[1], tuple(bindings.get(key, ())), tuple(dialogs.get(key, ())),
                          tuple(publications.get(key, ())))
        for key in set(bindings) | set(dialogs) | set(publications)
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
