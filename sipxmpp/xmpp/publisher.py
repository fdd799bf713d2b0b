"""
The XMPP publisher: puts each provisioned user's telephony state into their
XMPP presence.

For every call (ringing, on the phone, on hold; each with its own text) the
call is shown either B{on the user's client by remote control} (XEP-0146,
C{mode = remote-control}), its status put back after the call unless the
user changed it meanwhile, or B{on the gateway's own resource} (C{mode =
resource}, and the fallback when no client can be remote-controlled). What
to do when is decided by L{sipxmpp.xmpp.callpresence.CallPresence}, a
sans-IO state machine per user whose module docstring tells the states;
L{UserPublisher} is the thin XMPP shell around it.

The SIP side never waits: L{Publisher.telephonyStateChanged} records the
latest state and returns; each user's machine works towards the latest state
one answer at a time, so when XMPP is slow or down, whatever happened
meanwhile collapses into the latest state once it is back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from sipxmpp.telephony.events import ITelephonyObserver, StateChange, TelephonyState
from sipxmpp.xmpp.accounts import Account, IAccountDirectory
from sipxmpp.xmpp.activity import ActivityRetractions, UserActivityPublisher
from sipxmpp.xmpp.callevents import (
    Action,
    CommandsFailed,
    CommandsKnown,
    Event,
    ForgetCommands,
    LearnCommands,
    Log,
    QueryCommands,
    ResourceChanged,
    RestoreAnswered,
    RestoreClientStatus,
    RestoreFailed,
    RestoreInterrupted,
    SavedStatusAdopted,
    SaveStatus,
    SendOwnPresence,
    SessionLost,
    SessionReady,
    SetClientStatus,
    SetStatusAnswered,
    SetStatusFailed,
    SetStatusTimedOut,
    StartTimer,
    TelephonyChanged,
    TimerFired,
)
from sipxmpp.xmpp.callpresence import (
    CallPresence,
    CallTexts,
    ShownOnClient,
    ShownOnOwnResource,
)
from sipxmpp.xmpp.caps import verifies
from sipxmpp.xmpp.remote import (
    STATUS_NODES,
    CommandFailed,
    CommandTimeout,
    RemoteControl,
    RemoteControlError,
    RemoteStatus,
)
from sipxmpp.xmpp.resources import (
    CommandCache,
    ResourceChange,
    ResourcePresence,
    ResourceTracker,
    cacheKey,
    jidKey,
)
from sipxmpp.xmpp.savedstatuses import ISavedStatuses, SavedStatus
from sipxmpp.xmpp.session import IXMPPReport, IXMPPSession, NullReport
from sipxmpp.xmpp.wokkelcompat import subprotocols

# How long an AoR without an account is not looked up again.
UNPROVISIONED_TTL = 60.0


@dataclass(frozen=True)
class PublisherSettings:
    """
    What the publisher takes from C{[xmpp]}.
    """

    mode: str = "remote-control"
    priority: int = -1
    statusText: str = "I am currently on the phone"
    ringingText: str = "My phone is ringing"
    holdText: str = "I have a call on hold"
    publishActivity: bool = False
    logoutGrace: float = 300.0
    commandTimeout: float = 10.0
    # [xmpp] resource: every gateway instance's resource begins with it
    # (L{sipxmpp.xmpp.resources.gatewayResource}); none is a client.
    gatewayResource: str = "sipxmpp"



def callTexts(account: Account, settings: PublisherSettings) -> CallTexts:
    """
    The texts of C{account}'s calls: its own, else the configured ones.
    """
    return CallTexts(
        ringing=account.ringingText or settings.ringingText,
        onThePhone=account.statusText or settings.statusText,
        onHold=account.holdText or settings.holdText,
    )


class CommandDirectory:
    """
    Which status commands each client offers, shared by all users.

    What a client says of itself is kept under its full JID (L{jidKey}).
    It is shared with every client advertising the same XEP-0115 caps
    (L{cacheKey}) only once its C{ver} is verified against its own
    disco#info (L{sipxmpp.xmpp.caps}): a client whose caps do not verify
    (no hash, a mismatch, an unsupported hash, no answer) speaks for itself
    alone. Even a verified answer that offers no status command is not
    taken for another client: one user's Psi with remote control off
    advertises the same caps as another's with it on, so such a client is
    asked itself. One query is in flight per client; entries are bounded
    and expire (L{CommandCache}).
    """

    def __init__(self, cache: CommandCache | None = None,
                 now: Callable[[], float] | None = None) -> None:  # fmt: skip
        self.cache = cache if cache is not None else CommandCache(now=now)
        self._inFlight: dict[str, list[Deferred[frozenset[str]]]] = {}

    def known(self, target: JID, presence: ResourcePresence) -> frozenset[str] | None:
        """
        Return what is known of C{target}'s commands without asking it, or
        L{None}.
        """
        own = self.cache.get(jidKey(target))
        if own is not None:
            return own
        caps = presence.caps
        if caps is not None and caps.hash:
            shared = self.cache.get(cacheKey(target, caps))
            if shared is not None and any(n in shared for n in STATUS_NODES):
                return shared
        return None

    def commands(self, remote: RemoteControl, target: JID,
                 presence: ResourcePresence) -> Deferred[frozenset[str]]:  # fmt: skip
        known = self.known(target, presence)
        if known is not None:
            return defer.succeed(known)
        d: Deferred[frozenset[str]] = Deferred()
        waiters = self._inFlight.get(target.full())
        if waiters is not None:
            waiters.append(d)
            return d
        waiters = self._inFlight[target.full()] = [d]

        def done(result: frozenset[str] | Failure) -> None:
            del self._inFlight[target.full()]
            if isinstance(result, Failure):
                for w in waiters:
                    w.errback(result)
                return
            self.cache.put(jidKey(target), result)
            for w in waiters:
                w.callback(result)

        items = remote.commands(target)
        caps = presence.caps
        if caps is not None and caps.hash and self.cache.get(cacheKey(target, caps)) is None:
            verified = remote.discoInfo(target, f"{caps.node}#{caps.ver}").addCallbacks(
                lambda query: verifies(query, caps.hash, caps.ver), lambda _: False
            )

            def share(nodes: frozenset[str]) -> frozenset[str]:
                def checked(ok: bool) -> None:
                    if ok:
                        self.cache.put(cacheKey(target, caps), nodes)

                verified.addCallback(checked)
                return nodes

            items.addCallback(share)
        items.addBoth(done)
        return d

    def forget(self, target: JID, presence: ResourcePresence) -> None:
        """
        Drop what C{target} said of itself (it left).
        """
        self.cache.forget(jidKey(target))


class UserPublisher(subprotocols.XMPPHandler):  # type: ignore[misc]
    """
    One user's presence, on that user's session: the XMPP shell around the
    user's L{CallPresence}. Stanzas and answers become its events; its
    actions are carried out with L{RemoteControl}, the L{CommandDirectory},
    the session and the clock.

    @ivar machine: what decides.
    @ivar tracker: the user's other resources, from the presence stanzas.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, account: Account, session: IXMPPSession,
                 settings: PublisherSettings, commands: CommandDirectory,
                 report: IXMPPReport | None = None) -> None:  # fmt: skip
        super().__init__()
        # Told what happens, for metrics and the status page.
        self.report: IXMPPReport = report if report is not None else NullReport()
        # When the publisher learnt a telephony state presence does not show
        # yet (the presence latency is measured from there), or None.
        self._changedAt: float | None = None
        self.clock = clock
        self.account = account
        self.session = session
        self.settings = settings
        self.mode = account.mode or settings.mode
        self.commandDirectory = commands
        self.texts = callTexts(account, settings)
        self.machine = CallPresence(session.jid, self.texts, self.mode != "resource",
                                    settings.priority)  # fmt: skip
        self.tracker = ResourceTracker(session.jid, settings.gatewayResource)
        self.remote = RemoteControl(session.jid, session.sendRequest, clock,
                                    settings.commandTimeout, settings.gatewayResource)
        # Told (client, status) when a client's status is saved before the
        # publisher changes it, and (None, None) once nothing is saved: the
        # store keeps it so that a restart can still put it back.
        self.onSaved: Callable[[JID | None, RemoteStatus | None], None] = lambda j, s: None
        # Events that come while others are handled (a cached answer fires
        # at once) wait their turn, so the machine sees one at a time.
        self._events: deque[Event] = deque()
        self._handling = False
        self._timer: IDelayedCall | None = None
        self._idleWaiters: list[Deferred[None]] = []
        # What the gateway's own resource last showed on this stream: the
        # dnd text (None: idle) and priority; None while no stream is up.
        self.ownPresence: tuple[str | None, int] | None = None
        # Called after the user's presence on XMPP may have changed (a
        # resource, the gateway's own presence, how a call is shown):
        # back-publishing (L{sipxmpp.xmpp.presencesource}) listens.
        self.onPresenceChanged: Callable[[], object] = lambda: None

    def __repr__(self) -> str:
        return f"<UserPublisher {self.account.aor} {self.telephony.value}>"

    @property
    def telephony(self) -> TelephonyState:
        """
        The latest telephony state.
        """
        return self.machine.telephony

    @property
    def shown(self) -> ShownOnOwnResource | ShownOnClient | None:
        """
        How the current call is shown, or L{None} when nothing is.
        """
        return self.machine.shown

    def desiredText(self) -> str | None:
        """
        Return the text to show for the latest telephony state, or L{None}
        when no call is to be shown.
        """
        return self.machine.desiredText()

    def useAccount(self, account: Account, settings: PublisherSettings | None = None) -> None:
        """
        Use C{account} (changed by the administrator) and C{settings} (a
        reloaded configuration) from the next presence change on: its mode
        and texts. The password is the session's business.
        """
        if settings is not None:
            self.settings = settings
            self.remote.timeout = settings.commandTimeout
        self.account = account
        self.mode = account.mode or self.settings.mode
        self.texts = callTexts(account, self.settings)
        self.machine.texts = self.texts
        self.machine.remoteControl = self.mode != "resource"

    # -- inputs ----------------------------------------------------------

    def setTelephony(self, state: TelephonyState) -> None:
        """
        Record the user's latest telephony state and work towards it.
        """
        if state is not self.machine.telephony:
            self.report.telephonyChanged(self.account.aor, state.value)
            if self._changedAt is None:
                self._changedAt = self.clock.seconds()
        self._handle(TelephonyChanged(state))
        shown = self.machine.shown
        if (self._changedAt is not None and not self.machine.busy
                and (shown.text if shown is not None else None) == self.desiredText()):
            self._changedAt = None  # nothing (more) to send for this change

    def adoptSaved(self, target: JID, saved: RemoteStatus) -> None:
        """
        Before a restart, C{target} was set to dnd and C{saved} is what it
        showed before: take the call over again, so that the status is put
        back once no call is left (if the client still shows our dnd).
        """
        self._handle(SavedStatusAdopted(target, saved))

    def connectionInitialized(self) -> None:
        self.tracker = ResourceTracker(self.session.jid, self.settings.gatewayResource)
        self.remote = RemoteControl(self.session.jid, self.session.sendRequest, self.clock,
                                    self.settings.commandTimeout,
                                    self.settings.gatewayResource)  # fmt: skip
        self.xmlstream.addObserver("/presence", self._onPresence)
        self._handle(SessionReady())

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)  # lets the old stream go
        self.tracker.clear()
        self.ownPresence = None
        # The machine drops a settling that was under way; so does its timer.
        self._cancelTimer()
        self._handle(SessionLost())

    def _onPresence(self, element: domish.Element) -> None:
        change = self.tracker.presenceReceived(element)
        if change is not None:
            self.resourceChanged(change)

    def resourceChanged(self, change: ResourceChange) -> None:
        """
        React to another resource of the user coming, changing or leaving.
        """
        self._handle(ResourceChanged(change))

    def whenIdle(self) -> Deferred[None]:
        """
        Fire once no answer is awaited.
        """
        if not self._handling and not self.machine.busy:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._idleWaiters.append(d)
        return d

    # -- the machine -------------------------------------------------------

    def _handle(self, event: Event) -> None:
        self._events.append(event)
        if self._handling:
            return
        self._handling = True
        try:
            while self._events:
                event = self._events.popleft()
                before = self.machine.shown
                try:
                    actions = self.machine.handle(event, self.clock.seconds())
                except Exception:
                    self.log.failure("{aor}: handling {event} failed", aor=self.account.aor,
                                     event=event)  # fmt: skip
                    continue
                if (self.mode != "resource" and isinstance(self.machine.shown, ShownOnOwnResource)
                        and not isinstance(before, ShownOnOwnResource)):
                    self.report.fallback(self.account.aor)
                for action in actions:
                    try:
                        self._do(action)
                    except Exception:
                        self.log.failure("presence update for {aor} failed ({action})",
                                         aor=self.account.aor, action=action)  # fmt: skip
        finally:
            self._handling = False
        self.onPresenceChanged()
        if not self.machine.busy and self._idleWaiters:
            waiters, self._idleWaiters = self._idleWaiters, []
            for w in waiters:
                w.callback(None)

    def _do(self, action: Action) -> None:
        match action:
            case SendOwnPresence(text, priority):
                self._sendOwn(text, priority)
            case QueryCommands(target, presence):
                self.commandDirectory.commands(self.remote, target, presence).addCallbacks(
                    lambda nodes: self._handle(CommandsKnown(target, nodes)),
                    lambda f: self._handle(CommandsFailed(target, f.getErrorMessage())),
                )
            case LearnCommands(target, presence):
                self.commandDirectory.commands(self.remote, target, presence).addCallbacks(
                    lambda nodes: self._handle(CommandsKnown(target, nodes)),
                    lambda f: self._handle(CommandsFailed(target, f.getErrorMessage())),
                )
            case ForgetCommands(target, presence):
                self.commandDirectory.forget(target, presence)
            case SetClientStatus(target, node, text, current):
                self.report.commandSent(self.account.aor, "set-status", target.full())
                self.remote.setStatus(target, node, "dnd", text, current).addCallbacks(
                    lambda previous: self._setStatusAnswered(target, previous),
                    lambda f: self._handle(self._setStatusFailed(target, f)),
                )
            case RestoreClientStatus(target, node, saved):
                self.report.commandSent(self.account.aor, "restore", target.full())
                self.remote.restoreStatus(target, node, saved).addCallbacks(
                    lambda _: self._restoreAnswered(target),
                    lambda f: self._handle(self._restoreFailed(target, f)),
                )
            case SaveStatus(target, status):
                self.onSaved(target, status)
            case StartTimer(delay):
                self._cancelTimer()
                self._timer = self.clock.callLater(delay, self._timerFired)
            case Log(level, format, fields):
                self.log.emit(level, "{aor}: " + format, aor=self.account.aor, **fields)

    # -- what is reported (metrics, the status page) -----------------------

    def _commandFailed(self, command: str, reason: Failure) -> None:
        if reason.check(CommandTimeout):
            result = "timeout"
        elif reason.check(RemoteControlError):
            result = "refused"
        else:
            result = "lost"
        self.report.commandResult(self.account.aor, command, result)

    def _presenceShown(self, via: str) -> None:
        changedAt, self._changedAt = self._changedAt, None
        if changedAt is not None:
            self.report.presenceSent(self.account.aor, self.clock.seconds() - changedAt, via)

    def _setStatusAnswered(self, target: JID, previous: RemoteStatus) -> None:
        self.report.commandResult(self.account.aor, "set-status", "answered")
        self._presenceShown("client")
        self._handle(SetStatusAnswered(target, previous))

    def _restoreAnswered(self, target: JID) -> None:
        self.report.commandResult(self.account.aor, "restore", "answered")
        self.report.restored(self.account.aor, target.full())
        self._presenceShown("client")
        self._handle(RestoreAnswered(target))

    def _setStatusFailed(self, target: JID, reason: Failure) -> Event:
        self._commandFailed("set-status", reason)
        if reason.check(CommandTimeout):
            return SetStatusTimedOut(target, reason.getErrorMessage())
        return SetStatusFailed(target, reason.getErrorMessage())

    def _restoreFailed(self, target: JID, reason: Failure) -> Event:
        self._commandFailed("restore", reason)
        error = reason.value
        if isinstance(error, RemoteControlError):
            condition = error.condition if isinstance(error, CommandFailed) else None
            return RestoreFailed(target, reason.getErrorMessage(), condition)
        # No answer from the client: the stream went away.
        return RestoreInterrupted(target, reason.getErrorMessage())

    def _timerFired(self) -> None:
        self._timer = None
        self._handle(TimerFired())

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _sendOwn(self, text: str | None, priority: int) -> None:
        presence = domish.Element((None, "presence"))
        if text is not None:
            presence.addElement("show", content="dnd")
            presence.addElement("status", content=text)
        presence.addElement("priority", content=str(priority))
        if not self.session.send(presence):
            return
        self.ownPresence = (text, priority)
        if text == self.machine.desiredText():
            self._presenceShown("own-resource")


SessionMaker = Callable[[JID, str, str | None], IXMPPSession]


@implementer(ITelephonyObserver)
class Publisher(service.Service):
    """
    All users' presence: logs users in when they come online on SIP and out
    after C{logoutGrace} seconds offline.

    A user whose XEP-0108 activity may still show a call (saved before a
    restart, or left when the user was logged out while XMPP was down) is
    logged in just to retract it, if not logged in anyway (bounded by
    L{ActivityRetractions}), and logged out once it is retracted.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, settings: PublisherSettings,
                 accounts: IAccountDirectory, sessionMaker: SessionMaker,
                 commands: CommandDirectory | None = None,
                 savedStatuses: ISavedStatuses | None = None,
                 report: IXMPPReport | None = None) -> None:  # fmt: skip
        """
        @param clock: the reactor (for grace periods and command timeouts).
        @param accounts: where users are looked up.
        @param sessionMaker: makes an unstarted session for a JID, password
            and server (L{None}: the default), e.g. L{sipxmpp.xmpp.session.SessionFactory}.
        @param savedStatuses: keeps the clients' saved statuses and the
            session states across restarts (the store's persister).
        @param report: told what happens (metrics, the status page).
        """
        self.report: IXMPPReport = report if report is not None else NullReport()
        self.savedStatuses = savedStatuses
        self._adopt: dict[str, SavedStatus] = {}
        self.clock = clock
        self.settings = settings
        self.accounts = accounts
        self.sessionMaker = sessionMaker
        self.commands = commands if commands is not None else CommandDirectory(now=clock.seconds)
        self.users: dict[str, UserPublisher] = {}
        # XEP-0108, beside each user's publisher when publishActivity is on.
        self.activities: dict[str, UserActivityPublisher] = {}
        self._lookups: dict[str, TelephonyState] = {}
        self._unprovisioned: dict[str, float] = {}
        self._logouts: dict[str, IDelayedCall] = {}
        # The latest telephony state of every AoR not offline on SIP, so
        # that an account added or enabled later logs its user in at once.
        self._latest: dict[str, TelephonyState] = {}
        self._userListeners: list[Callable[[str, UserPublisher | None], object]] = []
        # XEP-0108: who may still show a call in their activity, and who is
        # logged in only to retract it.
        self.retractions = ActivityRetractions(
            clock, self._loginToRetract,
            lambda aor: aor in self.users or aor in self._lookups or not self.running)
        self.retractions.onTimedOut = self._retractOnlyDone
        self._retractOnly: set[str] = set()

    def addUserListener(self, listener: Callable[[str, UserPublisher | None], object]) -> None:
        """
        Call C{listener(aor, user)} when C{aor} gets a session (before it
        starts) and C{listener(aor, None)} when it is logged out.
        """
        self._userListeners.append(listener)

    def _tellUser(self, aor: str, user: UserPublisher | None) -> None:
        for listener in list(self._userListeners):
            try:
                listener(aor, user)
            except Exception:
                self.log.failure("a listener of {aor}'s session failed", aor=aor)

    # -- ITelephonyObserver ------------------------------------------------

    def telephonyStateChanged(self, change: StateChange) -> None:
        try:
            self._changed(change.aor, change.state)
        except Exception:
            self.log.failure("publisher: handling {change} failed", change=change)

    def _changed(self, aor: str, state: TelephonyState) -> None:
        if state is TelephonyState.OFFLINE:
            self._latest.pop(aor, None)
        else:
            self._latest[aor] = state
            self._retractOnly.discard(aor)  # stays logged in for the call
        user = self.users.get(aor)
        if user is not None:
            self._setTelephony(aor, user, state)
            self._scheduleLogout(aor, state)
            return
        if aor in self._lookups:
            self._lookups[aor] = state
            return
        if state is TelephonyState.OFFLINE:
            return
        until = self._unprovisioned.get(aor)
        if until is not None and self.clock.seconds() < until:
            return
        self._lookups[aor] = state
        self.accounts.lookup(aor).addCallbacks(
            lambda account: self._found(aor, account), lambda f: self._lookupFailed(aor, f)
        )

    def _found(self, aor: str, account: Account | None) -> None:
        state = self._lookups.pop(aor)
        if account is None:
            self._unprovisioned[aor] = self.clock.seconds() + UNPROVISIONED_TTL
            self.log.debug("{aor} is not provisioned for XMPP", aor=aor)
            if aor in self.retractions.stale:
                # Nobody to log in as any more: nothing to retract with.
                self.log.info("{aor}: not provisioned; its user activity is not retracted",
                              aor=aor)  # fmt: skip
                self._activityPending(aor, False)
            self.retractions.ended(aor)
            return
        self._unprovisioned.pop(aor, None)
        adopt = self._adopt.pop(aor, None)
        retractOnly = state is TelephonyState.OFFLINE and adopt is None
        if (retractOnly and not self.retractions.retracting(aor)) or not self.running:
            self.retractions.ended(aor)
            return
        session = self.sessionMaker(account.jid, account.password, account.server)
        user = UserPublisher(self.clock, account, session, self.settings, self.commands,
                             self.report)
        self.users[aor] = user
        session.addHandler(user)
        if self.settings.publishActivity or aor in self.retractions.stale:
            activity = UserActivityPublisher(aor, session, user.texts,
                                             self.settings.commandTimeout,
                                             showCalls=self.settings.publishActivity)
            activity.onPending = lambda pending: self._activityPending(aor, pending)
            self.activities[aor] = activity
            session.addHandler(activity)
        if retractOnly:
            self._retractOnly.add(aor)
        saved = self.savedStatuses
        if saved is not None:
            user.onSaved = lambda target, status: self._saved(aor, target, status)
        report = self.report

        def stateChanged(text: str) -> None:
            if saved is not None:
                saved.sessionStateChanged(aor, text)
            reason = getattr(session, "failureReason", None) if text.startswith("failed") else None
            report.sessionStateChanged(aor, text, reason)

        session.onStateChanged = stateChanged
        self._tellUser(aor, user)
        self._setTelephony(aor, user, state)
        if adopt is not None:
            user.adoptSaved(JID(adopt.resource), RemoteStatus(adopt.status, adopt.priority,
                                                              adopt.message))
        self._scheduleLogout(aor, state)
        if retractOnly:
            self.log.info("{aor}: logging in to XMPP as {jid} to retract the call left in "
                          "its user activity", aor=aor, jid=session.jid.full())  # fmt: skip
        else:
            self.log.info("{aor}: online on SIP; logging in to XMPP as {jid}",
                          aor=aor, jid=session.jid.full())  # fmt: skip
        session.start()

    def _setTelephony(self, aor: str, user: UserPublisher, state: TelephonyState) -> None:
        user.setTelephony(state)
        activity = self.activities.get(aor)
        if activity is not None:
            activity.setTelephony(state)

    def _lookupFailed(self, aor: str, reason: Failure) -> None:
        self._lookups.pop(aor, None)
        self.retractions.ended(aor)
        self.log.error("{aor}: account lookup failed: {e}", aor=aor, e=reason.getErrorMessage())

    # -- changes by the administrator and the configuration ----------------

    def accountChanged(self, aor: str, account: Account | None) -> None:
        """
        The administrator changed C{aor}'s account: C{account} as it is
        now, or L{None} if it was removed or disabled.

        A removed or disabled account's call is taken off its presence and
        its session logged out. A new password is used by the next login,
        at once by a session whose login failed. Mode and texts apply from
        the next presence change. An account added or enabled while its
        user is online on SIP logs in at once.
        """
        try:
            self._accountChanged(aor, account)
        except Exception:
            self.log.failure("publisher: applying the change of {aor} failed", aor=aor)

    def _accountChanged(self, aor: str, account: Account | None) -> None:
        self._unprovisioned.pop(aor, None)
        user = self.users.get(aor)
        if account is None:
            if user is not None:
                self.log.info("{aor}: account removed or disabled; logging out of XMPP", aor=aor)
                # Put back what a client shows for a call before leaving.
                self._setTelephony(aor, user, TelephonyState.OFFLINE)
                self.logout(aor)
            return
        if user is None:
            state = self._latest.get(aor)
            if state is not None and aor not in self._lookups and self.running:
                self._lookups[aor] = state
                self._found(aor, account)
            return
        if (account.jid.userhost(), account.server) != (user.account.jid.userhost(),
                                                        user.account.server):
            self.log.info("{aor}: JID or server changed; logging in again as {jid}", aor=aor,
                          jid=account.jid.userhost())  # fmt: skip
            self._relogin(aor, user, account)
            return
        if account.password != user.account.password:
            update = getattr(user.session, "updatePassword", None)
            if update is not None:
                update(account.password)
            elif str(user.session.state).startswith("failed"):
                self._relogin(aor, user, account)
                return
        user.useAccount(account)
        activity = self.activities.get(aor)
        if activity is not None:
            activity.texts = user.texts

    def _relogin(self, aor: str, user: UserPublisher, account: Account) -> None:
        state = user.telephony

        def again(_: object) -> None:
            if self.running and aor not in self.users and aor not in self._lookups:
                self._lookups[aor] = self._latest.get(aor, state)
                self._found(aor, account)

        self.logout(aor).addCallback(again)

    def updateSettings(self, settings: PublisherSettings) -> None:
        """
        Use reloaded C{settings} (texts, mode, timeouts) from the next
        presence change on; C{priority}, C{publishActivity} and
        C{gatewayResource} need a restart.
        """
        settings = replace(settings, priority=self.settings.priority,
                           publishActivity=self.settings.publishActivity,
                           gatewayResource=self.settings.gatewayResource)  # fmt: skip
        self.settings = settings
        for aor, user in self.users.items():
            user.useAccount(user.account, settings)
            activity = self.activities.get(aor)
            if activity is not None:
                activity.texts = user.texts

    # -- saved statuses ----------------------------------------------------

    def _saved(self, aor: str, target: JID | None, status: RemoteStatus | None) -> None:
        assert self.savedStatuses is not None
        records = []
        if target is not None and status is not None:
            records.append(SavedStatus(aor, target.full(), status.status, status.priority,
                                       status.message, self.clock.seconds()))
        self.savedStatuses.setSavedStatuses(aor, records)

    def reconcile(self) -> None:
        """
        After a restart (once the store restored its state): for every user
        with a client still set to dnd by us, log in and take that over, so
        that the client gets its saved status back once no call is left.
        """
        saved = self.savedStatuses
        if saved is None:
            return
        for aor in saved.aorsWithSavedStatuses():
            self._reconcile(aor, saved.savedStatuses(aor))
        # Calls left in users' activities: retracted, logging them in if need be.
        self.retractions.add(saved.aorsWithPendingActivity())

    def handles(self, aor: str) -> bool:
        """
        Whether C{aor} is logged in here, or being looked up to be.
        """
        return aor in self.users or aor in self._lookups

    def adoptSavedStatuses(self, aor: str, statuses: Sequence[SavedStatus]) -> None:
        """
        C{aor} was taken over from another gateway sharing the store, which
        had saved C{statuses} of clients it set to dnd: keep them (with the
        store's persister) and, like L{reconcile} does after a restart, log
        the user in and take that over, so that the client gets its status
        back once no call is left.
        """
        records = tuple(statuses)
        if not records:
            return
        if self.savedStatuses is not None:
            self.savedStatuses.setSavedStatuses(aor, records)
        self.log.info("{aor}: taken over from another gateway; putting back the status "
                      "of {client} once no call is left", aor=aor, client=records[0].resource)
        self._reconcile(aor, records)

    def _reconcile(self, aor: str, records: Sequence[SavedStatus]) -> None:
        for record in records[:1]:
            user = self.users.get(aor)
            if user is not None and aor in self._retractOnly:
                self._retractOnly.discard(aor)  # now logged out after the grace
                self._scheduleLogout(aor, user.telephony)
            if user is not None:
                user.adoptSaved(JID(record.resource), RemoteStatus(
                    record.status, record.priority, record.message))
                continue
            self._adopt[aor] = record
            if aor not in self._lookups:
                self._lookups[aor] = self._latest.get(aor, TelephonyState.OFFLINE)
                self.accounts.lookup(aor).addCallbacks(
                    lambda account, aor=aor: self._found(aor, account),
                    lambda f, aor=aor: self._lookupFailed(aor, f),
                )

    # -- XEP-0108 activities left showing a call ---------------------------

    def _loginToRetract(self, aor: str) -> None:
        self._lookups[aor] = self._latest.get(aor, TelephonyState.OFFLINE)
        self.accounts.lookup(aor).addCallbacks(
            lambda account: self._found(aor, account), lambda f: self._lookupFailed(aor, f)
        )

    def _activityPending(self, aor: str, pending: bool) -> None:
        if self.savedStatuses is not None:
            self.savedStatuses.setActivityPending(aor, pending)
        if self.retractions.pending(aor, pending):
            self._retractOnlyDone(aor)

    def _loggedOut(self, aor: str) -> None:
        self.retractions.ended(aor)
        self.retractions.queue(aor)

    def _retractOnlyDone(self, aor: str) -> None:
        user = self.users.get(aor)
        if aor in self._retractOnly and user is not None:
            self._retractOnly.discard(aor)
            if user.telephony is TelephonyState.OFFLINE:
                self.logout(aor)

    # -- logging out -------------------------------------------------------

    def _scheduleLogout(self, aor: str, state: TelephonyState) -> None:
        pending = self._logouts.get(aor)
        if state is not TelephonyState.OFFLINE:
            if pending is not None:
                pending.cancel()
                del self._logouts[aor]
            return
        if pending is None and aor not in self._retractOnly:
            # (Logged in only to retract: out once retracted or timed out.)
            self._logouts[aor] = self.clock.callLater(
                self.settings.logoutGrace, self._graceOver, aor
            )

    def _graceOver(self, aor: str) -> None:
        self._logouts.pop(aor, None)
        user = self.users.get(aor)
        if user is not None and user.telephony is TelephonyState.OFFLINE:
            self.log.info("{aor}: offline on SIP for {grace:g} s; logging out of XMPP",
                          aor=aor, grace=self.settings.logoutGrace)  # fmt: skip
            self.logout(aor)

    def logout(self, aor: str) -> Deferred[None]:
        """
        Log C{aor} out (once its presence is up to date) and forget it.
        """
        user = self.users.pop(aor, None)
        self.activities.pop(aor, None)
        pending = self._logouts.pop(aor, None)
        if pending is not None and pending.active():
            pending.cancel()
        self._retractOnly.discard(aor)
        if user is None:
            return defer.succeed(None)
        self._tellUser(aor, None)
        d = user.whenIdle()
        d.addCallback(lambda _: user.session.stop())
        # Logged out with a call still in its activity (XMPP was down, or
        # a retraction timed out): log in again just to retract it.
        d.addCallback(lambda _: self._loggedOut(aor))
        return d

    # -- service -----------------------------------------------------------

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self.retractions.stop()
        return defer.DeferredList([self.logout(aor) for aor in list(self.users)])

    def sessionStates(self) -> dict[str, str]:
        """
        Return each logged-in user's session state (for the status page).
        """
        return {aor: user.session.state for aor, user in self.users.items()}
