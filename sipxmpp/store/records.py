"""
The plain values the store reads and writes (no secrets in any of them:
a decrypted secret only ever travels in L{sipxmpp.xmpp.accounts.Account},
whose C{repr()} leaves it out).
"""

from __future__ import annotations

from dataclasses import dataclass

from sipxmpp.sip.core.registrations import Binding, ContactKey
from sipxmpp.telephony.snapshots import UserSnapshot
from sipxmpp.xmpp.savedstatuses import SavedStatus


@dataclass(frozen=True)
class AccountRecord:
    """
    A provisioned account as the admin command shows it: everything but
    the secret.

    @ivar aor: the normalised AoR.
    @ivar jid: the bare JID.
    @ivar mode: C{"remote-control"}, C{"resource"}, or L{None} for
        C{[xmpp] mode}.
    @ivar statusText: the text during a call, or L{None} for the default.
    @ivar ringingText: the text while ringing, or L{None}.
    @ivar holdText: the text while on hold, or L{None}.
    @ivar enabled: whether the gateway logs in for this user.
    @ivar createdAt: POSIX time of provisioning.
    @ivar updatedAt: POSIX time of the last change.
    @ivar backpublish: whether the user's XMPP presence may go back to SIP
        (C{[backpublish]}); L{False}: the user opted out.
    @ivar server: the account's own XMPP server (C{HOST:PORT},
        C{tls:HOST:PORT} or C{srv}), or L{None} for C{[xmpp] server}.
    """

    aor: str
    jid: str
    mode: str | None = None
    statusText: str | None = None
    ringingText: str | None = None
    holdText: str | None = None
    enabled: bool = True
    createdAt: float = 0.0
    updatedAt: float = 0.0
    backpublish: bool = True
    server: str | None = None


@dataclass(frozen=True)
class SessionRecord:
    """
    The state of the gateway's XMPP session for a user, for operators.

    @ivar state: e.g. C{"online"}, C{"connecting"}, C{"failed"}.
    @ivar detail: a one-line explanation (the failure, the mode in use).
    """

    aor: str
    state: str
    detail: str
    updatedAt: float


@dataclass(frozen=True)
class AoRChanges:
    """
    What changed for one AoR since the last write. L{None} means unchanged.

    @ivar snapshot: the AoR's bindings and dialogs now (empty: none left).
    @ivar statuses: every saved status of the AoR now (empty: none left).
    @ivar session: the AoR's XMPP session state now.
    @ivar activity: whether the AoR's XEP-0108 activity may show a call at
        its server now (L{True}: published; L{False}: its retraction was
        acknowledged).
    """

    aor: str
    snapshot: UserSnapshot | None = None
    statuses: tuple[SavedStatus, ...] | None = None
    session: SessionRecord | None = None
    activity: bool | None = None


@dataclass(frozen=True)
class UserReport:
    """
    Everything the runtime state tables say about one user of one gateway
    (for C{sipxmpp-admin state}).
    """

    owner: str
    aor: str
    snapshot: UserSnapshot
    statuses: tuple[SavedStatus, ...]
    session: SessionRecord | None


# The kinds of SIP routes back to the phones (the proxy's PhoneRoutes).
REGISTRATION = "registration"
DIALOG_TARGET = "dialog"
ROUTE_KINDS = (REGISTRATION, DIALOG_TARGET)


@dataclass(frozen=True)
class RouteRecord:
    """
    One route back to a phone, as saved: a binding the registrar granted
    (C{kind} L{REGISTRATION}) or a phone's dialog contact
    (L{DIALOG_TARGET}), under its contact key.

    @ivar binding: the route; L{None} in a write means it is gone.
    """

    kind: str
    key: ContactKey
    binding: Binding | None
