"""
Who the publisher logs in as: the seam between the publisher and the store.

The publisher knows users by their SIP address of record; the store maps
each provisioned AoR to an XMPP account. L{IAccountDirectory} is all the
publisher needs from the store, so the SQLite and PostgreSQL backends only
implement L{IAccountDirectory.lookup}. L{MemoryAccountDirectory} is the
in-memory implementation for tests and small set-ups.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed
from twisted.words.protocols.jabber.jid import JID
from zope.interface import Interface, implementer

MODES = ("remote-control", "resource")


@dataclass(frozen=True)
class Account:
    """
    One provisioned user.

    @ivar aor: the normalised SIP address of record, e.g.
        C{sip:alice@example.test}.
    @ivar jid: the user's bare JID.
    @ivar password: the XMPP secret; left out of C{repr()} so that logging
        an account never shows it.
    @ivar mode: C{"remote-control"} or C{"resource"} for this user, or
        L{None} for C{[xmpp] mode}.
    @ivar statusText: the text during a call, or L{None} for the default.
    @ivar ringingText: the text while ringing, or L{None} for the default.
    @ivar holdText: the text while on hold, or L{None} for the default.
    @ivar backpublish: whether the user's XMPP presence may go back to SIP
        (C{[backpublish]}); L{False}: the user opted out.
    @ivar server: where this user's session connects (C{HOST:PORT},
        C{tls:HOST:PORT}, or C{srv}: DNS SRV of the JID's domain), or
        L{None} for C{[xmpp] server}: a user on a foreign XMPP server.
    """

    aor: str
    jid: JID
    password: str = field(repr=False)
    mode: str | None = None
    statusText: str | None = None
    ringingText: str | None = None
    holdText: str | None = None
    backpublish: bool = True
    server: str | None = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} or None, not {self.mode!r}")
        if self.jid.user is None or self.jid.resource is not None:
            raise ValueError(f"expected a bare JID user@domain, not {self.jid.full()!r}")


class IAccountDirectory(Interface):
    """
    Looks up the XMPP account of a SIP user.
    """

    def lookup(aor: str) -> Deferred[Account | None]:
        """
        Return the account provisioned for C{aor}, or L{None} when the user
        is not provisioned.  Fails only when the store itself fails.
        """


@implementer(IAccountDirectory)
class MemoryAccountDirectory:
    """
    Accounts kept in a dictionary.
    """

    def __init__(self, accounts: list[Account] | None = None) -> None:
        self._accounts: dict[str, Account] = {}
        for account in accounts or ():
            self.add(account)

    def add(self, account: Account) -> None:
        """
        Provision C{account} (replacing any account of the same AoR).
        """
        self._accounts[account.aor] = account

    def remove(self, aor: str) -> None:
        """
        Forget the account of C{aor}.
        """
        self._accounts.pop(aor, None)

    def lookup(self, aor: str) -> Deferred[Account | None]:
        return succeed(self._accounts.get(aor))
