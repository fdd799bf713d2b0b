"""
C{sipxmpp-admin account check}: log in to XMPP as a provisioned account,
the way the gateway would, and report.

It logs in with C{[xmpp] resource} without an instance name (so a running
gateway's session, whose resource names its instance, is not kicked) and
negative priority (so it never receives the user's messages), sends an available presence to learn the
user's other online resources (the server sends them to a new resource),
asks each one by service discovery whether it offers XEP-0146's
C{set-status} command, prints what it found, and logs out.

Runs its own reactor: it is a separate process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TextIO

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import error
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from sipxmpp.config import Settings
from sipxmpp.xmpp.accounts import Account
from sipxmpp.xmpp.wokkelcompat import subprotocols

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_COMMANDS = "http://jabber.org/protocol/commands"
NODE_SET_STATUS = "http://jabber.org/protocol/rc#set-status"

OK = 0
CHECK_FAILED = 5
PROGRAM = "sipxmpp-admin"


@dataclass
class Resource:
    """
    One of the user's online resources, as its presence described it.
    """

    jid: str
    show: str
    priority: int
    remoteControl: str = "not asked"


class _Probe(subprotocols.XMPPHandler):  # type: ignore[misc]
    """
    Fires C{loggedIn} once the stream is ready and collects presences.
    """

    def __init__(self, priority: int) -> None:
        super().__init__()
        self.priority = priority
        self.loggedIn: Deferred[None] = Deferred()
        self.resources: dict[str, Resource] = {}

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/presence", self._presence)
        presence = domish.Element((None, "presence"))
        presence.addElement("priority", content=str(self.priority))
        presence.addElement("status", content="sipxmpp account check")
        self.xmlstream.send(presence)
        if not self.loggedIn.called:
            self.loggedIn.callback(None)

    def _presence(self, element: domish.Element) -> None:
        sender = element.getAttribute("from")
        if not sender:
            return
        try:
            jid = JID(sender)
        except InvalidFormat:
            return
        me = self.xmlstream.authenticator.jid
        if jid.userhost() != me.userhost() or jid.resource is None or jid.full() == me.full():
            return
        if element.getAttribute("type") == "unavailable":
            self.resources.pop(jid.full(), None)
            return
        if element.getAttribute("type") not in (None, "available"):
            return
        show = "available"
        priority = 0
        for child in element.elements():
            if child.name == "show" and str(child).strip():
                show = str(child).strip()
            elif child.name == "priority":
                try:
                    priority = int(str(child).strip())
                except ValueError:
                    priority = 0
        self.resources[jid.full()] = Resource(jid.full(), show, priority)


def _query(to: str, namespace: str, node: str | None = None) -> domish.Element:
    iq = domish.Element((None, "iq"))
    iq["type"] = "get"
    iq["to"] = to
    query = iq.addElement((namespace, "query"))
    if node is not None:
        query["node"] = node
    return iq


def _children(result: domish.Element, name: str) -> list[domish.Element]:
    query = next((c for c in result.elements() if c.name == "query"), None)
    if query is None:
        return []
    return [c for c in query.elements() if c.name == name]


async def _askRemoteControl(session: Any, resource: Resource, timeout: float) -> None:
    try:
        info = await session.sendRequest(_query(resource.jid, NS_DISCO_INFO), timeout)
        features = {f.getAttribute("var") for f in _children(info, "feature")}
        if NS_COMMANDS not in features:
            resource.remoteControl = "no (no ad-hoc commands)"
            return
        items = await session.sendRequest(_query(resource.jid, NS_DISCO_ITEMS, NS_COMMANDS),
                                          timeout)
        nodes = {i.getAttribute("node") for i in _children(items, "item")}
        resource.remoteControl = (
            "yes" if NODE_SET_STATUS in nodes else "no (ad-hoc commands without set-status)"
        )
    except error.StanzaError as e:
        resource.remoteControl = f"no (disco error: {e.condition})"
    except Exception as e:
        resource.remoteControl = f"unknown ({type(e).__name__}: {e})"


async def _check(reactor: Any, settings: Settings, account: Account, timeout: float,
                 wait: float, out: TextIO, err: TextIO) -> int:
    from sipxmpp.xmpp.session import SessionFactory

    factory = SessionFactory(reactor, settings.xmpp.session(), settings.xmpp.caFile)
    session = factory(account.jid, account.password, account.server)
    probe = _Probe(settings.xmpp.priority)
    session.addHandler(probe)
    failed: Deferred[str] = Deferred()

    def poll() -> None:
        state = str(getattr(session, "state", ""))
        if state.startswith("failed") and not failed.called:
            failed.callback(state[len("failed: "):] if ": " in state else state)

    poller = task.LoopingCall(poll)
    poller.clock = reactor
    poller.start(0.1)
    session.start()
    try:
        racing: list[Deferred[Any]] = [
            probe.loggedIn, failed, task.deferLater(reactor, timeout, lambda: None),
        ]
        winner = defer.DeferredList(
            racing,
            fireOnOneCallback=True, fireOnOneErrback=True, consumeErrors=True,
        )
        reason, index = await winner
        if index == 1:
            err.write(f"{PROGRAM}: error: XMPP login as {session.jid.full()} failed: {reason}\n")
            return CHECK_FAILED
        if index == 2:
            err.write(f"{PROGRAM}: error: XMPP login as {session.jid.full()} did not complete "
                      f"within {timeout:g} s (session: {session.state})\n")
            return CHECK_FAILED
        out.write(f"ok: logged in as {session.jid.full()}\n")
        await task.deferLater(reactor, wait, lambda: None)
        resources = sorted(probe.resources.values(), key=lambda r: (-r.priority, r.jid))
        for resource in resources:
            await _askRemoteControl(session, resource, min(timeout, 10.0))
        if not resources:
            out.write(f"no other resource of {account.jid.userhost()} is online\n")
        for r in resources:
            out.write(f"resource {r.jid}: {r.show}, priority {r.priority}, "
                      f"remote control: {r.remoteControl}\n")
        offering = sum(1 for r in resources if r.remoteControl == "yes")
        out.write(f"remote control offered by {offering} of {len(resources)} resource(s)\n")
        return OK
    finally:
        poller.stop()
        stopping = session.stop()
        bounded: list[Deferred[Any]] = [stopping, task.deferLater(reactor, 5.0, lambda: None)]
        await defer.DeferredList(
            bounded,
            fireOnOneCallback=True, consumeErrors=True,
        )


def runCheck(settings: Settings, account: Account, timeout: float, wait: float,
             out: TextIO, err: TextIO) -> int:
    """
    Run the check under a reactor of its own and return the exit status.
    """
    codes: list[int] = []

    def main(reactor: Any) -> Deferred[None]:
        d = Deferred.fromCoroutine(_check(reactor, settings, account, timeout, wait, out, err))

        def done(code: int) -> None:
            codes.append(code)

        def crashed(failure: Failure) -> None:
            err.write(f"{PROGRAM}: error: account check crashed: "
                      f"{type(failure.value).__name__}: {failure.getErrorMessage()}\n")
            codes.append(CHECK_FAILED)

        return d.addCallbacks(done, crashed)

    try:
        task.react(main)
    except SystemExit:
        pass
    return codes[0] if codes else CHECK_FAILED
