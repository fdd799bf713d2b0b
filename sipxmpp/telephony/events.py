"""
The plain interface between the telephony state and its consumers.

The state machine (L{sipxmpp.telephony.state}) aggregates what the SIP
observer saw, and what publications (SIP PUBLISH, NOTIFY) reported as
L{DialogReport}s, into one L{TelephonyState} per user (AoR) and reports each
transition and refresh as a L{StateChange} to every L{ITelephonyObserver},
such as the XMPP publisher. Nothing here knows about SIP or XMPP.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass

from zope.interface import Interface


class TelephonyState(enum.Enum):
    """
    A user's aggregated telephony state, in rising order of precedence when
    several devices or dialogs disagree (a call beats ringing beats idle).
    """

    OFFLINE = "offline"
    ONLINE = "online"
    RINGING = "ringing"
    ON_HOLD = "on-hold"
    ON_THE_PHONE = "on-the-phone"


class Event(enum.Enum):
    """
    What a L{StateChange} reports: the source paper's events (online, still
    online, on the phone, still on the phone, offline) plus ringing, held and
    resumed transitions.
    """

    ONLINE = "online"
    STILL_ONLINE = "still-online"
    RINGING = "ringing"
    ON_THE_PHONE = "on-the-phone"
    STILL_ON_THE_PHONE = "still-on-the-phone"
    HELD = "held"
    RESUMED = "resumed"
    OFFLINE = "offline"


@dataclass(frozen=True)
class StateChange:
    """
    One report about one user.

    @ivar aor: the normalised address of record, e.g. C{sip:alice@example.test}.
    @ivar event: what happened.
    @ivar state: the user's state after it.
    @ivar previous: the state before it (equal to C{state} for refreshes).
    @ivar at: the clock's time, in seconds.
    """

    aor: str
    event: Event
    state: TelephonyState
    previous: TelephonyState
    at: float


class DialogPhase(enum.Enum):
    """
    Where a dialog a publication reports stands: ringing (trying,
    proceeding or early), answered, answered and held, or over.
    """

    EARLY = "early"
    CONFIRMED = "confirmed"
    HELD = "held"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogReport:
    """
    One dialog as a publication (an RFC 4235 dialog-info document) reports it.

    @ivar dialogId: what identifies the dialog across the reports of one
        user, whichever publication carries them (for dialog-info: its
        C{call-id} and C{id}, never its tags, which some publishers send
        only while the dialog is early).
    @ivar phase: the dialog's state.
    @ivar outgoing: the user placed the call (dialog-info direction
        C{initiator}); an unanswered outgoing call shows as on the phone,
        not ringing.
    """

    dialogId: Hashable
    phase: DialogPhase
    outgoing: bool = False


class ITelephonyObserver(Interface):
    """
    Receives the telephony state of users. Implementations must return
    quickly and never raise: they are called on the SIP path.
    """

    def telephonyStateChanged(change: StateChange) -> None:
        """
        C{change.aor} had a transition or a refresh.
        """


class IPublicationListener(Interface):
    """
    Told that a publication (a PUBLISH, or a NOTIFY of a subscription)
    about a user was accepted, before the state machine applies it: for
    work that depends on who publishes for whom, not on the state (such as
    taking a user over from another instance sharing the store).
    Implementations must return quickly and never raise: they are called on
    the SIP path.
    """

    def publicationArrived(aor: str) -> None:
        """
        A publication of C{aor} was created or modified.
        """
