"""
The XMPP publisher: puts each provisioned user's telephony state into their
XMPP presence.

For every call (ringing, on the phone, on hold; each with its own text):

  - B{case b} (C{mode = remote-control}): the user's highest-priority
    available client that offers XEP-0146 C{rc#set-status} (or Gajim's
    legacy C{change-status}) is set to C{dnd} with the text, keeping its
    priority; when the last call is over, its saved values are put back --
    unless the user changed that client's status meanwhile, which we see in
    the presence the client broadcasts: once our change has shown up, any
    later different status is the user's, and the user wins;
  - B{case a} (C{mode = resource}, and the fallback when no client offers
    remote control or the command fails or times out): the gateway's own
    resource shows C{dnd} with the text and a priority above the user's
    others, then goes back to its negative priority.

The SIP side never waits: L{Publisher.telephonyStateChanged} records the
latest state and returns; each user's L{UserPublisher} works towards the
latest state one step at a time, so when XMPP is slow or down, whatever
happened meanwhile collapses into the latest state once it is back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from sipxmpp.telephony.events import ITelephonyObserver, StateChange, TelephonyState
from sipxmpp.xmpp.accounts import Account, IAccountDirectory
from sipxmpp.xmpp.remote import (
    STATUS_NODES,
    CommandFailed,
    RemoteControl,
    RemoteControlError,
    RemoteStatus,
    showToStatus,
)
from sipxmpp.xmpp.resources import (
    CommandCache,
    ResourceChange,
    ResourcePresence,
    ResourceTracker,
    cacheKey,
)
from sipxmpp.xmpp.savedstatuses import ISavedStatuses, SavedStatus
from sipxmpp.xmpp.session import IXMPPSession
from sipxmpp.xmpp.wokkelcompat import subprotocols

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_ACTIVITY = "http://jabber.org/protocol/activity"

# How long an AoR without an account is not looked up again.
UNPROVISIONED_TTL = 60.0

# Seconds after login during which a call waits for the user's other
# resources to be announced before choosing where to show it.
RESOURCE_SETTLE = 0.5

# Stanza errors meaning that the controlled client is not online (RFC 6120
# 8.5.3.2.1): its status is put back once it is online again.
UNREACHABLE = frozenset({"service-unavailable", "recipient-unavailable", "item-not-found"})


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

    @classmethod
    def fromConfig(cls, xmpp: Any) -> PublisherSettings:
        """
        Build from L{sipxmpp.config.XMPPSettings}.
        """
        return cls(
            mode=xmpp.mode,
            priority=xmpp.priority,
            statusText=xmpp.statusText,
            ringingText=xmpp.ringingText,
            holdText=xmpp.holdText,
            publishActivity=xmpp.publishActivity,
            logoutGrace=xmpp.logoutGrace,
            commandTimeout=xmpp.commandTimeout,
        )


class CaseA:
    """
    The call is shown on the gateway's own resource.
    """

    def __init__(self, text: str, priority: int) -> None:
        self.text = text
        self.priority = priority


class CaseB:
    """
    The call is shown on one of the user's clients, by remote control.

    @ivar saved: the client's status before, once known.
    @ivar seenOurs: the client has broadcast the status we set.
    @ivar overridden: after that, it broadcast a different one: the user
        changed it, so it is not restored.
    @ivar anyDnd: while the client is offline, any dnd it comes back with
        counts as ours (the text we set is not known: it was restored from
        the store after a restart).
    """

    def __init__(self, target: JID, node: str, text: str, saved: RemoteStatus | None) -> None:
        self.target = target
        self.node = node
        self.text = text
        self.saved = saved
        self.seenOurs = False
        self.overridden = False
        self.restoring = False
        self.anyDnd = False


class CommandDirectory:
    """
    Which status commands each client offers, shared by all users: cached
    per caps (L{CommandCache}), with one disco query in flight per key.
    """

    def __init__(self, cache: CommandCache | None = None) -> None:
        self.cache = cache if cache is not None else CommandCache()
        self._inFlight: dict[tuple[str, str, str], list[Deferred[frozenset[str]]]] = {}

    def commands(self, remote: RemoteControl, target: JID,
                 presence: ResourcePresence) -> Deferred[frozenset[str]]:  # fmt: skip
        key = cacheKey(target, presence.caps)
        cached = self.cache.get(key)
        if cached is not None:
            return defer.succeed(cached)
        d: Deferred[frozenset[str]] = Deferred()
        waiters = self._inFlight.get(key)
        if waiters is not None:
            waiters.append(d)
            return d
        waiters = self._inFlight[key] = [d]

        def done(result: frozenset[str] | Failure) -> None:
            del self._inFlight[key]
            if isinstance(result, Failure):
                for w in waiters:
                    w.errback(result)
            else:
                self.cache.put(key, result)
                for w in waiters:
                    w.callback(result)

        remote.commands(target).addBoth(done)
        return d

    def forget(self, target: JID, presence: ResourcePresence) -> None:
        """
        Drop what is known of a client that has no hashed caps (it left).
        """
        key = cacheKey(target, presence.caps)
        if key[0] == "jid":
            self.cache.forget(key)


class UserPublisher(subprotocols.XMPPHandler):  # type: ignore[misc]
    """
    One user's presence, on that user's session.

    @ivar telephony: the latest telephony state.
    @ivar shown: how the current call is shown (L{CaseA}, L{CaseB}), or
        L{None} when nothing is.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, account: Account, session: IXMPPSession,
                 settings: PublisherSettings, commands: CommandDirectory) -> None:  # fmt: skip
        super().__init__()
        self.clock = clock
        self.account = account
        self.session = session
        self.settings = settings
        self.mode = account.mode or settings.mode
        self.commandDirectory = commands
        self.telephony = TelephonyState.ONLINE
        self.shown: CaseA | CaseB | None = None
        self.tracker = ResourceTracker(session.jid)
        self.remote = RemoteControl(session.jid, session.sendRequest, clock, settings.commandTimeout)
        self._activity: str | None = None
        self._readyAt = -RESOURCE_SETTLE
        self._running = False
        self._again = False
        self._idleWaiters: list[Deferred[None]] = []
        # Told (client, status) when a client's status is saved before the
        # publisher changes it, and (None, None) once nothing is saved: the
        # store keeps it so that a restart can still put it back.
        self.onSaved: Callable[[JID | None, RemoteStatus | None], None] = lambda j, s: None
        self._adopt: tuple[JID, RemoteStatus] | None = None
        # A client we set to dnd that went away before its status could be
        # put back (it left, or it was not back yet after the XMPP server
        # restarted): if it comes back still showing our dnd, it is taken
        # over again and restored once no call is left. Its saved status
        # stays in the store meanwhile.
        self._away: CaseB | None = None

    def __repr__(self) -> str:
        return f"<UserPublisher {self.account.aor} {self.telephony.value}>"

    # -- inputs ----------------------------------------------------------

    def setTelephony(self, state: TelephonyState) -> None:
        """
        Record the user's latest telephony state and work towards it.
        """
        self.telephony = state
        self._kick()

    def adoptSaved(self, target: JID, saved: RemoteStatus) -> None:
        """
        Before a restart, C{target} was set to dnd and C{saved} is what it
        showed before: take the call over again, so that the status is put
        back once no call is left (if the client still shows our dnd).
        """
        self._adopt = (target, saved)
        self._kick()

    def _clearCaseB(self) -> None:
        self.shown = None
        self.onSaved(None, None)

    def connectionInitialized(self) -> None:
        self.tracker = ResourceTracker(self.session.jid)
        self.remote = RemoteControl(self.session.jid, self.session.sendRequest, self.clock,
                                    self.settings.commandTimeout)  # fmt: skip
        self.xmlstream.addObserver("/presence", self._onPresence)
        self._readyAt = self.clock.seconds()
        # Our presence first: the server then sends us the user's other
        # resources' presence. A call shown on our resource goes on being
        # shown (with the latest text) unless it ended meanwhile.
        text = self.desiredText()
        if isinstance(self.shown, CaseA) and text is not None:
            self.shown.text = text
            self._sendOwn(text, self.shown.priority)
        else:
            if isinstance(self.shown, CaseA):
                self.shown = None
            self._sendOwn(None, self.settings.priority)
        self._activity = None
        self._kick()

    def connectionLost(self, reason: Failure) -> None:
        self.tracker.clear()

    # -- what to show ------------------------------------------------------

    def desiredText(self) -> str | None:
        """
        Return the text to show for the latest telephony state, or L{None}
        when no call is to be shown.
        """
        account, settings = self.account, self.settings
        if self.telephony is TelephonyState.ON_THE_PHONE:
            return account.statusText or settings.statusText
        if self.telephony is TelephonyState.RINGING:
            return account.ringingText or settings.ringingText
        if self.telephony is TelephonyState.ON_HOLD:
            return account.holdText or settings.holdText
        return None

    def whenIdle(self) -> Deferred[None]:
        """
        Fire once no step is in progress.
        """
        if not self._running:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._idleWaiters.append(d)
        return d

    def _kick(self) -> None:
        if self._running:
            self._again = True
            return
        self._running = True
        d = Deferred.fromCoroutine(self._loop())
        d.addErrback(lambda f: self.log.failure("presence update for {aor} failed", f,
                                                aor=self.account.aor))  # fmt: skip

    async def _loop(self) -> None:
        try:
            while True:
                self._again = False
                await self._step()
                if not self._again:
                    break
        finally:
            self._running = False
            waiters, self._idleWaiters = self._idleWaiters, []
            for w in waiters:
                w.callback(None)

    async def _step(self) -> None:
        if not self.session.ready:
            return
        if self._adopt is not None and self.shown is None:
            await self._adoptSaved()
        text = self.desiredText()
        self._publishActivity()
        shown = self.shown
        if text is None:
            if isinstance(shown, CaseA):
                self._sendOwn(None, self.settings.priority)
                self.shown = None
                self.log.info("{aor}: call over, gateway resource back to priority {p}",
                              aor=self.account.aor, p=self.settings.priority)  # fmt: skip
                if self._adopt is not None:
                    self._again = True  # a client of ours came back: restore it
            elif isinstance(shown, CaseB):
                await self._restore(shown)
                if self._adopt is not None and self.shown is None:
                    self._again = True
            return
        if shown is None:
            if self.mode == "resource":
                self._showOwn(text)
                return
            # The server sends the other resources' presence right after
            # ours (within milliseconds): a call that starts as we log in
            # waits for it rather than miss a remote-controllable client.
            settle = self._readyAt + RESOURCE_SETTLE - self.clock.seconds()
            if settle > 0:
                await deferLater(self.clock, settle, lambda: None)
                if not self.session.ready or self.shown is not None:
                    return
                text = self.desiredText()
                if text is None:
                    return
            target = await self._pickTarget()
            if self.shown is not None or self.desiredText() is None:
                return  # things changed while we looked; the loop runs again
            if target is None:
                self._showOwn(text)
                return
            await self._control(target[0], target[1], text, None)
        elif isinstance(shown, CaseA):
            if shown.text != text:
                self._showOwn(text)
        elif not shown.overridden and shown.text != text:
            await self._control(shown.target, shown.node, text, shown.saved)

    async def _adoptSaved(self) -> None:
        settle = self._readyAt + RESOURCE_SETTLE - self.clock.seconds()
        if settle > 0:
            await deferLater(self.clock, settle, lambda: None)
        adopt, self._adopt = self._adopt, None
        if adopt is None or self.shown is not None:
            return
        target, saved = adopt
        presence = self.tracker.get(target.resource or "")
        if presence is None:
            # Not online (yet): take it over if it comes back at our dnd.
            self._waitForReturn(CaseB(target, STATUS_NODES[0], "", saved), anyDnd=True)
            return
        if presence.show != "dnd":
            # The client went away, or the user changed it while we were
            # down: either way there is nothing of ours to undo.
            self.log.info("{aor}: {jid} no longer shows the dnd set before the restart; "
                          "its saved status is dropped", aor=self.account.aor,
                          jid=target.full())  # fmt: skip
            self.onSaved(None, None)
            return
        try:
            nodes = await self.commandDirectory.commands(self.remote, target, presence)
        except Exception:
            nodes = frozenset()
        node = next((n for n in STATUS_NODES if n in nodes), STATUS_NODES[0])
        record = CaseB(target, node, presence.status or "", saved)
        record.seenOurs = True
        self.shown = record
        self.log.info("{aor}: took over {jid}'s dnd from before the restart",
                      aor=self.account.aor, jid=target.full())  # fmt: skip

    # -- case a ------------------------------------------------------------

    def _showOwn(self, text: str) -> None:
        priority = self._busyPriority()
        self.shown = CaseA(text, priority)
        self._sendOwn(text, priority)
        self.log.info("{aor}: showing {text!r} on the gateway resource at priority {p}",
                      aor=self.account.aor, text=text, p=priority)  # fmt: skip

    def _busyPriority(self) -> int:
        highest = self.tracker.highestPriority()
        return 0 if highest is None or highest < 0 else min(127, highest + 1)

    def _sendOwn(self, text: str | None, priority: int) -> None:
        presence = domish.Element((None, "presence"))
        if text is not None:
            presence.addElement("show", content="dnd")
            presence.addElement("status", content=text)
        presence.addElement("priority", content=str(priority))
        self.session.send(presence)

    # -- case b ------------------------------------------------------------

    async def _pickTarget(self) -> tuple[JID, str] | None:
        for presence in self.tracker.available():
            jid = JID(tuple=(self.session.jid.user, self.session.jid.host, presence.resource))
            try:
                nodes = await self.commandDirectory.commands(self.remote, jid, presence)
            except Exception as e:
                self.log.info("{aor}: no command list from {jid}: {e}",
                              aor=self.account.aor, jid=jid.full(), e=e)  # fmt: skip
                continue
            for node in STATUS_NODES:
                if node in nodes and self.tracker.get(presence.resource) is not None:
                    return jid, node
        return None

    async def _control(self, target: JID, node: str, text: str,
                       saved: RemoteStatus | None) -> None:  # fmt: skip
        away = self._away
        if saved is None and away is not None and away.target == target:
            # A client we left at dnd is chosen again: what it showed before
            # that is what comes back after the call, not our dnd.
            self._away = None
            saved = away.saved
        record = CaseB(target, node, text, saved)
        self.shown = record
        presence = self.tracker.get(target.resource or "")
        current = (
            RemoteStatus(showToStatus(presence.show), presence.priority, presence.status or "")
            if presence is not None
            else saved
        )
        try:
            previous = await self.remote.setStatus(target, node, "dnd", text, current)
        except Exception as e:
            if self.shown is not record:
                return
            if saved is None:
                # Nothing changed on the client: show the call ourselves.
                self.log.warn("{aor}: remote control of {jid} failed ({e}); "
                              "showing the call on the gateway resource",
                              aor=self.account.aor, jid=target.full(), e=e)  # fmt: skip
                self.shown = None
                if self.session.ready and self.desiredText() is not None:
                    self._showOwn(self.desiredText() or text)
            else:
                self.log.warn("{aor}: could not change the text on {jid}: {e}",
                              aor=self.account.aor, jid=target.full(), e=e)  # fmt: skip
            return
        if record.saved is None:
            record.saved = previous
            self.onSaved(target, previous)
        self.log.info("{aor}: {jid} set to dnd {text!r} by remote control ({node})",
                      aor=self.account.aor, jid=target.full(), text=text, node=node)  # fmt: skip

    async def _restore(self, shown: CaseB) -> None:
        if shown.overridden or shown.saved is None:
            self.log.info("{aor}: call over; {jid} left as the user set it",
                          aor=self.account.aor, jid=shown.target.full())  # fmt: skip
            self._clearCaseB()
            return
        # The client broadcasts the restored status while we wait for its
        # answer: that is ours, not the user's.
        shown.restoring = True
        try:
            await self.remote.restoreStatus(shown.target, shown.node, shown.saved)
        except CommandFailed as e:
            if e.condition in UNREACHABLE and self.shown is shown:
                # The client is not online: after an XMPP server restart we
                # may be back before it is. Restore it when it returns.
                self.shown = None
                self._waitForReturn(shown)
                return
            self.log.warn("{aor}: could not restore {jid}: {e}",
                          aor=self.account.aor, jid=shown.target.full(), e=e)  # fmt: skip
        except RemoteControlError as e:
            self.log.warn("{aor}: could not restore {jid}: {e}",
                          aor=self.account.aor, jid=shown.target.full(), e=e)  # fmt: skip
        except Exception as e:
            # The stream went away: try again on the next one.
            shown.restoring = False
            self.log.info("{aor}: restoring {jid} deferred until reconnected: {e}",
                          aor=self.account.aor, jid=shown.target.full(), e=e)  # fmt: skip
            return
        else:
            self.log.info("{aor}: call over; {jid} restored to {status} {message!r}",
                          aor=self.account.aor, jid=shown.target.full(),
                          status=shown.saved.status, message=shown.saved.message)  # fmt: skip
        if self.shown is shown:
            self._clearCaseB()

    def _waitForReturn(self, shown: CaseB, anyDnd: bool = False) -> None:
        """
        C{shown}'s client is offline while still at our dnd (as far as we
        know): keep its saved status until it comes back.
        """
        shown.restoring = False
        shown.anyDnd = anyDnd
        self._away = shown
        self.log.info("{aor}: {jid} is offline; its status is put back if it returns at dnd",
                      aor=self.account.aor, jid=shown.target.full())  # fmt: skip

    def _returned(self, change: ResourceChange) -> None:
        """
        A client we left at dnd while it was away is online again.
        """
        away, self._away = self._away, None
        assert away is not None and change.after is not None
        if away.saved is not None and change.after.show == "dnd" and (
            away.anyDnd or change.after.looksLike("dnd", away.text)
        ):
            self.log.info("{aor}: {jid} is back at our dnd", aor=self.account.aor,
                          jid=away.target.full())  # fmt: skip
            self._adopt = (away.target, away.saved)
            self._kick()
            return
        self.log.info("{aor}: {jid} came back with another status; its saved status is dropped",
                      aor=self.account.aor, jid=away.target.full())  # fmt: skip
        if not isinstance(self.shown, CaseB):
            self.onSaved(None, None)

    def _onPresence(self, element: domish.Element) -> None:
        change = self.tracker.presenceReceived(element)
        if change is not None:
            self.resourceChanged(change)

    def resourceChanged(self, change: ResourceChange) -> None:
        """
        React to another resource of the user coming, changing or leaving.
        """
        jid = JID(tuple=(self.session.jid.user, self.session.jid.host, change.resource))
        if change.after is not None:
            if change.before is None or change.before.caps != change.after.caps:
                # Learn its commands now, so that a call does not wait for it.
                self.commandDirectory.commands(self.remote, jid, change.after).addErrback(
                    lambda _: None
                )
        elif change.before is not None:
            self.commandDirectory.forget(jid, change.before)
        away = self._away
        if (away is not None and change.after is not None
                and away.target.resource == change.resource):
            self._returned(change)
        shown = self.shown
        if isinstance(shown, CaseB) and shown.target.resource == change.resource:
            if change.after is None:
                self.log.info("{aor}: {jid} went offline during the call",
                              aor=self.account.aor, jid=jid.full())  # fmt: skip
                self.shown = None
                if shown.saved is not None and not shown.overridden:
                    self._waitForReturn(shown)
                else:
                    self._clearCaseB()
                self._kick()
            elif shown.restoring:
                pass
            elif change.after.looksLike("dnd", shown.text):
                shown.seenOurs = True
            elif shown.seenOurs and not shown.overridden:
                shown.overridden = True
                self.log.info("{aor}: the user changed {jid} to {show} {status!r} during the "
                              "call; it will not be restored", aor=self.account.aor,
                              jid=jid.full(), show=change.after.show or "online",
                              status=change.after.status or "")  # fmt: skip
        elif isinstance(shown, CaseA):
            wanted = self._busyPriority()
            if wanted > shown.priority:
                shown.priority = wanted
                self._sendOwn(shown.text, wanted)

    # -- XEP-0108 ----------------------------------------------------------

    def _publishActivity(self) -> None:
        if not self.settings.publishActivity:
            return
        wanted = None
        if self.telephony in (TelephonyState.ON_THE_PHONE, TelephonyState.ON_HOLD):
            wanted = self.desiredText()
        if wanted == self._activity:
            return
        iq = domish.Element((None, "iq"))
        iq["type"] = "set"
        iq.addUniqueId()
        publish = iq.addElement((NS_PUBSUB, "pubsub")).addElement("publish")
        publish["node"] = NS_ACTIVITY
        activity = publish.addElement("item").addElement((NS_ACTIVITY, "activity"))
        if wanted is not None:
            activity.addElement("talking").addElement("on_the_phone")
            activity.addElement("text", content=wanted)
        self._activity = wanted
        self.session.sendRequest(iq, self.settings.commandTimeout).addErrback(
            lambda f: self.log.info("{aor}: user activity not published: {e}",
                                    aor=self.account.aor, e=f.getErrorMessage())  # fmt: skip
        )


SessionMaker = Callable[[JID, str], IXMPPSession]


@implementer(ITelephonyObserver)
class Publisher(service.Service):
    """
    All users' presence: logs users in when they come online on SIP and out
    after C{logoutGrace} seconds offline.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, settings: PublisherSettings,
                 accounts: IAccountDirectory, sessionMaker: SessionMaker,
                 commands: CommandDirectory | None = None,
                 savedStatuses: ISavedStatuses | None = None) -> None:  # fmt: skip
        """
        @param clock: the reactor (for grace periods and command timeouts).
        @param accounts: where users are looked up.
        @param sessionMaker: makes an unstarted session for a JID and
            password, e.g. L{sipxmpp.xmpp.session.SessionFactory}.
        @param savedStatuses: keeps the clients' saved statuses and the
            session states across restarts (the store's persister).
        """
        self.savedStatuses = savedStatuses
        self._adopt: dict[str, SavedStatus] = {}
        self.clock = clock
        self.settings = settings
        self.accounts = accounts
        self.sessionMaker = sessionMaker
        self.commands = commands if commands is not None else CommandDirectory()
        self.users: dict[str, UserPublisher] = {}
        self._lookups: dict[str, TelephonyState] = {}
        self._unprovisioned: dict[str, float] = {}
        self._logouts: dict[str, IDelayedCall] = {}

    # -- ITelephonyObserver ------------------------------------------------

    def telephonyStateChanged(self, change: StateChange) -> None:
        try:
            self._changed(change.aor, change.state)
        except Exception:
            self.log.failure("publisher: handling {change} failed", change=change)

    def _changed(self, aor: str, state: TelephonyState) -> None:
        user = self.users.get(aor)
        if user is not None:
            user.setTelephony(state)
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
            return
        self._unprovisioned.pop(aor, None)
        adopt = self._adopt.pop(aor, None)
        if (state is TelephonyState.OFFLINE and adopt is None) or not self.running:
            return
        session = self.sessionMaker(account.jid, account.password)
        user = UserPublisher(self.clock, account, session, self.settings, self.commands)
        self.users[aor] = user
        session.addHandler(user)
        saved = self.savedStatuses
        if saved is not None:
            user.onSaved = lambda target, status: self._saved(aor, target, status)
            session.onStateChanged = lambda text: saved.sessionStateChanged(aor, text)
        user.setTelephony(state)
        if adopt is not None:
            user.adoptSaved(JID(adopt.resource), RemoteStatus(adopt.status, adopt.priority,
                                                              adopt.message))
        self._scheduleLogout(aor, state)
        self.log.info("{aor}: online on SIP; logging in to XMPP as {jid}",
                      aor=aor, jid=session.jid.full())  # fmt: skip
        session.start()

    def _lookupFailed(self, aor: str, reason: Failure) -> None:
        self._lookups.pop(aor, None)
        self.log.error("{aor}: account lookup failed: {e}", aor=aor, e=reason.getErrorMessage())

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
            for record in saved.savedStatuses(aor)[:1]:
                user = self.users.get(aor)
                if user is not None:
                    user.adoptSaved(JID(record.resource), RemoteStatus(
                        record.status, record.priority, record.message))
                    continue
                self._adopt[aor] = record
                if aor not in self._lookups:
                    self._lookups[aor] = TelephonyState.OFFLINE
                    self.accounts.lookup(aor).addCallbacks(
                        lambda account, aor=aor: self._found(aor, account),
                        lambda f, aor=aor: self._lookupFailed(aor, f),
                    )

    # -- logging out -------------------------------------------------------

    def _scheduleLogout(self, aor: str, state: TelephonyState) -> None:
        pending = self._logouts.get(aor)
        if state is not TelephonyState.OFFLINE:
            if pending is not None:
                pending.cancel()
                del self._logouts[aor]
            return
        if pending is None:
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
        pending = self._logouts.pop(aor, None)
        if pending is not None and pending.active():
            pending.cancel()
        if user is None:
            return defer.succeed(None)
        d = user.whenIdle()
        d.addCallback(lambda _: user.session.stop())
        return d

    # -- service -----------------------------------------------------------

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return defer.DeferredList([self.logout(aor) for aor in list(self.users)])

    def sessionStates(self) -> dict[str, str]:
        """
        Return each logged-in user's session state (for the status page).
        """
        return {aor: user.session.state for aor, user in self.users.items()}
