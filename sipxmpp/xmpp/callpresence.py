"""
Where and how one user's call shows in their XMPP presence: a sans-IO state
machine.

L{CallPresence} holds no Deferreds, no reactor, no XML. It is fed events
(L{sipxmpp.xmpp.callevents}: the telephony state changed, the session came
up or went away, another resource of the user came, changed or left, a
client answered what we asked or did not, the settle timer fired) with the
clock's time, and returns the actions to take: presences to send, commands
to run, statuses to save, a timer to start, lines to log.
L{sipxmpp.xmpp.publisher.UserPublisher} does the I/O around it.

A call is shown in one of two ways:

  - B{on the user's client} (L{ShownOnClient}; mode C{remote-control}): the
    user's highest-priority available client that offers XEP-0146
    C{rc#set-status} (or Gajim's legacy C{change-status}) is set to dnd with
    the call's text, keeping its priority. After the call its saved status
    is put back -- unless the user changed it meanwhile: once the client has
    broadcast our dnd, any later different status is the user's, and the
    user wins;
  - B{on our own resource} (L{ShownOnOwnResource}; mode C{resource}, and the
    fallback when no client offers remote control, or it refuses, or does
    not answer in time): the gateway's resource shows dnd with a priority
    above the user's others, then goes back to its negative priority.

A call never waits for discovery. Each client is asked for its commands as
soon as it comes online (L{LearnCommands}, answered with L{CommandsKnown}
or L{CommandsFailed}); when a call starts while a client that would come
first is still being asked (a client that never answers takes the whole
command timeout), the call is shown on our own resource at once, and moved
to the client once the answers name one that offers remote control (our
resource goes back to its idle priority once the client took it).

The phases (L{Phase}). At most one question to the server or a client is
out at a time; what changes meanwhile is looked at once its answer is in, so
whatever happened collapses into the latest telephony state:

  ======================  ====================  ==============================
  phase                   waits for             then
  ======================  ====================  ==============================
  IDLE                    a call                SETTLING if just logged in,
                                                else AWAITING_CLIENT for the
                                                highest-priority client known
                                                to offer remote control, else
                                                SHOWN_ON_OWN_RESOURCE (also
                                                while a client before it is
                                                still being asked)
  SETTLING                the settle timer      decides again: the server
                                                sends the user's other
                                                resources right after login
  AWAITING_CLIENT         its set-status        SHOWN_ON_CLIENT; refused or
                          answer                timed out: SHOWN_ON_OWN_RESOURCE
  SHOWN_ON_CLIENT         the call's end, or    RESTORING (IDLE if the user
                          another text          changed it); AWAITING_CLIENT
  RESTORING               the restore answer    IDLE
  SHOWN_ON_OWN_RESOURCE   the call's end, or    IDLE (back to the idle
                          another text, or the  priority); shown again;
                          answers still out     AWAITING_CLIENT when one
                                                offers remote control
  ADOPTING                a client's command    SHOWN_ON_CLIENT: a client set
                          list                  to dnd before a restart is
                                                taken over
  ======================  ====================  ==============================

Beside the phase, one client may be I{away} (L{CallPresence.away}): we set
it to dnd and it went offline before its status could be put back (it left
during the call, or the restore bounced with C{recipient-unavailable} after
the XMPP server restarted). Its saved status is kept; if it comes back still
at our dnd, it is taken over (ADOPTING) and restored once no call is left;
back with another status, the user changed it and it is left alone.

When the session goes away, a question out is dropped: nothing is shown
while it is down, a restore is tried again on the next session, and a call
is placed again once the new session has settled. A call shown on our own
resource is shown again as soon as the session is back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from twisted.logger import LogLevel
from twisted.words.protocols.jabber.jid import JID

from sipxmpp.telephony.events import TelephonyState
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
from sipxmpp.xmpp.jids import withResource
from sipxmpp.xmpp.remote import STATUS_NODES, RemoteStatus, showToStatus
from sipxmpp.xmpp.resources import ResourceChange, ResourcePresence

# Seconds after login during which a call waits for the user's other
# resources to be announced before choosing where to show it.
RESOURCE_SETTLE = 0.5

# Stanza errors meaning that the controlled client is not online (RFC 6120
# 8.5.3.2.1): its status is put back once it is online again.
UNREACHABLE = frozenset({"service-unavailable", "recipient-unavailable", "item-not-found"})


@dataclass(frozen=True)
class CallTexts:
    """
    The status texts of a call, per telephony state.
    """

    ringing: str
    onThePhone: str
    onHold: str

    def forState(self, state: TelephonyState) -> str | None:
        """
        Return the text to show in C{state}, or L{None} when it is no call.
        """
        if state is TelephonyState.ON_THE_PHONE:
            return self.onThePhone
        if state is TelephonyState.RINGING:
            return self.ringing
        if state is TelephonyState.ON_HOLD:
            return self.onHold
        return None


# -- how a call is shown -----------------------------------------------------


@dataclass(eq=False)
class ShownOnOwnResource:
    """
    The call is shown on the gateway's own resource.
    """

    text: str
    priority: int


@dataclass(eq=False)
class ShownOnClient:
    """
    The call is shown on one of the user's clients, by remote control.

    @ivar saved: the client's status before, once known.
    @ivar seenOurs: the client has broadcast the status we set.
    @ivar overridden: after that, it broadcast a different one: the user
        changed it, so it is not restored.
    @ivar anyDnd: while the client is away, any dnd it comes back with
        counts as ours (the text we set is not known: it was restored from
        the store after a restart).
    """

    target: JID
    node: str
    text: str
    saved: RemoteStatus | None
    seenOurs: bool = False
    overridden: bool = False
    anyDnd: bool = False


class Phase(enum.Enum):
    """
    What L{CallPresence} is doing; see the module docstring.
    """

    IDLE = "idle"
    SETTLING = "settling after login"
    ADOPTING = "taking over a client after a restart"
    SHOWN_ON_OWN_RESOURCE = "shown on our own resource"
    AWAITING_CLIENT = "controlling a client: awaiting its answer"
    SHOWN_ON_CLIENT = "controlling a client: shown"
    RESTORING = "controlling a client: restoring"


# The phases with a question out: nothing else is started until its answer.
BUSY = frozenset({Phase.SETTLING, Phase.ADOPTING, Phase.AWAITING_CLIENT, Phase.RESTORING})


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


# A client that would be chosen first is still being asked for its commands.
PENDING = _Pending()


# -- the machine ---------------------------------------------------------------


class CallPresence:
    """
    One user's call in their presence; see the module docstring.

    @ivar telephony: the latest telephony state.
    @ivar phase: what it is doing (L{Phase}).
    @ivar shown: how the current call is shown, or L{None} when nothing is.
    @ivar away: the client we left at dnd that went offline, if any.
    @ivar ready: whether the session is logged in.
    """

    def __init__(self, ownJID: JID, texts: CallTexts, remoteControl: bool,
                 idlePriority: int) -> None:  # fmt: skip
        """
        @param ownJID: the gateway's JID: its user and domain are the
            user's, whose other resources are the clients.
        @param remoteControl: whether calls are shown on the user's clients
            when one allows it (else always on our own resource).
        @param idlePriority: our resource's priority when no call is shown.
        """
        self.ownJID = ownJID
        self.texts = texts
        self.remoteControl = remoteControl
        self.idlePriority = idlePriority
        self.telephony = TelephonyState.ONLINE
        self.phase = Phase.IDLE
        self.shown: ShownOnOwnResource | ShownOnClient | None = None
        self.away: ShownOnClient | None = None
        self.ready = False
        # Our own view of the user's other resources, in the order they came.
        self._resources: dict[str, ResourcePresence] = {}
        self._settleUntil = float("-inf")
        # A client to take over once nothing else is shown.
        self._adopt: tuple[JID, RemoteStatus] | None = None
        # The commands each client answered it offers (none if it failed);
        # a client not in here is still being asked.
        self._commands: dict[str, frozenset[str]] = {}
        # The call is shown on our resource while clients are still being
        # asked: moved to the first that offers remote control.
        self._discovering = False
        # Our resource shows the call (it may still while a client is being
        # set to dnd in its place).
        self._ownShows: ShownOnOwnResource | None = None
        # ADOPTING: the client asked, its saved status, what it showed.
        self._adopting: tuple[JID, RemoteStatus, ResourcePresence] | None = None
        # AWAITING_CLIENT, RESTORING: the record the answer is about (it may
        # no longer be shown: the client can leave meanwhile).
        self._pending: ShownOnClient | None = None
        # A restore that failed without an answer waits for the next session.
        self._restoreHeld = False
        self._actions: list[Action] = []

    def __repr__(self) -> str:
        return f"<CallPresence {self.telephony.value} {self.phase.name}>"

    @property
    def busy(self) -> bool:
        """
        Whether a question is out (see L{BUSY}).
        """
        return self.phase in BUSY

    def desiredText(self) -> str | None:
        """
        Return the text to show for the latest telephony state, or L{None}
        when no call is to be shown.
        """
        return self.texts.forState(self.telephony)

    def handle(self, event: Event, now: float) -> list[Action]:
        """
        Take C{event} in at time C{now}; return what to do, in order.
        """
        match event:
            case TelephonyChanged(state):
                self.telephony = state
            case SessionReady():
                self._sessionReady(now)
            case SessionLost():
                self._sessionLost()
            case ResourceChanged(change):
                self._resourceChanged(change)
            case SavedStatusAdopted(target, saved):
                self._adopt = (target, saved)
            case TimerFired():
                if self.phase is Phase.SETTLING:
                    # Settled, even if the clock reads a hair early.
                    self._settleUntil = min(self._settleUntil, now)
                    self.phase = Phase.IDLE
            case CommandsKnown(target, nodes):
                self._commandsKnown(target, nodes)
            case CommandsFailed(target, reason):
                self._commandsFailed(target, reason)
            case SetStatusAnswered(target, previous):
                self._setStatusAnswered(target, previous)
            case SetStatusFailed(target, reason) | SetStatusTimedOut(target, reason):
                self._setStatusFailed(target, reason)
            case RestoreAnswered(target):
                self._restoreAnswered(target)
            case RestoreFailed(target, reason, condition):
                self._restoreFailed(target, reason, condition)
            case RestoreInterrupted(target, reason):
                self._restoreInterrupted(target, reason)
        self._decide(now)
        actions, self._actions = self._actions, []
        return actions

    # -- deciding ------------------------------------------------------------

    def _decide(self, now: float) -> None:
        # Work towards the latest state until a question is out or nothing
        # is left to do.
        while self.ready and not self.busy and self._step(now):
            pass

    def _step(self, now: float) -> bool:
        """
        Take one decision; return whether another may follow at once.
        """
        if self._adopt is not None and self.shown is None:
            if self._settling(now):
                return False
            return self._takeOver()
        text = self.desiredText()
        shown = self.shown
        if self._ownShows is not None and (isinstance(shown, ShownOnClient) or text is None):
            # The call is on a client now (or over): our resource steps back.
            self._discovering = False
            self._ownIdle()
            if isinstance(shown, ShownOnOwnResource):
                self._show(None)
                self._log("call over, gateway resource back to priority {p}",
                          p=self.idlePriority)  # fmt: skip
            return True
        if text is None:
            if isinstance(shown, ShownOnOwnResource):
                self._show(None)
                self._ownIdle()
                return True
            if isinstance(shown, ShownOnClient) and not self._restoreHeld:
                return self._restore(shown)
            return False
        if shown is None:
            if not self.remoteControl:
                self._showOwn(text)
            elif not self._settling(now):
                self._choose(text)
        elif isinstance(shown, ShownOnOwnResource):
            if self._discovering and self._moved(text):
                return False
            if shown.text != text:
                self._showOwn(text)
        elif not shown.overridden and shown.text != text:
            self._control(shown.target, shown.node, text, shown.saved)
        return False

    def _settling(self, now: float) -> bool:
        remaining = self._settleUntil - now
        if remaining <= 0:
            return False
        self.phase = Phase.SETTLING
        self._emit(StartTimer(remaining))
        return True

    def _show(self, shown: ShownOnOwnResource | ShownOnClient | None) -> None:
        self.shown = shown
        if shown is None:
            self.phase = Phase.IDLE
        elif isinstance(shown, ShownOnOwnResource):
            self.phase = Phase.SHOWN_ON_OWN_RESOURCE
        else:
            self.phase = Phase.SHOWN_ON_CLIENT

    # -- the session -----------------------------------------------------------

    def _sessionReady(self, now: float) -> None:
        self.ready = True
        self._settleUntil = now + RESOURCE_SETTLE
        self._resources.clear()
        self._restoreHeld = False
        # Our presence first: the server then sends us the user's other
        # resources' presence. A call shown on our resource goes on being
        # shown (with the latest text) unless it ended meanwhile.
        text = self.desiredText()
        shown = self.shown
        self._commands.clear()
        if isinstance(shown, ShownOnOwnResource) and text is not None:
            shown.text = text
            self._ownShows = shown
            self._emit(SendOwnPresence(text, shown.priority))
            return
        if isinstance(shown, ShownOnOwnResource):
            self._show(None)
        self._ownIdle()

    def _sessionLost(self) -> None:
        self.ready = False
        self._resources.clear()
        self._commands.clear()
        # Our presence went with the stream; a call shown on our resource
        # stays there once back.
        self._ownShows = None
        self._discovering = False
        phase, pending = self.phase, self._pending
        self._pending = None
        if phase is Phase.ADOPTING and self._adopting is not None:
            # Look again on the next session.
            target, saved, _ = self._adopting
            self._adopt = (target, saved)
        self._adopting = None
        if phase in (Phase.SETTLING, Phase.ADOPTING):
            self.phase = Phase.IDLE
        elif phase is Phase.AWAITING_CLIENT and pending is not None:
            self._log("stream lost before {jid} answered", jid=pending.target.full())
            if self.shown is pending and pending.saved is None:
                # Nothing to show it on now; placed again once back.
                self._show(None)
            else:
                self._show(self.shown)
        elif phase is Phase.RESTORING and pending is not None:
            self._log("restoring {jid} deferred until reconnected", jid=pending.target.full())
            self._show(self.shown)

    # -- the user's other resources --------------------------------------------

    def _jidOf(self, resource: str) -> JID:
        return withResource(self.ownJID, resource)

    def _available(self) -> list[ResourcePresence]:
        # Highest priority first; ties in the order they came online, like
        # most servers route.
        return sorted(self._resources.values(), key=lambda r: -r.priority)

    def _busyPriority(self) -> int:
        highest = max((r.priority for r in self._resources.values()), default=None)
        return 0 if highest is None or highest < 0 else min(127, highest + 1)

    def _resourceChanged(self, change: ResourceChange) -> None:
        jid = self._jidOf(change.resource)
        after = change.after
        if after is not None:
            self._resources[change.resource] = after
            if change.before is None or change.before.caps != after.caps:
                self._commands.pop(change.resource, None)
                self._emit(LearnCommands(jid, after))
        else:
            self._resources.pop(change.resource, None)
            self._commands.pop(change.resource, None)
            if change.before is not None:
                self._emit(ForgetCommands(jid, change.before))
        away = self.away
        if away is not None and after is not None and away.target.resource == change.resource:
            self._returned(away, after)
        shown = self.shown
        if isinstance(shown, ShownOnClient) and shown.target.resource == change.resource:
            if after is None:
                self._log("{jid} went offline during the call", jid=jid.full())
                self.shown = None
                if self.phase is Phase.SHOWN_ON_CLIENT:
                    self.phase = Phase.IDLE
                if shown.saved is not None and not shown.overridden:
                    self._awaitReturn(shown)
                else:
                    self._emit(SaveStatus(None, None))
            elif self.phase is Phase.RESTORING:
                pass  # the restored status it broadcasts is ours, not the user's
            elif after.looksLike("dnd", shown.text):
                shown.seenOurs = True
            elif shown.seenOurs and not shown.overridden:
                shown.overridden = True
                self._log("the user changed {jid} to {show} {status!r} during the call; "
                          "it will not be restored", jid=jid.full(),
                          show=after.show or "online", status=after.status or "")  # fmt: skip
        elif isinstance(shown, ShownOnOwnResource):
            wanted = self._busyPriority()
            if wanted > shown.priority:
                shown.priority = wanted
                self._emit(SendOwnPresence(shown.text, wanted))

    # -- shown on our own resource -------------------------------------------

    def _showOwn(self, text: str) -> None:
        priority = self._busyPriority()
        showing = self._ownShows
        if showing is not None and showing.text == text and showing.priority >= priority:
            # Still shown there (a client was to take it and did not).
            self._show(showing)
            return
        shown = ShownOnOwnResource(text, priority)
        self._show(shown)
        self._ownShows = shown
        self._emit(SendOwnPresence(text, priority))
        self._log("showing {text!r} on the gateway resource at priority {p}",
                  text=text, p=priority)  # fmt: skip

    def _ownIdle(self) -> None:
        self._ownShows = None
        self._emit(SendOwnPresence(None, self.idlePriority))

    # -- choosing a client -----------------------------------------------------

    def _pick(self) -> tuple[JID, str] | None | _Pending:
        """
        Return the highest-priority client that offers remote control and
        its node, L{None} if none does, or L{PENDING} if a client before
        any that does is still being asked.
        """
        for presence in self._available():
            nodes = self._commands.get(presence.resource)
            if nodes is None:
                return PENDING
            for node in STATUS_NODES:
                if node in nodes:
                    return (self._jidOf(presence.resource), node)
        return None

    def _choose(self, text: str) -> None:
        choice = self._pick()
        if isinstance(choice, _Pending):
            # Never wait for discovery: show it ourselves meanwhile.
            self._discovering = True
            self._showOwn(text)
            self._log("the user's clients are still being asked for their commands")
        elif choice is None:
            self._showOwn(text)
        else:
            self._control(choice[0], choice[1], text, None)

    def _moved(self, text: str) -> bool:
        """
        The call is on our resource while clients are asked: move it to
        the client the answers name, if they do by now.
        """
        choice = self._pick()
        if isinstance(choice, _Pending):
            return False
        self._discovering = False
        if choice is None:
            return False
        self._log("moving the call to {jid}, which offers remote control",
                  jid=choice[0].full())  # fmt: skip
        self._control(choice[0], choice[1], text, None)
        return True

    def _commandsKnown(self, target: JID, nodes: frozenset[str]) -> None:
        self._learned(target, nodes)
        if self._adoptingTarget(target):
            self._adopted(nodes)

    def _commandsFailed(self, target: JID, reason: str) -> None:
        if self._learned(target, frozenset()):
            self._log("no command list from {jid}: {e}", jid=target.full(), e=reason)
        if self._adoptingTarget(target):
            self._adopted(frozenset())

    def _learned(self, target: JID, nodes: frozenset[str]) -> bool:
        resource = target.resource or ""
        if target.userhost() != self.ownJID.userhost() or resource not in self._resources:
            return False  # an answer about a client gone meanwhile
        self._commands[resource] = nodes
        return True

    # -- controlling a client --------------------------------------------------

    def _control(self, target: JID, node: str, text: str, saved: RemoteStatus | None) -> None:
        away = self.away
        if saved is None and away is not None and away.target == target:
            # A client we left at dnd is chosen again: what it showed before
            # that is what comes back after the call, not our dnd.
            self.away = None
            saved = away.saved
        record = ShownOnClient(target, node, text, saved)
        self.shown = self._pending = record
        self.phase = Phase.AWAITING_CLIENT
        presence = self._resources.get(target.resource or "")
        current = (
            RemoteStatus(showToStatus(presence.show), presence.priority, presence.status or "")
            if presence is not None
            else saved
        )
        self._emit(SetClientStatus(target, node, text, current))

    def _answerFor(self, phase: Phase, target: JID) -> ShownOnClient | None:
        record = self._pending
        if self.phase is not phase or record is None or record.target != target:
            return None
        self._pending = None
        return record

    def _setStatusAnswered(self, target: JID, previous: RemoteStatus) -> None:
        record = self._answerFor(Phase.AWAITING_CLIENT, target)
        if record is None:
            return
        if record.saved is None:
            record.saved = previous
            self._emit(SaveStatus(target, previous))
        self._log("{jid} set to dnd {text!r} by remote control ({node})",
                  jid=target.full(), text=record.text, node=record.node)  # fmt: skip
        if self.shown is record:
            self.phase = Phase.SHOWN_ON_CLIENT
            return
        # It went offline before its answer came: as if it had left after.
        self.phase = Phase.IDLE
        if self.away is not record and not record.overridden:
            self._awaitReturn(record)

    def _setStatusFailed(self, target: JID, reason: str) -> None:
        record = self._answerFor(Phase.AWAITING_CLIENT, target)
        if record is None:
            return
        if self.shown is not record:
            self.phase = Phase.IDLE
            return
        if record.saved is not None:
            # Only the text was to change: the client still shows our dnd.
            self._log("could not change the text on {jid}: {e}", LogLevel.warn,
                      jid=target.full(), e=reason)  # fmt: skip
            self.phase = Phase.SHOWN_ON_CLIENT
            return
        # Nothing changed on the client: show the call ourselves.
        self._log("remote control of {jid} failed ({e}); showing the call on the gateway "
                  "resource", LogLevel.warn, jid=target.full(), e=reason)  # fmt: skip
        self._show(None)
        text = self.desiredText()
        if text is not None:
            self._showOwn(text)

    # -- restoring a client ------------------------------------------------------

    def _restore(self, record: ShownOnClient) -> bool:
        if record.overridden or record.saved is None:
            self._log("call over; {jid} left as the user set it", jid=record.target.full())
            self._show(None)
            self._emit(SaveStatus(None, None))
            return True
        self.phase = Phase.RESTORING
        self._pending = record
        self._emit(RestoreClientStatus(record.target, record.node, record.saved))
        return False

    def _restoreAnswered(self, target: JID) -> None:
        record = self._answerFor(Phase.RESTORING, target)
        if record is None:
            return
        assert record.saved is not None
        self._log("call over; {jid} restored to {status} {message!r}", jid=target.full(),
                  status=record.saved.status, message=record.saved.message)  # fmt: skip
        self.phase = Phase.IDLE
        if self.shown is record:
            self._show(None)
            self._emit(SaveStatus(None, None))

    def _restoreFailed(self, target: JID, reason: str, condition: str | None) -> None:
        record = self._answerFor(Phase.RESTORING, target)
        if record is None:
            return
        self.phase = Phase.IDLE
        if condition in UNREACHABLE and self.shown is record:
            # The client is not online: after an XMPP server restart we may
            # be back before it is. Restore it when it returns.
            self._show(None)
            self._awaitReturn(record)
            return
        self._log("could not restore {jid}: {e}", LogLevel.warn, jid=target.full(), e=reason)
        if self.shown is record:
            self._show(None)
            self._emit(SaveStatus(None, None))

    def _restoreInterrupted(self, target: JID, reason: str) -> None:
        record = self._answerFor(Phase.RESTORING, target)
        if record is None:
            return
        self._log("restoring {jid} deferred until reconnected: {e}", jid=target.full(), e=reason)
        self._show(self.shown)
        self._restoreHeld = True

    # -- a client away, and taking one over --------------------------------------

    def _awaitReturn(self, record: ShownOnClient, anyDnd: bool = False) -> None:
        """
        C{record}'s client is offline while still at our dnd (as far as we
        know): keep its saved status until it comes back.
        """
        record.anyDnd = anyDnd
        self.away = record
        self._log("{jid} is offline; its status is put back if it returns at dnd",
                  jid=record.target.full())  # fmt: skip

    def _returned(self, away: ShownOnClient, presence: ResourcePresence) -> None:
        self.away = None
        if (away.saved is not None and presence.show == "dnd"
                and (away.anyDnd or presence.looksLike("dnd", away.text))):  # fmt: skip
            self._log("{jid} is back at our dnd", jid=away.target.full())
            self._adopt = (away.target, away.saved)
            return
        self._log("{jid} came back with another status; its saved status is dropped",
                  jid=away.target.full())  # fmt: skip
        if not isinstance(self.shown, ShownOnClient):
            self._emit(SaveStatus(None, None))

    def _takeOver(self) -> bool:
        assert self._adopt is not None
        target, saved = self._adopt
        self._adopt = None
        presence = self._resources.get(target.resource or "")
        if presence is None:
            # Not online (yet): take it over if it comes back at our dnd.
            self._awaitReturn(ShownOnClient(target, STATUS_NODES[0], "", saved), anyDnd=True)
            return True
        if presence.show != "dnd":
            # The client went away, or the user changed it while we were
            # down: either way there is nothing of ours to undo.
            self._log("{jid} no longer shows the dnd set before the restart; its saved "
                      "status is dropped", jid=target.full())  # fmt: skip
            self._emit(SaveStatus(None, None))
            return True
        self.phase = Phase.ADOPTING
        self._adopting = (target, saved, presence)
        self._emit(QueryCommands(target, presence))
        return False

    def _adoptingTarget(self, target: JID) -> bool:
        return (self.phase is Phase.ADOPTING and self._adopting is not None
                and self._adopting[0] == target)  # fmt: skip

    def _adopted(self, nodes: frozenset[str]) -> None:
        assert self._adopting is not None
        target, saved, presence = self._adopting
        self._adopting = None
        node = next((n for n in STATUS_NODES if n in nodes), STATUS_NODES[0])
        self._show(ShownOnClient(target, node, presence.status or "", saved, seenOurs=True))
        self._log("took over {jid}'s dnd, set before a restart or by another gateway", jid=target.full())

    # -- output ----------------------------------------------------------------

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _log(self, format: str, level: LogLevel = LogLevel.info, **fields: object) -> None:
        self._emit(Log(level, format, fields))
