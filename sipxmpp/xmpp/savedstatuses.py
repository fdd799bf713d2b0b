"""
The statuses the publisher saved from the user's own clients, and the seam
through which it keeps them (and its session states) across restarts.

The publisher owns this interface; the store's persister provides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zope.interface import Interface


@dataclass(frozen=True)
class SavedStatus:
    """
    The status one of the user's own clients had before the publisher set
    it to dnd by remote control, to be put back after the call; the fields
    of L{sipxmpp.xmpp.remote.RemoteStatus} plus who and when.

    @ivar aor: the user.
    @ivar resource: the client's full JID.
    @ivar status: the XEP-0146 value (C{online}, C{away}, C{dnd}, ...).
    @ivar priority: its priority, or L{None} when its form had none.
    @ivar message: its status message (empty for none).
    @ivar savedAt: POSIX time it was saved.
    """

    aor: str
    resource: str
    status: str
    priority: int | None
    message: str
    savedAt: float


class ISavedStatuses(Interface):
    """
    The publisher's saved client statuses and session states, kept across
    restarts.
    """

    def savedStatuses(aor: str) -> tuple[SavedStatus, ...]:
        """
        The statuses saved for C{aor}'s clients and not yet put back (after
        a restart: those saved before it).
        """

    def aorsWithSavedStatuses() -> list[str]:
        """
        The AoRs that have saved statuses, so the publisher can put them
        back after a restart once their calls are gone.
        """

    def setSavedStatuses(aor: str, statuses: Sequence[SavedStatus]) -> None:
        """
        C{statuses} are now all that is saved for C{aor} (empty once every
        client got its status back). Written soon, coalesced per AoR.
        """

    def sessionStateChanged(aor: str, state: str, detail: str = "") -> None:
        """
        The gateway's XMPP session for C{aor} is now in C{state} (for the
        admin command's C{state}). Written soon, coalesced per AoR.
        """

    def setActivityPending(aor: str, pending: bool) -> None:
        """
        C{aor}'s XEP-0108 activity may show a call at its server from now on
        (C{pending}: it was published), or not (its retraction was
        acknowledged). Written soon, coalesced per AoR.
        """

    def aorsWithPendingActivity() -> list[str]:
        """
        The AoRs whose activity may still show a call (after a restart: as
        saved before it), so the publisher can retract it.
        """
