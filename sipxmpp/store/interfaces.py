"""
The store's seams, one interface per concern:

  - L{IAccountStore}: provisioning (the admin command); the same object
    also provides L{sipxmpp.xmpp.accounts.IAccountDirectory}, the lookup
    the publisher uses;
  - L{IRuntimeStateStore}: bindings, dialogs, saved client statuses and
    XMPP session states of one gateway, for restarts and operators;
  - L{ISavedStatuses}: what the publisher calls to keep its saved client
    statuses and session state across restarts (coalesced writes).

Every method returns a L{Deferred}; none blocks the reactor. Addresses are
validated and normalised (L{sipxmpp.store.addresses}); bad ones fail with
L{sipxmpp.store.addresses.InvalidAddress}.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Interface

from sipxmpp.store.records import AccountRecord, AoRChanges, SavedStatus, UserReport
from sipxmpp.telephony.state import UserSnapshot
from sipxmpp.xmpp.accounts import Account


class IAccountStore(Interface):
    """
    Provisioned accounts: SIP AoR -> XMPP account, secret encrypted at rest.
    """

    def addAccount(record: AccountRecord, password: str) -> Deferred[AccountRecord]:
        """
        Provision C{record.aor} with C{password}; fire with the stored
        record (normalised addresses, times set).

        @raise AccountExists: (in the Deferred) if the AoR, or the JID, is
            already provisioned.
        """

    def getAccount(aor: str) -> Deferred[AccountRecord]:
        """
        @raise AccountNotFound: (in the Deferred) if not provisioned.
        """

    def listAccounts() -> Deferred[list[AccountRecord]]:
        """
        Every account, ordered by AoR.
        """

    def removeAccount(aor: str) -> Deferred[None]:
        """
        @raise AccountNotFound: (in the Deferred) if not provisioned.
        """

    def setEnabled(aor: str, enabled: bool) -> Deferred[AccountRecord]:
        """
        Enable or disable an account (a disabled one is not looked up).
        """

    def setPassword(aor: str, password: str) -> Deferred[None]:
        """
        Replace the secret of an account.
        """

    def credentials(aor: str) -> Deferred[Account]:
        """
        Return the account with its decrypted secret, enabled or not (for
        C{account check}).

        @raise AccountNotFound: (in the Deferred) if not provisioned.
        """


class IRuntimeStateStore(Interface):
    """
    What one gateway (the I{owner}) knows at run time, saved so that a
    restart does not forget who is registered or on the phone.
    """

    owner: str

    def write(changes: Sequence[AoRChanges], now: float) -> Deferred[None]:
        """
        Replace, in one transaction, what is saved for each AoR by what
        C{changes} says (parts that are L{None} are left alone), and delete
        what expired by C{now}.
        """

    def loadSnapshots(now: float) -> Deferred[list[UserSnapshot]]:
        """
        The owner's bindings and dialogs not expired at C{now}, per AoR.
        """

    def loadSavedStatuses() -> Deferred[list[SavedStatus]]:
        """
        The owner's saved client statuses.
        """

    def report(now: float) -> Deferred[list[UserReport]]:
        """
        What every gateway sharing the store saved, per owner and AoR, not
        expired at C{now} (for operators).
        """


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
