"""
Start one of the gateway's XMPP sessions in a test and wait for its login
to end one way or the other.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from sipxmpp.xmpp.session import XMPPSession


async def loginSettled(session: XMPPSession, clock: IReactorTime, timeout: float) -> str:
    """
    Start C{session}; return its first state that is C{connected} or
    C{failed...}. Fails with C{TimeoutError} after C{timeout} seconds.
    """
    done: Deferred[str] = Deferred()

    def changed(state: str) -> None:
        if (state == "connected" or state.startswith("failed")) and not done.called:
            done.callback(state)

    session.onStateChanged = changed
    session.start()
    return await done.addTimeout(timeout, clock)
