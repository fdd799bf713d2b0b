"""
What the telephony state machine knows about one AoR, as values: saved by
the store and given back to L{sipxmpp.telephony.state.TelephonyStateMachine.restore}
after a restart.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from sipxmpp.telephony.events import DialogReport


@dataclass(frozen=True)
class BindingSnapshot:
    """
    A registered contact.

    @ivar contact: the contact's key, as given to C{bindingUpdated}.
    @ivar expiresAt: the clock time the registrar's binding ends (without
        the machine's grace period).
    """

    contact: Hashable
    expiresAt: float


@dataclass(frozen=True)
class DialogSnapshot:
    """
    A dialog: ringing (early) or answered (confirmed), maybe held.

    @ivar dialogId: the dialog's key, as given to C{dialogEarly} and others.
    @ivar expiresAt: the clock time its lifetime ends (early lifetime,
        Session-Expires or watchdog).
    """

    dialogId: Hashable
    confirmed: bool
    held: bool
    expiresAt: float


@dataclass(frozen=True)
class PublicationSnapshot:
    """
    A publication with a tag (see the module docstring).

    @ivar publication: its key, as given to C{publicationSet}.
    @ivar tag: what its source calls it now (an RFC 3903 entity-tag).
    @ivar expiresAt: the clock time it expires unless refreshed.
    @ivar dialogs: the dialogs it owns, as reports (never terminated).
    @ivar busy: it says the user is on the phone without naming a dialog.
    """

    publication: Hashable
    tag: str
    expiresAt: float
    dialogs: tuple[DialogReport, ...] = ()
    busy: bool = False


@dataclass(frozen=True)
class UserSnapshot:
    """
    What the state machine knows about one AoR's devices and calls; empty
    when it knows nothing (the AoR is offline and idle).
    """

    aor: str
    bindings: tuple[BindingSnapshot, ...] = ()
    dialogs: tuple[DialogSnapshot, ...] = ()
    publications: tuple[PublicationSnapshot, ...] = ()

    def isEmpty(self) -> bool:
        """
        Tell whether the snapshot holds no bindings, dialogs or publications.
        """
        return not (self.bindings or self.dialogs or self.publications)
