"""
Tests for the per-user dialog counts of L{sipxmpp.telephony.state}: the
aggregate the state machine keeps up to date on every change must be the one
the old loop over all dialogs computes.

L{installChecker} makes a machine check itself after every update; the
state-machine tests use it, and the hypothesis test here feeds random event
sequences (with clock advances, restarts and restores) to a checked machine.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipxmpp.telephony.events import Event, ITelephonyObserver, StateChange, TelephonyState
from sipxmpp.telephony.snapshots import DialogSnapshot, UserSnapshot
from sipxmpp.telephony.state import TOMBSTONE_LIFETIME, TelephonyStateMachine
from sipxmpp.telephony.users import Dialog, User

S = TelephonyState
_RANK = {state: rank for rank, state in enumerate(TelephonyState)}
AORS = ["sip:alice@example.test", "sip:bob@example.test"]
CONTACTS = ["c1", "c2"]
DIALOGS = ["d1", "d2", "d3", "d4"]


def referenceDialogState(dialog: Dialog) -> TelephonyState:
    """
    The state one dialog shows, as the old loop computed it.
    """
    if dialog.confirmed:
        return S.ON_HOLD if dialog.held else S.ON_THE_PHONE
    if dialog.outgoing:
        return S.ON_THE_PHONE
    return S.RINGING


def referenceAggregate(user: User) -> TelephonyState:
    """
    The aggregate the slow way: the loop over every dialog that the counts
    replaced.
    """
    best = S.ONLINE if user.bindings else S.OFFLINE
    for dialog in user.dialogs.values():
        state = referenceDialogState(dialog)
        if _RANK[state] > _RANK[best]:
            best = state
    return best


def checkUser(aor: str, user: User) -> None:
    """
    Raise L{AssertionError} unless the counts, ranks and state of C{user}
    agree with its dialogs.
    """
    states = list(TelephonyState)
    for dialogId, dialog in user.dialogs.items():
        if states[dialog.rank] is not referenceDialogState(dialog):
            raise AssertionError(f"{aor} dialog {dialogId!r}: rank {dialog.rank} for {dialog}")
    counts = [0] * len(states)
    for dialog in user.dialogs.values():
        counts[_RANK[referenceDialogState(dialog)]] += 1
    if user.counts != counts:
        raise AssertionError(f"{aor}: counts {user.counts}, dialogs add up to {counts}")
    expected = referenceAggregate(user)
    if states[user.aggregate()] is not expected or user.state is not expected:
        raise AssertionError(f"{aor}: state {user.state}, dialogs add up to {expected}")


def checkMachine(machine: TelephonyStateMachine) -> None:
    """
    L{checkUser} for every AoR the machine knows.
    """
    for aor, user in machine._users.items():
        checkUser(aor, user)


def installChecker(machine: TelephonyStateMachine) -> None:
    """
    Make C{machine} check the AoR after every update (every change to
    bindings or dialogs ends in one, whether from an event, a timer or a
    restore), including an AoR it has just dropped as idle.
    """
    update = machine._update

    def checkedUpdate(aor: str, user: User, refresh: bool = False) -> None:
        update(aor, user, refresh)
        checkUser(aor, user)

    machine._update = checkedUpdate  # type: ignore[method-assign]


@implementer(ITelephonyObserver)
class ChainRecorder:
    """
    Checks that each report of an AoR starts where the previous one ended.
    """

    def __init__(self) -> None:
        self.last: dict[str, TelephonyState] = {}
        self.changes: list[StateChange] = []

    def telephonyStateChanged(self, change: StateChange) -> None:
        self.changes.append(change)
        assert change.previous is self.last.get(change.aor, S.OFFLINE), change
        still = change.event in (Event.STILL_ONLINE, Event.STILL_ON_THE_PHONE)
        assert still == (change.previous is change.state), change
        self.last[change.aor] = change.state


aors = st.sampled_from(AORS)
dialogs = st.sampled_from(DIALOGS)
lifetimes = st.sampled_from([None, 30.0, 90.0])
operations = st.one_of(
    st.tuples(st.just("bind"), aors, st.sampled_from(CONTACTS), st.sampled_from([0, 20, 3600])),
    st.tuples(st.just("unbind"), aors, st.sampled_from(CONTACTS)),
    st.tuples(st.just("unbindAll"), aors),
    st.tuples(st.just("early"), aors, dialogs, st.booleans()),
    st.tuples(st.just("confirm"), aors, dialogs, lifetimes),
    st.tuples(st.just("refresh"), aors, dialogs, lifetimes),
    st.tuples(st.just("hold"), aors, dialogs),
    st.tuples(st.just("resume"), aors, dialogs),
    st.tuples(st.just("end"), aors, dialogs),
    st.tuples(st.just("advance"), st.sampled_from([1.0, 25.0, 40.0, 100.0, 200.0])),
    st.tuples(st.just("restart")),
    # A saved dialog, maybe in a shape live events never make (held but
    # not confirmed), restored into the running machine.
    st.tuples(st.just("restore"), aors, dialogs, st.booleans(), st.booleans(),
              st.sampled_from([10.0, 150.0, 5000.0])),
)


class CountsTests(SynchronousTestCase):
    def newMachine(self, clock: Clock) -> TelephonyStateMachine:
        machine = TelephonyStateMachine(
            clock, dialogWatchdog=120, earlyLifetime=60, bindingGrace=5
        )
        installChecker(machine)
        machine.addObserver(self.recorder)
        self.clock, self.machine = clock, machine
        return machine

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(st.lists(operations, max_size=60))
    def test_randomEvents(self, ops: list[tuple[Any, ...]]) -> None:
        """
        Whatever happens, every AoR's counts and state agree with its
        dialogs, and the reports form one chain of states per AoR.
        """
        self.recorder = ChainRecorder()
        self.newMachine(Clock())
        for op in ops:
            self.apply(*op)
            checkMachine(self.machine)
            for aor in AORS:
                user = self.machine._users.get(aor)
                expected = referenceAggregate(user) if user is not None else S.OFFLINE
                self.assertIs(self.machine.stateOf(aor), expected)
        # Everything ends: nothing stays counted once it has. (Clock runs
        # the tombstones of what ended during an advance from its end.)
        self.clock.advance(10000)
        self.clock.advance(TOMBSTONE_LIFETIME)
        self.assertEqual(self.machine._users, {})

    def apply(self, kind: str, *args: Any) -> None:
        machine = self.machine
        if kind == "advance":
            self.clock.advance(args[0])
        elif kind == "restart":
            # A new process: same time, the snapshots restored. Reports
            # start again from offline.
            clock = Clock()
            clock.advance(self.clock.seconds())
            self.recorder.last.clear()
            restarted = self.newMachine(clock)
            for snapshot in machine.snapshots():
                restarted.restore(snapshot)
        elif kind == "restore":
            aor, dialogId, confirmed, held, lifetime = args
            machine.restore(UserSnapshot(aor, (), (DialogSnapshot(
                dialogId, confirmed, held, self.clock.seconds() + lifetime),)))  # fmt: skip
        elif kind == "bind":
            machine.bindingUpdated(*args)
        elif kind == "unbind":
            machine.bindingRemoved(*args)
        elif kind == "unbindAll":
            machine.allBindingsRemoved(*args)
        elif kind == "early":
            machine.dialogEarly(*args)
        elif kind == "confirm":
            machine.dialogConfirmed(*args)
        elif kind == "refresh":
            machine.dialogRefreshed(*args)
        elif kind == "hold":
            machine.dialogHeld(*args)
        elif kind == "resume":
            machine.dialogResumed(*args)
        else:
            assert kind == "end", kind
            machine.dialogTerminated(*args)

    def test_manyDialogs(self) -> None:
        """
        Hundreds of dialogs of one AoR in every shape, changed and ended in
        an order unrelated to the one they came in.
        """
        self.recorder = ChainRecorder()
        machine = self.newMachine(Clock())
        aor = AORS[0]
        machine.bindingUpdated(aor, "c1", 3600)
        ids: list[Hashable] = [("call", i) for i in range(300)]
        for i, dialogId in enumerate(ids):
            machine.dialogEarly(aor, dialogId, outgoing=i % 7 == 0)
        for dialogId in ids[::2]:
            machine.dialogConfirmed(aor, dialogId)
        for dialogId in ids[::4]:
            machine.dialogHeld(aor, dialogId)
        checkMachine(machine)
        for dialogId in ids[::-3]:
            machine.dialogTerminated(aor, dialogId)
        for dialogId in ids[::4]:
            machine.dialogResumed(aor, dialogId)
        checkMachine(machine)
        for dialogId in ids:
            machine.dialogTerminated(aor, dialogId)
        self.assertEqual(machine._users[aor].counts, [0] * len(TelephonyState))
        self.assertIs(machine.stateOf(aor), S.ONLINE)


class CheckerTests(SynchronousTestCase):
    """
    The checker finds counts that disagree with the dialogs, so the tests
    that rely on it can fail.
    """

    def setUp(self) -> None:
        self.machine = TelephonyStateMachine(Clock())
        installChecker(self.machine)
        self.machine.dialogConfirmed(AORS[0], "d1")
        self.user = self.machine._users[AORS[0]]

    def test_consistent(self) -> None:
        checkMachine(self.machine)

    def test_wrongCount(self) -> None:
        self.user.counts[_RANK[S.RINGING]] += 1
        self.assertRaises(AssertionError, checkMachine, self.machine)

    def test_fieldChangedBehindTheCounts(self) -> None:
        """
        A dialog changed without L{User.changeDialog} is found, at the next
        update at the latest.
        """
        self.user.dialogs["d1"].held = True
        self.assertRaises(AssertionError, checkMachine, self.machine)
        self.assertRaises(AssertionError, self.machine.dialogRefreshed, AORS[0], "d1")

    def test_dialogAddedBehindTheCounts(self) -> None:
        self.user.dialogs["d2"] = Dialog(confirmed=True)
        self.assertRaises(AssertionError, self.machine.dialogTerminated, AORS[0], "d1")
