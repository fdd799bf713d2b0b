"""
The users' XMPP presence for back-publishing (issue 18): the XMPP side of
the seam L{sipxmpp.sip.core.presence.IPresenceSource}.

Each provisioned user with a session (L{sipxmpp.xmpp.publisher.Publisher})
is seen through it: the user's other resources (the session's
L{ResourceTracker}) and the gateway's own resource, combined by
L{sipxmpp.sip.core.presence.combine}. What decides carries C{fromSIP} when
SIP caused it: the gateway's own dnd during a call, or a client the gateway
currently has at dnd by remote control (L{ShownOnClient}, unless the user
changed it since).

Watchers are authorised from the user's roster as the gateway's session
sees it (L{RosterWatch}: one roster get per stream, then roster pushes): a
watcher whose AoR is provisioned with a JID that has a subscription to the
user's presence (C{both} or C{from}), or on the operator's allow-list (an
AoR, or every AoR of a domain: C{[backpublish] allowed_watchers}), is
C{active}; while the user's roster is not known (no session since the
gateway started) it is C{pending}; otherwise C{rejected}. The last known
roster is kept after the user's session ends. Authorisation is asked on
the SIP path, so the watchers' JIDs are kept in memory (L{aorsChanged},
fed by the provisioned AoRs); a watcher not among them (it may have been
provisioned since they were last read) is looked up and C{pending} until
the answer, then C{rejected} if it is not provisioned; whatever may change an answer is told to
the authorisation listeners (the presence agent's C{reauthorise}).

A user may opt out (the account's C{backpublish}, set by the admin
command; L{accountChanged} follows it live): every watcher is then
C{rejected}, and the source knows no presence for the user, so the PUBLISH
client removes the publication.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish
from zope.interface import implementer

from sipxmpp.sip.core.presence import (
    IPresenceSource,
    PresenceListener,
    ResourcePresence,
    UserPresence,
    combine,
)
from sipxmpp.sip.core.presenceagent import Authorisation
from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.uri import SIPURI, parseURI
from sipxmpp.xmpp.accounts import Account, IAccountDirectory
from sipxmpp.xmpp.callpresence import ShownOnClient
from sipxmpp.xmpp.publisher import Publisher, UserPublisher
from sipxmpp.xmpp.session import IXMPPSession
from sipxmpp.xmpp.wokkelcompat import subprotocols

__all__ = ["RosterWatch", "XMPPPresenceSource", "presenceOfUser"]

NS_ROSTER = "jabber:iq:roster"
ROSTER_PUSH = f"/iq[@type='set']/query[@xmlns='{NS_ROSTER}']"
#: The subscription states in which the contact receives the user's presence.
SUBSCRIBED = frozenset({"both", "from"})
#: How many watchers found not provisioned are remembered (then forgotten
#: at once): a bound on memory against SUBSCRIBEs with made-up From AoRs.
MAX_UNKNOWN = 10_000


def presenceOfUser(user: UserPublisher) -> UserPresence | None:
    """
    The presence of C{user} as its session sees it, or L{None} while no
    stream is up (nothing known).
    """
    own = user.ownPresence
    if own is None:
        return None
    shown = user.shown
    resources = []
    for r in user.tracker.available():
        fromSIP = (isinstance(shown, ShownOnClient) and shown.target.resource == r.resource
                   and r.show == "dnd" and not shown.overridden)  # fmt: skip
        resources.append(
            ResourcePresence(r.priority, UserPresence(r.show, r.status or "", fromSIP))
        )
    text, priority = own
    mine = UserPresence("dnd", text, True) if text is not None else UserPresence()
    # Last: among equal priorities the user's clients decide.
    resources.append(ResourcePresence(priority, mine))
    return combine(resources)


def _domainOf(aor: str) -> str | None:
    """
    The host of a watcher's AoR (C{sip:bob@example.test}), if it has one.
    """
    try:
        uri = parseURI(aor)
    except SIPParseError:
        return None
    return uri.host.lower() if isinstance(uri, SIPURI) and uri.user is not None else None


class RosterWatch(subprotocols.XMPPHandler):  # type: ignore[misc]
    """
    The user's roster on one session: fetched once per stream, kept up to
    date with roster pushes (RFC 6121 §2.1.6).

    @ivar items: bare JID -> subscription, or L{None} while not known;
        kept when the stream goes (the last known roster beats none).
    """

    log = Logger()

    def __init__(self, session: IXMPPSession, onChanged: Callable[[], object],
                 items: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.session = session
        self.onChanged = onChanged
        self.items = items

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver(ROSTER_PUSH, self._onPush)
        iq = domish.Element((None, "iq"))
        iq["type"] = "get"
        iq.addElement((NS_ROSTER, "query"))
        d = self.session.sendRequest(iq)
        d.addCallbacks(self._loaded, self._failed)

    def _loaded(self, result: domish.Element) -> None:
        items: dict[str, str] = {}
        for query in result.elements(NS_ROSTER, "query"):
            for item in query.elements(NS_ROSTER, "item"):
                self._apply(items, item)
        self.items = items
        self.onChanged()

    def _failed(self, reason: Failure) -> None:
        self.log.warn("{jid}: roster get failed: {e}", jid=self.session.jid.userhost(),
                      e=reason.getErrorMessage())  # fmt: skip

    @staticmethod
    def _apply(items: dict[str, str], item: domish.Element) -> None:
        try:
            jid = JID(item.getAttribute("jid") or "").userhost()
        except InvalidFormat:
            return
        subscription = item.getAttribute("subscription") or "none"
        if subscription == "remove":
            items.pop(jid, None)
        else:
            items[jid] = subscription

    def _onPush(self, iq: domish.Element) -> None:
        own = self.session.jid
        sender = iq.getAttribute("from")
        if sender and sender not in (own.userhost(), own.full()):
            return  # not from our server: ignored (RFC 6121 §2.1.6)
        iq.handled = True  # type: ignore[attr-defined]
        self.send(xmlstream.toResponse(iq, "result"))
        if self.items is None:
            return  # the roster get's answer comes after and has it
        for query in iq.elements(NS_ROSTER, "query"):
            for item in query.elements(NS_ROSTER, "item"):
                self._apply(self.items, item)
        self.onChanged()

    def subscribed(self, jid: str) -> bool | None:
        """
        Does C{jid} (bare) receive the user's presence? L{None} while the
        roster is not known.
        """
        if self.items is None:
            return None
        return self.items.get(jid) in SUBSCRIBED


class _User:
    def __init__(self, user: UserPublisher, roster: RosterWatch) -> None:
        self.user = user
        self.roster = roster
        self.last: UserPresence | None = None


@implementer(IPresenceSource)
class XMPPPresenceSource:
    """
    Every logged-in user's XMPP presence, and the authorisation of their
    SIP watchers; see the module docstring.
    """

    log = Logger()

    def __init__(self, publisher: Publisher, accounts: IAccountDirectory | None = None,
                 allow: Iterable[str] = ()) -> None:  # fmt: skip
        """
        @param accounts: where watchers' JIDs are looked up (L{aorsChanged}).
        @param allow: what every user's presence is shown to: watcher AoRs
            in normal form (C{sip:bob@example.test}), or domains
            (C{example.test}: every watcher AoR of that host).
        """
        self.accounts = accounts
        self.allow = frozenset(allow)
        # Users who opted out of back-publishing.
        self._optedOut: set[str] = set()
        self._users: dict[str, _User] = {}
        # Each user's roster as last known, also after the session ended.
        self._rosters: dict[str, RosterWatch] = {}
        self._jids: dict[str, str] = {}
        # Watchers being looked up, and those found not provisioned (until
        # the provisioned AoRs next grow; bounded against random Froms).
        self._lookingUp: set[str] = set()
        self._unknown: set[str] = set()
        self._listeners: list[PresenceListener] = []
        self._authorisationListeners: list[Callable[[str | None], object]] = []
        publisher.addUserListener(self._userChanged)

    # -- IPresenceSource ---------------------------------------------------

    def presenceOf(self, aor: str) -> UserPresence | None:
        if aor in self._optedOut:
            return None
        watched = self._users.get(aor)
        return watched.last if watched is not None else None

    def addListener(self, listener: PresenceListener) -> None:
        self._listeners.append(listener)

    # -- authorisation -----------------------------------------------------

    def addAuthorisationListener(self, listener: Callable[[str | None], object]) -> None:
        """
        Call C{listener(aor)} when the authorisations of C{aor}'s watchers
        may have changed (L{None}: of any user's).
        """
        self._authorisationListeners.append(listener)

    def authorise(self, watcher: str, aor: str) -> Authorisation:
        """
        May C{watcher} (an AoR) see the presence of C{aor}?
        """
        if aor in self._optedOut:
            return "rejected"
        if watcher in self.allow or _domainOf(watcher) in self.allow:
            return "active"
        roster = self._rosters.get(aor)
        if roster is None:
            return "pending"
        jid = self._jids.get(watcher)
        if jid is None and self._lookUp(watcher):
            jid = self._jids.get(watcher)  # a directory may answer at once
            if jid is None:
                return "pending"
        subscribed = roster.subscribed(jid) if jid is not None else False
        if subscribed is None:
            return "pending"
        return "active" if subscribed else "rejected"

    def _lookUp(self, watcher: str) -> bool:
        """
        Look up a watcher whose JID is not known: it may have been
        provisioned since the provisioned AoRs were last read, and a 403
        would stop its phone from asking again. C{True} while the answer
        may still make it known (then it is pending, not rejected).
        """
        if self.accounts is None or watcher in self._unknown:
            return False
        if watcher not in self._lookingUp:
            self._lookingUp.add(watcher)
            self.accounts.lookup(watcher).addCallbacks(
                lambda account: self._looked(watcher, account),
                lambda f: self._lookupFailed(watcher, f),
            )
        # A directory in memory has answered already.
        return watcher in self._lookingUp or watcher in self._jids

    def _looked(self, watcher: str, account: Account | None) -> None:
        self._lookingUp.discard(watcher)
        if account is None:
            if len(self._unknown) >= MAX_UNKNOWN:
                self._unknown.clear()
            self._unknown.add(watcher)
            self._reauthorise(None)  # its pending subscriptions are rejected
        else:
            self._learned(account)

    def _lookupFailed(self, watcher: str, reason: Failure) -> None:
        # Pending stays pending: the next SUBSCRIBE or refresh asks again.
        self._lookingUp.discard(watcher)
        self.log.warn("{aor}: account lookup failed: {e}", aor=watcher,
                      e=reason.getErrorMessage())  # fmt: skip

    def aorsChanged(self, added: Iterable[str], removed: Iterable[str]) -> None:
        """
        The provisioned AoRs changed (L{ProvisionedAoRs.addListener}): look
        up the JIDs of the ones added, forget the ones removed.
        """
        added = list(added)
        self._unknown.difference_update(added)
        removed = list(removed)
        for aor in removed:
            self._rosters.pop(aor, None)
            self._optedOut.discard(aor)
        gone = [aor for aor in removed if self._jids.pop(aor, None) is not None]
        if self.accounts is not None:
            for aor in added:
                self.accounts.lookup(aor).addCallbacks(
                    self._learned,
                    lambda f, aor=aor: self.log.warn(
                        "{aor}: account lookup failed: {e}", aor=aor, e=f.getErrorMessage()
                    ),
                )
        if gone:
            self._reauthorise(None)

    def _learned(self, account: Account | None) -> None:
        if account is None:
            return
        self._optOut(account)
        jid = account.jid.userhost()
        if self._jids.get(account.aor) != jid:
            self._jids[account.aor] = jid
            self._reauthorise(None)

    def accountChanged(self, aor: str, account: Account | None) -> None:
        """
        An admin change (L{sipxmpp.store.accountwatch.AccountWatcher}):
        follow the user's opt-out at once.
        """
        if account is not None:
            self._optOut(account)

    def _optOut(self, account: Account) -> None:
        aor = account.aor
        if account.backpublish == (aor not in self._optedOut):
            return
        if account.backpublish:
            self._optedOut.discard(aor)
        else:
            self._optedOut.add(aor)
        self.log.info("{aor}: back-publishing {state}", aor=aor,
                      state="on" if account.backpublish else "off (opted out)")  # fmt: skip
        self._reauthorise(aor)
        self._tell(aor)

    def _reauthorise(self, aor: str | None) -> None:
        for listener in list(self._authorisationListeners):
            try:
                listener(aor)
            except Exception:
                self.log.failure("an authorisation listener failed")

    # -- the users' sessions -----------------------------------------------

    def _userChanged(self, aor: str, user: UserPublisher | None) -> None:
        if user is None:
            if self._users.pop(aor, None) is not None:
                self._tell(aor)
            return
        self._jids[aor] = user.account.jid.userhost()
        self._optOut(user.account)
        known = self._rosters.get(aor)
        roster = RosterWatch(user.session, lambda: self._reauthorise(aor),
                             known.items if known is not None else None)  # fmt: skip
        self._rosters[aor] = roster
        self._users[aor] = _User(user, roster)
        user.onPresenceChanged = lambda: self._update(aor)
        user.session.addHandler(roster)
        self._update(aor)

    def _update(self, aor: str) -> None:
        watched = self._users.get(aor)
        if watched is None:
            return
        now = presenceOfUser(watched.user)
        if now != watched.last:
            watched.last = now
            self._tell(aor)

    def _tell(self, aor: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(aor)
            except Exception:
                self.log.failure("a presence listener failed for {aor}", aor=aor)
