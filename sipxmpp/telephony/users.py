"""
What the telephony state machine keeps per AoR: its registered contacts,
its dialogs (observed, or reported by a publication), its publications,
and the rank of the state they add up to. Internal to
L{sipxmpp.telephony.state}; the ranks are L{TelephonyState}'s members in
rising precedence.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from twisted.internet.interfaces import IDelayedCall

from sipxmpp.telephony.events import TelephonyState

# TelephonyState members in rising precedence (their definition order). The
# per-event path works on these indexes: comparing ints is much cheaper than
# hashing enum members.
STATES: tuple[TelephonyState, ...] = tuple(TelephonyState)
OFFLINE = STATES.index(TelephonyState.OFFLINE)
ONLINE = STATES.index(TelephonyState.ONLINE)
RINGING = STATES.index(TelephonyState.RINGING)
ON_HOLD = STATES.index(TelephonyState.ON_HOLD)
ON_THE_PHONE = STATES.index(TelephonyState.ON_THE_PHONE)


def dialogRank(confirmed: bool, held: bool, outgoing: bool) -> int:
    """
    The rank of the state one dialog shows on its own.
    """
    if confirmed:
        return ON_HOLD if held else ON_THE_PHONE
    return ON_THE_PHONE if outgoing else RINGING


@dataclass(slots=True)
class Dialog:
    # Change confirmed and held only through User.changeDialog, which
    # keeps rank and the user's counts in step.
    confirmed: bool = False
    held: bool = False
    # An unanswered call the user placed: they are busy dialling, which is
    # shown as on the phone, not as their phone ringing. (Not persisted:
    # after a restart an unanswered call shows as ringing until answered.)
    outgoing: bool = False
    timer: IDelayedCall | None = None
    # Answered, waiting for the ACK: the lifetime it gets once ACKed.
    afterAck: float | None = None
    # The publication that reported it last (None: observed by the proxy).
    # A published dialog lives as long as that publication; an early one
    # has a timer for its early lifetime too.
    publication: Hashable | None = None
    rank: int = field(init=False)

    def __post_init__(self) -> None:
        self.rank = dialogRank(self.confirmed, self.held, self.outgoing)


@dataclass(frozen=True, slots=True)
class Published:
    """
    The key of a dialog a publication reported: never equal to the key of a
    dialog the proxy observed.
    """

    dialogId: Hashable


@dataclass(frozen=True, slots=True)
class Busy:
    """
    The key of the dialog that stands for a publication saying the user is
    on the phone without naming a call (RPID C{on-the-phone}).
    """

    publication: Hashable


@dataclass(slots=True)
class Publication:
    """
    One publication of an AoR: when it expires, the keys of the dialogs it
    owns in L{User.dialogs}, and its tag (L{None}: not saved).
    """

    timer: IDelayedCall
    dialogs: set[Hashable] = field(default_factory=set)
    tag: str | None = None


@dataclass
class User:
    """
    One AoR. C{dialogs} is changed only through L{addDialog},
    L{changeDialog} and L{removeDialog}: they keep C{counts} (how many
    dialogs show each rank), so that L{aggregate} costs the same however
    many dialogs the AoR has.
    """

    bindings: dict[Hashable, IDelayedCall] = field(default_factory=dict)
    dialogs: dict[Hashable, Dialog] = field(default_factory=dict)
    tombstones: dict[Hashable, IDelayedCall] = field(default_factory=dict)
    publications: dict[Hashable, Publication] = field(default_factory=dict)
    rank: int = OFFLINE
    counts: list[int] = field(default_factory=lambda: [0] * len(STATES))

    @property
    def state(self) -> TelephonyState:
        return STATES[self.rank]

    def addDialog(self, dialogId: Hashable, dialog: Dialog) -> None:
        self.dialogs[dialogId] = dialog
        self.counts[dialog.rank] += 1

    def changeDialog(self, dialog: Dialog, confirmed: bool, held: bool) -> None:
        counts = self.counts
        counts[dialog.rank] -= 1
        dialog.confirmed = confirmed
        dialog.held = held
        dialog.rank = dialogRank(confirmed, held, dialog.outgoing)
        counts[dialog.rank] += 1

    def removeDialog(self, dialogId: Hashable) -> Dialog:
        dialog = self.dialogs.pop(dialogId)
        self.counts[dialog.rank] -= 1
        return dialog

    def aggregate(self) -> int:
        """
        The rank of the state all devices and dialogs add up to: an active
        call beats a held one, which beats ringing, which beats being
        registered.
        """
        counts = self.counts
        if counts[ON_THE_PHONE]:
            return ON_THE_PHONE
        if counts[ON_HOLD]:
            return ON_HOLD
        if counts[RINGING]:
            return RINGING
        return ONLINE if self.bindings else OFFLINE

    def idle(self) -> bool:
        return not (self.bindings or self.dialogs or self.tombstones or self.publications)
