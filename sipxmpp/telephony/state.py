"""
Telephony state per user: a pure state machine over observer events.

The SIP observer reports bindings (a registered contact of an AoR, with its
lifetime) and dialogs (early, confirmed, held, refreshed, terminated) as
method calls; this module aggregates all of an AoR's devices and dialogs into
one L{TelephonyState} and tells every L{ITelephonyObserver} about each
transition and refresh.

Nothing can stay stuck: every binding expires unless refreshed, every early
dialog after C{earlyLifetime}, every confirmed dialog after its
Session-Expires (RFC 4028) or, without one, after C{dialogWatchdog}. A call
the proxy saw answered waits for its ACK (L{TelephonyStateMachine.dialogAcknowledged})
at most C{ackTimeout} (64*T1): without one the session was never set up
(RFC 3261 §13.3.1.4: the caller gave up, the answer lost on its way), and
no BYE would come to end it. Events
about a dialog that already ended are ignored for a while (late 180 or 200
retransmissions, BYE retransmissions, a CANCEL crossing a 200), so they
cannot resurrect it.

For restarts, L{TelephonyStateMachine.snapshot} describes an AoR's bindings
and dialogs with the clock times they end, a persistence callback tells
when an AoR's snapshot changed, and L{TelephonyStateMachine.restore} brings
a snapshot back after a restart: what has ended meanwhile stays gone, and a
restored dialog is again bounded by the current lifetimes. Events can
arrive while the snapshots are still being read (SIP is served from the
start): between L{TelephonyStateMachine.beginRestore} and
L{TelephonyStateMachine.endRestore} the machine remembers every binding,
dialog and publication that ended or was removed without its knowing it,
and the restore leaves those out (a BYE retransmitted across the restart
must not leave the call up until the watchdog). Tombstones are
not part of a snapshot (they live for seconds).

Publications (RFC 3903 PUBLISH, later RFC 6665 NOTIFY) are another source
of the same dialogs: L{TelephonyStateMachine.publicationSet} takes what one
publication of an AoR reports (L{DialogReport}s, or just "on the phone" for
an RPID activity), with the publication's lifetime. Its dialogs aggregate
with the observed ones and with other publications' into the one state of
the AoR, keyed apart from the observed ones (the two cannot be matched:
published dialogs may carry no tags). A dialog belongs to the publication
that reported it last, and ends when that publication says so, expires or
is removed; an early one also after C{earlyLifetime}. A report never
takes a dialog back from confirmed to early, and one that would (reordered,
or from a publication orphaned by its publisher) does not take the dialog
over from the publication that confirmed it. A dialog a report ends is
tombstoned like an observed one, so a late or reordered "confirmed" cannot
bring it back.

Publications that carry a I{tag} (what their source calls them now: an
RFC 3903 entity-tag) and own a dialog (or say "busy") are part of a
snapshot, with their lifetime, the dialogs they own and whether they say
"busy", and changes to tagged publications call the persistence callback
like any other: after a restart a call in progress is
shown again, and the publisher's next refresh or modification, naming that
tag, finds its publication. Publications without a tag (a subscription's
NOTIFYs: the subscription itself does not survive a restart, and a new one
brings the full state) are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from sipxmpp.telephony.events import (
    DialogPhase,
    DialogReport,
    Event,
    IPublicationListener,
    ITelephonyObserver,
    StateChange,
    TelephonyState,
)
from sipxmpp.telephony.snapshots import (
    BindingSnapshot,
    DialogSnapshot,
    PublicationSnapshot,
    UserSnapshot,
)
from sipxmpp.telephony.users import (
    STATES,
    Busy,
    Dialog,
    Publication,
    Published,
    User,
)

# Seconds: how long a dialog that ended is remembered so late retransmissions
# about it are ignored (64*T1, the longest RFC 3261 transaction lifetime).
TOMBSTONE_LIFETIME = 32.0


def _transitionEvent(previous: TelephonyState, new: TelephonyState) -> Event:
    if new is TelephonyState.ON_HOLD:
        return Event.HELD
    if new is TelephonyState.ON_THE_PHONE and previous is TelephonyState.ON_HOLD:
        return Event.RESUMED
    return {
        TelephonyState.OFFLINE: Event.OFFLINE,
        TelephonyState.ONLINE: Event.ONLINE,
        TelephonyState.RINGING: Event.RINGING,
        TelephonyState.ON_THE_PHONE: Event.ON_THE_PHONE,
    }[new]


# The event that reports a transition, by [previous rank][new rank], and the
# one that reports a refresh (or None), by rank: precomputed for the hot path.
_TRANSITIONS: tuple[tuple[Event, ...], ...] = tuple(
    tuple(_transitionEvent(previous, new) for new in STATES) for previous in STATES
)
_STILL: tuple[Event | None, ...] = tuple(
    {
        TelephonyState.ONLINE: Event.STILL_ONLINE,
        TelephonyState.ON_THE_PHONE: Event.STILL_ON_THE_PHONE,
    }.get(state)
    for state in STATES
)


class TelephonyStateMachine:
    """
    Aggregated telephony state of every AoR seen, driven by observer events.

    @param clock: schedules expiries; a L{twisted.internet.task.Clock} in tests.
    @param dialogWatchdog: upper lifetime of a confirmed dialog without
        Session-Expires, in seconds.
    @param earlyLifetime: upper lifetime of an unanswered dialog (RFC 3261
        Timer C is "greater than 3 minutes").
    @param bindingGrace: extra seconds a binding is kept past its expiry,
        so a re-REGISTER whose 200 OK arrives just after the old expiry does
        not flap the user offline and online again.
    @param ackTimeout: how long an answered call waits for its ACK
        (C{dialogConfirmed(awaitAck=True)}) before it ends: 64*T1.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        dialogWatchdog: float = 4 * 3600.0,
        earlyLifetime: float = 181.0,
        bindingGrace: float = 5.0,
        ackTimeout: float = 32.0,
    ) -> None:
        self._clock = clock
        self.ackTimeout = ackTimeout
        # ACKs seen before their 2xx was reported (SIP workers' events can
        # cross), each forgotten after ackTimeout.
        self._ackedFirst: dict[tuple[str, Hashable], IDelayedCall] = {}
        self._observers: list[ITelephonyObserver] = []
        self._publicationListeners: list[IPublicationListener] = []
        self._users: dict[str, User] = {}
        self.dialogWatchdog = dialogWatchdog
        self.earlyLifetime = earlyLifetime
        self.bindingGrace = bindingGrace
        self._persist: Callable[[str], None] | None = None
        # Set while a publication changes: the snapshot, which leaves
        # publications out, does not change, so the store is not told.
        self._publishing = False
        # Between beginRestore and endRestore: (kind, aor, key) of what
        # ended unknown to us, and the AoRs that de-registered every contact.
        self._endedWhileRestoring: set[tuple[str, str, Hashable]] | None = None
        self._clearedWhileRestoring: set[str] = set()

    def addObserver(self, observer: ITelephonyObserver) -> None:
        """
        Report every transition and refresh to C{observer}.
        """
        self._observers.append(observer)

    def addPublicationListener(self, listener: IPublicationListener) -> None:
        """
        Tell C{listener} of every publication created or modified
        (L{publicationSet} with a positive lifetime), before it is applied.
        """
        self._publicationListeners.append(listener)

    def stateOf(self, aor: str) -> TelephonyState:
        """
        Return the current state of C{aor} (C{OFFLINE} if never seen).
        """
        user = self._users.get(aor)
        return user.state if user is not None else TelephonyState.OFFLINE

    def dialogCount(self, aor: str) -> int:
        """
        How many dialogs (observed or published) C{aor} has now.
        """
        user = self._users.get(aor)
        return len(user.dialogs) if user is not None else 0

    def users(self) -> dict[str, TelephonyState]:
        """
        Return the state of every AoR that is not offline.
        """
        return {aor: user.state for aor, user in self._users.items()
                if user.state is not TelephonyState.OFFLINE}

    # --- persistence ---

    def setPersistenceCallback(self, callback: Callable[[str], None] | None) -> None:
        """
        Call C{callback(aor)} whenever the bindings or dialogs of C{aor}
        change (including refreshes, which move expiry times), so that a
        store can save L{snapshot}C{(aor)}. One callback at a time; L{None}
        removes it. Like observers, it must return quickly and not raise.
        """
        self._persist = callback

    def snapshot(self, aor: str) -> UserSnapshot:
        """
        Return the bindings and dialogs of C{aor} with the clock times they
        end (an empty snapshot when there are none). Dialogs that
        publications reported are left out (see the module docstring).
        """
        user = self._users.get(aor)
        if user is None:
            return UserSnapshot(aor)
        bindings = tuple(
            BindingSnapshot(contact, timer.getTime() - self.bindingGrace)
            for contact, timer in user.bindings.items()
        )
        dialogs = tuple(
            DialogSnapshot(
                dialogId,
                dialog.confirmed,
                dialog.held,
                dialog.timer.getTime() if dialog.timer is not None else self._clock.seconds(),
            )
            for dialogId, dialog in user.dialogs.items()
            if dialog.publication is None
        )
        # Only those that hold something: a publication that owns no dialog
        # (a "terminated" one lingering until it expires) would only be
        # answered 412 after a restart, and its publisher publish afresh.
        publications = tuple(
            self._publicationSnapshot(user, key, owned)
            for key, owned in user.publications.items()
            if owned.tag is not None and owned.dialogs
        )
        return UserSnapshot(aor, bindings, dialogs, publications)

    def _publicationSnapshot(self, user: User, key: Hashable,
                             owned: Publication) -> PublicationSnapshot:  # fmt: skip
        assert owned.tag is not None
        reports = []
        for dialogKey in owned.dialogs:
            if isinstance(dialogKey, Published):
                dialog = user.dialogs[dialogKey]
                phase = (DialogPhase.EARLY if not dialog.confirmed
                         else DialogPhase.HELD if dialog.held else DialogPhase.CONFIRMED)
                reports.append(DialogReport(dialogKey.dialogId, phase, dialog.outgoing))
        return PublicationSnapshot(key, owned.tag, owned.timer.getTime(), tuple(reports),
                                   Busy(key) in owned.dialogs)  # fmt: skip

    def snapshots(self) -> list[UserSnapshot]:
        """
        Return the non-empty snapshot of every AoR.
        """
        result = [self.snapshot(aor) for aor in list(self._users)]
        return [snap for snap in result if not snap.isEmpty()]

    @property
    def restoring(self) -> bool:
        """
        Between L{beginRestore} and L{endRestore}.
        """
        return self._endedWhileRestoring is not None

    def beginRestore(self) -> None:
        """
        Snapshots will be restored, and events may come first: from now on
        remember what ends unknown, so that L{restore} leaves it out.
        """
        self._endedWhileRestoring = set()
        self._clearedWhileRestoring = set()

    def endRestore(self) -> None:
        """
        The restore is over (or failed): forget what L{beginRestore} made
        the machine remember.
        """
        self._endedWhileRestoring = None
        self._clearedWhileRestoring = set()

    def _endedUnknown(self, kind: str, aor: str, key: Hashable) -> None:
        if self._endedWhileRestoring is not None:
            self._endedWhileRestoring.add((kind, aor, key))

    def restore(self, snapshot: UserSnapshot) -> None:
        """
        Bring back the bindings, dialogs and publications of a snapshot
        taken before a restart, and report the resulting state to the
        observers like any other change (publication listeners are not
        told: nothing was published).

        Bindings and dialogs that ended meanwhile are left out. A restored
        dialog ends at its saved time but no later than the current early
        lifetime or watchdog from now, so a restart never extends a call
        beyond the configured bounds. Whatever the machine already knows
        (a binding or dialog seen since the start) wins over the snapshot,
        and what ended since L{beginRestore} stays ended.
        """
        now = self._clock.seconds()
        aor = snapshot.aor
        user = self._user(aor)
        ended = self._endedWhileRestoring or set()
        cleared = aor in self._clearedWhileRestoring
        for binding in snapshot.bindings:
            remaining = binding.expiresAt - now
            if (remaining <= 0 or binding.contact in user.bindings or cleared
                    or ("binding", aor, binding.contact) in ended):
                continue
            user.bindings[binding.contact] = self._clock.callLater(
                remaining + self.bindingGrace, self._bindingExpired, aor, binding.contact
            )
        for saved in snapshot.dialogs:
            dialogId = saved.dialogId
            bound = self.dialogWatchdog if saved.confirmed else self.earlyLifetime
            remaining = min(saved.expiresAt - now, bound)
            if (remaining <= 0 or dialogId in user.dialogs or dialogId in user.tombstones
                    or ("dialog", aor, dialogId) in ended):
                continue
            dialog = Dialog(saved.confirmed, saved.held)
            user.addDialog(dialogId, dialog)
            self._arm(aor, dialogId, dialog, remaining)
        for publication in snapshot.publications:
            remaining = publication.expiresAt - now
            if (remaining <= 0 or publication.publication in user.publications
                    or ("publication", aor, publication.publication) in ended):
                continue
            self._applyPublication(aor, user, publication.publication, remaining,
                                   publication.dialogs, publication.busy, False,
                                   publication.tag)  # fmt: skip
        self._update(aor, user)

    # --- bindings ---

    def bindingUpdated(self, aor: str, contact: Hashable, expires: float) -> None:
        """
        The registrar accepted C{contact} for C{aor} for C{expires} seconds
        (0 removes it). A known contact is a refresh.
        """
        if expires <= 0:
            self.bindingRemoved(aor, contact)
            return
        user = self._user(aor)
        timer = user.bindings.get(contact)
        refresh = timer is not None
        if timer is not None:
            timer.cancel()
        user.bindings[contact] = self._clock.callLater(
            expires + self.bindingGrace, self._bindingExpired, aor, contact
        )
        self._update(aor, user, refresh=refresh)

    def bindingRemoved(self, aor: str, contact: Hashable) -> None:
        """
        C{contact} of C{aor} was de-registered.
        """
        user = self._users.get(aor)
        if user is None or contact not in user.bindings:
            self._endedUnknown("binding", aor, contact)
            return
        user.bindings.pop(contact).cancel()
        self._update(aor, user)

    def allBindingsRemoved(self, aor: str) -> None:
        """
        C{aor} de-registered every contact (C{Contact: *}).
        """
        if self._endedWhileRestoring is not None:
            self._clearedWhileRestoring.add(aor)
        user = self._users.get(aor)
        if user is None or not user.bindings:
            return
        for timer in user.bindings.values():
            timer.cancel()
        user.bindings.clear()
        self._update(aor, user)

    def _bindingExpired(self, aor: str, contact: Hashable) -> None:
        user = self._users[aor]
        del user.bindings[contact]
        self.log.debug("binding {contact} of {aor} expired", contact=contact, aor=aor)
        self._update(aor, user)

    # --- dialogs ---

    def dialogEarly(self, aor: str, dialogId: Hashable, outgoing: bool = False) -> None:
        """
        C{aor} has a call that is ringing (a provisional response): their
        phone rings, or with C{outgoing} they placed the call and are
        waiting for an answer. Ignored for a dialog already confirmed: a 180
        that arrives after the 200 must not turn a call back into ringing.
        """
        user = self._user(aor)
        if dialogId in user.tombstones or dialogId in user.dialogs:
            return
        dialog = Dialog(outgoing=outgoing)
        user.addDialog(dialogId, dialog)
        self._arm(aor, dialogId, dialog, self.earlyLifetime)
        self._update(aor, user)

    def dialogConfirmed(
        self, aor: str, dialogId: Hashable, sessionExpires: float | None = None,
        awaitAck: bool = False,
    ) -> None:
        """
        The call C{dialogId} of C{aor} was answered (2xx). With
        C{awaitAck} (the proxy forwards the ACK too) it ends unless
        L{dialogAcknowledged} comes within C{ackTimeout}.
        """
        user = self._user(aor)
        if dialogId in user.tombstones:
            return
        lifetime = sessionExpires or self.dialogWatchdog
        dialog = user.dialogs.get(dialogId)
        answered = dialog is None or not dialog.confirmed
        if dialog is None:
            dialog = Dialog(confirmed=True)
            user.addDialog(dialogId, dialog)
        elif not dialog.confirmed:
            user.changeDialog(dialog, True, dialog.held)
        acked = self._ackedFirst.pop((aor, dialogId), None)
        if acked is not None:
            acked.cancel()
        if awaitAck and answered and acked is None:
            dialog.afterAck = lifetime
            self._arm(aor, dialogId, dialog, min(self.ackTimeout, lifetime))
        elif dialog.afterAck is not None and acked is None:
            dialog.afterAck = lifetime  # a 2xx again: the ACK is still awaited
        else:
            dialog.afterAck = None
            self._arm(aor, dialogId, dialog, lifetime)
        # Another answered call (or a 200 retransmission) while already on
        # the phone is reported as "still on the phone".
        self._update(aor, user, refresh=True)

    def dialogAcknowledged(self, aor: str, dialogId: Hashable) -> None:
        """
        The ACK of C{aor}'s answered call C{dialogId} went through: the
        session is up, and the dialog lives its full lifetime.
        """
        user = self._users.get(aor)
        dialog = user.dialogs.get(dialogId) if user is not None else None
        if dialog is None:
            key = (aor, dialogId)
            if (user is None or dialogId not in user.tombstones) and key not in self._ackedFirst:
                self._ackedFirst[key] = self._clock.callLater(
                    self.ackTimeout, self._ackedFirst.pop, key, None)
            return
        if dialog.afterAck is None:
            return
        lifetime, dialog.afterAck = dialog.afterAck, None
        self._arm(aor, dialogId, dialog, lifetime)
        assert user is not None
        self._update(aor, user)  # its saved end moves

    def dialogRefreshed(
        self, aor: str, dialogId: Hashable, sessionExpires: float | None = None
    ) -> None:
        """
        A confirmed call was refreshed (re-INVITE or UPDATE without a change
        of direction): it lives on for another C{sessionExpires} seconds.
        """
        user = self._users.get(aor)
        dialog = user.dialogs.get(dialogId) if user is not None else None
        if user is None or dialog is None or not dialog.confirmed:
            return
        self._arm(aor, dialogId, dialog, sessionExpires or self.dialogWatchdog)
        self._update(aor, user, refresh=True)

    def isHeld(self, aor: str, dialogId: Hashable) -> bool:
        """
        Is the confirmed dialog C{dialogId} of C{aor} on hold?
        """
        user = self._users.get(aor)
        dialog = user.dialogs.get(dialogId) if user is not None else None
        return dialog is not None and dialog.held

    def dialogHeld(self, aor: str, dialogId: Hashable) -> None:
        """
        C{aor} put the call on hold, or was put on hold (sendonly/inactive).
        """
        self._setHeld(aor, dialogId, True)

    def dialogResumed(self, aor: str, dialogId: Hashable) -> None:
        """
        The held call is active again (sendrecv).
        """
        self._setHeld(aor, dialogId, False)

    def dialogActive(
        self, aor: str, dialogId: Hashable, sessionExpires: float | None = None
    ) -> None:
        """
        A re-INVITE or UPDATE with media flowing both ways (sendrecv): a
        held call is resumed, any other is refreshed. One event, decided
        here, so that whoever reports it need not ask whether it is held.
        """
        if self.isHeld(aor, dialogId):
            self.dialogResumed(aor, dialogId)
        else:
            self.dialogRefreshed(aor, dialogId, sessionExpires)

    def _setHeld(self, aor: str, dialogId: Hashable, held: bool) -> None:
        user = self._users.get(aor)
        dialog = user.dialogs.get(dialogId) if user is not None else None
        if user is None or dialog is None or not dialog.confirmed:
            return
        user.changeDialog(dialog, True, held)
        self._update(aor, user, refresh=True)

    def dialogTerminated(self, aor: str, dialogId: Hashable) -> None:
        """
        The call ended (BYE, CANCEL answered, a failure response, or a
        transaction timeout). Repeats are harmless.
        """
        user = self._users.get(aor)
        if user is None or dialogId not in user.dialogs:
            self._endedUnknown("dialog", aor, dialogId)
            return
        self._end(aor, user, dialogId)

    def _arm(self, aor: str, dialogId: Hashable, dialog: Dialog, lifetime: float) -> None:
        if dialog.timer is not None:
            dialog.timer.cancel()
        dialog.timer = self._clock.callLater(lifetime, self._dialogExpired, aor, dialogId)

    def _dialogExpired(self, aor: str, dialogId: Hashable) -> None:
        user = self._users[aor]
        dialog = user.dialogs[dialogId]
        dialog.timer = None
        if dialog.afterAck is not None:
            self.log.info("answered dialog {dialog} of {aor} got no ACK within {timeout:g} s "
                          "(the session was never set up); ending it",
                          dialog=dialogId, aor=aor, timeout=self.ackTimeout)  # fmt: skip
        else:
            self.log.info(
                "{kind} dialog {dialog} of {aor} reached its lifetime; ending it",
                kind="confirmed" if dialog.confirmed else "early", dialog=dialogId, aor=aor,
            )
        if dialog.publication is None:
            self._end(aor, user, dialogId)
        else:
            self._retire(aor, user, dialogId)
            self._publicationUpdate(aor, user)

    def _end(self, aor: str, user: User, dialogId: Hashable) -> None:
        self._retire(aor, user, dialogId)
        self._update(aor, user)

    def _retire(self, aor: str, user: User, dialogId: Hashable) -> None:
        """
        Remove a dialog without updating the aggregate: tombstone it, and
        take it from the publication that owned it.
        """
        dialog = user.removeDialog(dialogId)
        if dialog.timer is not None:
            dialog.timer.cancel()
        if dialog.publication is not None:
            user.publications[dialog.publication].dialogs.discard(dialogId)
            if isinstance(dialogId, Busy):
                return  # it stood for no call, so no late report can revive it
        self._tombstone(aor, user, dialogId)

    def _tombstone(self, aor: str, user: User, dialogId: Hashable) -> None:
        user.tombstones[dialogId] = self._clock.callLater(
            TOMBSTONE_LIFETIME, self._forget, aor, dialogId
        )

    # --- publications ---

    def publicationSet(
        self,
        aor: str,
        publication: Hashable,
        expires: float,
        dialogs: Iterable[DialogReport] = (),
        busy: bool = False,
        partial: bool = False,
        tag: str | None = None,
    ) -> None:
        """
        A publication of C{aor} was created or modified: it lives for
        C{expires} seconds from now (0 or less removes it) and reports
        C{dialogs}.

        Each reported dialog is created or changed and now belongs to this
        publication; one reported as terminated ends, whichever publication
        had it (and is tombstoned even if unknown, so that a "confirmed"
        arriving late cannot start it). A confirmed dialog is never turned
        back into an early one, and an early report of it from another
        publication leaves it with the publication it has. Unless
        C{partial}, the report is the publication's full state: its dialogs
        not listed end.

        @param publication: identifies the publication among those of
            C{aor}; stays the same across its refreshes and modifications.
        @param busy: the publication says the user is on the phone without
            naming a dialog (RPID C{on-the-phone} or C{busy}); replaces
            what it said about that before.
        @param tag: what the source calls the publication now, if it can
            be resumed after a restart (an entity-tag): it is then saved.
        """
        if expires <= 0:
            self.publicationRemoved(aor, publication)
            return
        for listener in self._publicationListeners:
            try:
                listener.publicationArrived(aor)
            except Exception:
                self.log.failure("publication listener {listener} failed on {aor}",
                                 listener=listener, aor=aor)
        user = self._user(aor)
        owned = self._applyPublication(aor, user, publication, expires, dialogs, busy,
                                       partial, tag)  # fmt: skip
        # A publication that still reports a call is a refresh of it.
        self._publicationUpdate(aor, user, refresh=bool(owned.dialogs),
                                saved=tag is not None)  # fmt: skip

    def _applyPublication(self, aor: str, user: User, publication: Hashable, expires: float,
                          dialogs: Iterable[DialogReport], busy: bool, partial: bool,
                          tag: str | None) -> Publication:  # fmt: skip
        owned = user.publications.get(publication)
        if owned is None:
            owned = user.publications[publication] = Publication(
                self._clock.callLater(expires, self._publicationExpired, aor, publication)
            )
        else:
            owned.timer = self._rearm(owned.timer, expires, aor, publication)
        owned.tag = tag
        listed: set[Hashable] = set()
        for report in dialogs:
            published = Published(report.dialogId)
            listed.add(published)
            self._applyReport(aor, user, publication, owned, published, report)
        busyKey = Busy(publication)
        if busy:
            listed.add(busyKey)
            if busyKey not in user.dialogs:
                user.addDialog(busyKey, Dialog(confirmed=True, publication=publication))
                owned.dialogs.add(busyKey)
        elif busyKey in user.dialogs:
            self._retire(aor, user, busyKey)
        if not partial:
            for gone in owned.dialogs - listed:
                self._retire(aor, user, gone)
        return owned

    def _applyReport(self, aor: str, user: User, publication: Hashable,
                     owned: Publication, key: Published, report: DialogReport) -> None:
        phase = report.phase
        dialog = user.dialogs.get(key)
        if phase is DialogPhase.TERMINATED:
            if dialog is not None:
                self._retire(aor, user, key)
            elif key not in user.tombstones:
                self._tombstone(aor, user, key)
            return
        if key in user.tombstones:
            return
        confirmed = phase is not DialogPhase.EARLY
        held = phase is DialogPhase.HELD
        if dialog is None:
            dialog = Dialog(confirmed=confirmed, held=held, outgoing=report.outgoing,
                             publication=publication)
            user.addDialog(key, dialog)
            owned.dialogs.add(key)
            if not confirmed:
                self._arm(aor, key, dialog, self.earlyLifetime)
            return
        if dialog.confirmed and not confirmed and dialog.publication != publication:
            # A stale or reordered report from another publication (pua's
            # orphaned "Trying", an "early" relayed after the 200): the
            # dialog stays answered and with the publication that says so.
            return
        if dialog.publication != publication:
            previous = dialog.publication
            if previous is not None:
                user.publications[previous].dialogs.discard(key)
            dialog.publication = publication
            owned.dialogs.add(key)
        if confirmed:
            if dialog.timer is not None:
                # From now on it lives as long as its publication.
                dialog.timer.cancel()
                dialog.timer = None
            if not dialog.confirmed or dialog.held != held:
                user.changeDialog(dialog, True, held)

    def publicationRefreshed(self, aor: str, publication: Hashable, expires: float,
                             tag: str | None = None) -> None:  # fmt: skip
        """
        A publication of C{aor} was refreshed without a change: it lives
        for another C{expires} seconds (0 or less removes it), under its
        new C{tag} (as for L{publicationSet}). Unknown publications are
        ignored.
        """
        if expires <= 0:
            self.publicationRemoved(aor, publication)
            return
        user = self._users.get(aor)
        owned = user.publications.get(publication) if user is not None else None
        if user is None or owned is None:
            return
        owned.timer = self._rearm(owned.timer, expires, aor, publication)
        owned.tag = tag
        self._publicationUpdate(aor, user, refresh=bool(owned.dialogs), saved=tag is not None)

    def _rearm(self, timer: IDelayedCall, expires: float, aor: str,
               publication: Hashable) -> IDelayedCall:  # fmt: skip
        # Cancel and schedule anew rather than DelayedCall.reset: the
        # reactor moves a call sooner by searching its whole list (a
        # "terminated" PUBLISH shortens 3600 s to 11), which profiled at
        # 18 % of the gateway's CPU under a PUBLISH ramp.
        if timer.active():
            timer.cancel()
        return self._clock.callLater(expires, self._publicationExpired, aor, publication)

    def publicationRemoved(self, aor: str, publication: Hashable) -> None:
        """
        A publication of C{aor} was removed (or expired at its source): the
        dialogs it owns end. Repeats are harmless.
        """
        user = self._users.get(aor)
        owned = user.publications.pop(publication, None) if user is not None else None
        if user is None or owned is None:
            self._endedUnknown("publication", aor, publication)
            return
        if owned.timer.active():
            owned.timer.cancel()
        self._endPublication(aor, user, publication, owned)

    def _publicationExpired(self, aor: str, publication: Hashable) -> None:
        user = self._users[aor]
        owned = user.publications.pop(publication)
        self.log.info(
            "publication {publication} of {aor} expired, ending {count} of its dialogs",
            publication=publication, aor=aor, count=len(owned.dialogs),
        )
        self._endPublication(aor, user, publication, owned)

    def _endPublication(self, aor: str, user: User, publication: Hashable,
                        owned: Publication) -> None:
        # Popped from user.publications first: _retire must not look it up.
        for key in owned.dialogs:
            dialog = user.removeDialog(key)
            if dialog.timer is not None:
                dialog.timer.cancel()
            if not isinstance(key, Busy):
                self._tombstone(aor, user, key)
        self._publicationUpdate(aor, user, saved=owned.tag is not None)

    def _publicationUpdate(self, aor: str, user: User, refresh: bool = False,
                           saved: bool = True) -> None:  # fmt: skip
        # A change of publications that are not saved leaves the snapshot
        # as it was: the store need not be told.
        self._publishing = not saved
        try:
            self._update(aor, user, refresh)
        finally:
            self._publishing = False

    def _forget(self, aor: str, dialogId: Hashable) -> None:
        user = self._users[aor]
        del user.tombstones[dialogId]
        if user.idle():
            del self._users[aor]

    # --- aggregation ---

    def _user(self, aor: str) -> User:
        user = self._users.get(aor)
        if user is None:
            user = self._users[aor] = User()
        return user

    def _update(self, aor: str, user: User, refresh: bool = False) -> None:
        previous = user.rank
        rank = user.rank = user.aggregate()
        if rank != previous:
            event: Event | None = _TRANSITIONS[previous][rank]
        elif refresh:
            event = _STILL[rank]
        else:
            event = None
        if user.idle():
            del self._users[aor]
        if self._persist is not None and not self._publishing:
            try:
                self._persist(aor)
            except Exception:
                self.log.failure("persistence callback failed for {aor}", aor=aor)
        if event is None:
            return
        change = StateChange(aor, event, STATES[rank], STATES[previous], self._clock.seconds())
        for observer in self._observers:
            try:
                observer.telephonyStateChanged(change)
            except Exception:
                # A consumer's bug must not break SIP processing.
                self.log.failure("observer {observer} failed on {change}",
                                 observer=observer, change=change)
