"""
The store's seams, one interface per concern:

  - L{IAccountStore}: provisioning (the admin command); the same object
    also provides L{sipxmpp.xmpp.accounts.IAccountDirectory}, the lookup
    the publisher uses;
  - L{IRuntimeStateStore}: bindings, dialogs, saved client statuses,
    XMPP session states and the SIP routes back to the phones of one
    gateway, for restarts and operators.

The publisher's own seam, L{sipxmpp.xmpp.savedstatuses.ISavedStatuses}, is
provided by the persister (L{sipxmpp.store.persister}).

Every method returns a L{Deferred}; none blocks the reactor. Addresses are
validated and normalised (L{sipxmpp.store.addresses}); bad ones fail with
L{sipxmpp.store.addresses.InvalidAddress}.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Interface

from sipxmpp.store.records import AccountRecord, AoRChanges, RouteRecord, UserReport
from sipxmpp.telephony.snapshots import UserSnapshot
from sipxmpp.xmpp.accounts import Account
from sipxmpp.xmpp.savedstatuses import SavedStatus


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

    def addAccounts(
        entries: Sequence[tuple[AccountRecord, str]], dryRun: bool = False,
    ) -> Deferred[list[AccountRecord]]:
        """
        Provision every C{(record, password)} of C{entries} in one
        transaction (bulk import): all of them, or none. Fire with the
        stored records, in order.

        @raise sipxmpp.store.accounts.AccountsRejected: (in the Deferred)
            listing every entry refused, by index, with its reason: a
            malformed address, mode, text or password, an AoR or JID given
            twice, or already provisioned. Nothing is stored then.

        @param dryRun: check everything (against the store too), store
            nothing.
        """

    def getAccount(aor: str) -> Deferred[AccountRecord]:
        """
        @raise AccountNotFound: (in the Deferred) if not provisioned.
        """

    def listAccounts() -> Deferred[list[AccountRecord]]:
        """
        Every account, ordered by AoR.
        """

    def enabledAoRs() -> Deferred[frozenset[str]]:
        """
        The AoRs of every enabled account (cheap: no secret is read).
        """

    def removeAccount(aor: str) -> Deferred[None]:
        """
        @raise AccountNotFound: (in the Deferred) if not provisioned.
        """

    def setEnabled(aor: str, enabled: bool) -> Deferred[AccountRecord]:
        """
        Enable or disable an account (a disabled one is not looked up).
        """

    def setBackpublish(aor: str, backpublish: bool) -> Deferred[AccountRecord]:
        """
        Let the user's XMPP presence go back to SIP (C{[backpublish]}), or
        opt the user out.
        """

    def setServer(aor: str, server: str | None) -> Deferred[AccountRecord]:
        """
        Give the account its own XMPP server (C{HOST:PORT},
        C{tls:HOST:PORT} or C{srv}), or L{None}: C{[xmpp] server}.
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

    def write(changes: Sequence[AoRChanges], now: float,
              routes: Sequence[RouteRecord] = ()) -> Deferred[None]:
        """
        Replace, in one transaction, what is saved for each AoR by what
        C{changes} says (parts that are L{None} are left alone), save or
        delete (C{binding} L{None}) each of C{routes}, and delete what
        expired by C{now}.
        """

    def loadRoutes(now: float) -> Deferred[list[RouteRecord]]:
        """
        The owner's SIP routes back to the phones not expired at C{now}.
        """

    def loadSnapshots(now: float) -> Deferred[list[UserSnapshot]]:
        """
        The owner's bindings and dialogs not expired at C{now}, per AoR.
        """

    def loadSavedStatuses() -> Deferred[list[SavedStatus]]:
        """
        The owner's saved client statuses.
        """

    def claim(aor: str) -> Deferred[list[SavedStatus]]:
        """
        Take C{aor} over from the other gateways sharing the store, in one
        transaction: move the client statuses they saved for it to the
        owner (where the owner saved one for the same client itself, its
        own is kept), and delete their bindings, dialogs and session state
        of C{aor}. Rows belong to whoever claimed them last. Their
        activities to retract of C{aor} are dropped in any case (the owner
        serves the user now). Fire with the statuses moved, by resource
        (empty, and nothing else changed, when no other gateway saved a
        status for C{aor}: claiming twice is harmless).
        """

    def loadPendingActivities() -> Deferred[list[str]]:
        """
        The owner's AoRs whose XEP-0108 activity may still show a call.
        """

    def report(now: float) -> Deferred[list[UserReport]]:
        """
        What every gateway sharing the store saved, per owner and AoR, not
        expired at C{now} (for operators).
        """
