"""
What goes into L{sipxmpp.xmpp.callpresence.CallPresence} and what comes out:
the L{Event}s it is fed and the L{Action}s it returns. Plain values: the
shell (L{sipxmpp.xmpp.publisher.UserPublisher}) turns stanzas and answers
into events and carries the actions out.

Every action that asks something (L{QueryCommands}, L{SetClientStatus},
L{RestoreClientStatus}, L{StartTimer}) is answered by exactly one of the
events its docstring names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from twisted.logger import LogLevel
from twisted.words.protocols.jabber.jid import JID

from sipxmpp.telephony.events import TelephonyState
from sipxmpp.xmpp.remote import RemoteStatus
from sipxmpp.xmpp.resources import ResourceChange, ResourcePresence

# -- events --------------------------------------------------------------------


@dataclass(frozen=True)
class TelephonyChanged:
    """
    The user's telephony state is now C{state}.
    """

    state: TelephonyState


@dataclass(frozen=True)
class SessionReady:
    """
    The session is logged in (again); the server will now send the user's
    other resources.
    """


@dataclass(frozen=True)
class SessionLost:
    """
    The session's stream is gone; questions out will not be answered.
    """


@dataclass(frozen=True)
class ResourceChanged:
    """
    Another resource of the user came, changed or left.
    """

    change: ResourceChange


@dataclass(frozen=True)
class CommandsKnown:
    """
    The answer to L{QueryCommands} or L{LearnCommands}: the command nodes
    C{target} offers.
    """

    target: JID
    nodes: frozenset[str]


@dataclass(frozen=True)
class CommandsFailed:
    """
    L{QueryCommands} or L{LearnCommands} for C{target} failed.
    """

    target: JID
    reason: str


@dataclass(frozen=True)
class SetStatusAnswered:
    """
    C{target} completed L{SetClientStatus}; it showed C{previous} before.
    """

    target: JID
    previous: RemoteStatus


@dataclass(frozen=True)
class SetStatusFailed:
    """
    C{target} refused L{SetClientStatus}, or the command could not be sent.
    """

    target: JID
    reason: str


@dataclass(frozen=True)
class SetStatusTimedOut:
    """
    C{target} did not complete L{SetClientStatus} in time.
    """

    target: JID
    reason: str


@dataclass(frozen=True)
class RestoreAnswered:
    """
    C{target} completed L{RestoreClientStatus}.
    """

    target: JID


@dataclass(frozen=True)
class RestoreFailed:
    """
    L{RestoreClientStatus} failed: refused, timed out, or bounced.

    @ivar condition: the stanza error condition when it bounced, else
        L{None}.
    """

    target: JID
    reason: str
    condition: str | None = None


@dataclass(frozen=True)
class RestoreInterrupted:
    """
    L{RestoreClientStatus} got no answer because the stream went away.
    """

    target: JID
    reason: str


@dataclass(frozen=True)
class SavedStatusAdopted:
    """
    Before a restart, C{target} was set to dnd and C{saved} is what it
    showed before: take it over, so that it gets C{saved} back once no call
    is left (if it still shows our dnd).
    """

    target: JID
    saved: RemoteStatus


@dataclass(frozen=True)
class TimerFired:
    """
    The timer of the latest L{StartTimer} fired.
    """


Event: TypeAlias = (
    TelephonyChanged | SessionReady | SessionLost | ResourceChanged | CommandsKnown
    | CommandsFailed | SetStatusAnswered | SetStatusFailed | SetStatusTimedOut | RestoreAnswered
    | RestoreFailed | RestoreInterrupted | SavedStatusAdopted | TimerFired
)  # fmt: skip


# -- actions -------------------------------------------------------------------


@dataclass(frozen=True)
class SendOwnPresence:
    """
    Send the gateway's presence: dnd with C{text}, or plain available when
    C{text} is L{None}, at C{priority}.
    """

    text: str | None
    priority: int


@dataclass(frozen=True)
class QueryCommands:
    """
    Find out which commands C{target} offers (C{presence} is what it showed
    when asked); answer with L{CommandsKnown} or L{CommandsFailed}.
    """

    target: JID
    presence: ResourcePresence


@dataclass(frozen=True)
class LearnCommands:
    """
    A client came or changed its caps: learn its commands now, so that a
    call does not wait for them. Answer with L{CommandsKnown} or
    L{CommandsFailed}.
    """

    target: JID
    presence: ResourcePresence


@dataclass(frozen=True)
class ForgetCommands:
    """
    A client left: what is known of its commands without hashed caps is
    dropped.
    """

    target: JID
    presence: ResourcePresence


@dataclass(frozen=True)
class SetClientStatus:
    """
    Set C{target} to dnd with C{text} by remote control (command C{node}),
    keeping its priority; C{current} is what it shows as far as we know.
    Answer with L{SetStatusAnswered}, L{SetStatusFailed} or
    L{SetStatusTimedOut}.
    """

    target: JID
    node: str
    text: str
    current: RemoteStatus | None


@dataclass(frozen=True)
class RestoreClientStatus:
    """
    Put C{saved} back on C{target}. Answer with L{RestoreAnswered},
    L{RestoreFailed} or L{RestoreInterrupted}.
    """

    target: JID
    node: str
    saved: RemoteStatus


@dataclass(frozen=True)
class SaveStatus:
    """
    Keep C{status} as what C{target} showed before we changed it, across
    restarts; C{(None, None)} once nothing is to be put back.
    """

    target: JID | None
    status: RemoteStatus | None


@dataclass(frozen=True)
class StartTimer:
    """
    Fire L{TimerFired} in C{delay} seconds, replacing any timer started
    before.
    """

    delay: float


@dataclass(frozen=True)
class Log:
    """
    A line for the log (about this user).
    """

    level: LogLevel
    format: str
    fields: Mapping[str, object] = field(default_factory=dict)


Action: TypeAlias = (
    SendOwnPresence | QueryCommands | LearnCommands | ForgetCommands | SetClientStatus
    | RestoreClientStatus | SaveStatus | StartTimer | Log
)  # fmt: skip
