"""
XEP-0050 ad-hoc commands client for XEP-0146 remote control: set the status
of another client of the same user, and put it back afterwards.

What the clients that answer do, as measured:

  - Psi (remote control enabled) answers C{rc#set-status} with status
    C{executing} and B{no sessionid}, and resets the priority to 0 when
    C{status-priority} is left out of the submitted form;
  - Tkabber requires C{status-priority};
  - mcabber (1.1.2) answers the command list (disco#items on the commands
    node) with its C{<query/>} in the commands namespace instead of
    disco#items, and its set-status form has no priority field (an extra
    field is ignored) and no value in C{status-message}: the message it
    shows is taken from its last presence;
  - Gajim before 1.4.4 offered node C{change-status} with fields
    C{presence-type} and C{presence-desc} instead.

So we always submit C{status-priority} (the client's current value), send
the sessionid only when one was given, and speak Gajim's form when that is
the node a client offers. Commands only ever go to other resources of the
user's own bare JID: remote control of anyone else's client is refused
here, whatever the caller asks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.words.protocols.jabber import error, xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from sipxmpp.xmpp.resources import isGatewayResource
from sipxmpp.xmpp.wokkelcompat import data_form

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_RC = "http://jabber.org/protocol/rc"
NODE_SET_STATUS = "http://jabber.org/protocol/rc#set-status"
NODE_LEGACY_GAJIM = "change-status"

# What we look for, best first.
STATUS_NODES = (NODE_SET_STATUS, NODE_LEGACY_GAJIM)

SendRequest = Callable[[domish.Element, "float | None"], Deferred[domish.Element]]


class RemoteControlError(Exception):
    """
    A remote-control operation did not change the client's status.
    """


class NotOwnResource(RemoteControlError):
    """
    The target is not another resource of the user's own bare JID.
    """


class CommandFailed(RemoteControlError):
    """
    The client answered with an error, canceled, or asked for more.

    @ivar condition: the stanza error condition when the answer was an
        error (C{service-unavailable} when the client is not online), else
        L{None}.
    """

    def __init__(self, message: str, condition: str | None = None) -> None:
        super().__init__(message)
        self.condition = condition


class CommandTimeout(RemoteControlError):
    """
    The client did not answer in time.
    """


@dataclass(frozen=True)
class RemoteStatus:
    """
    A client's status as the remote-control form shows it.

    @ivar status: the XEP-0146 value: C{chat}, C{online}, C{away}, C{xa},
        C{dnd}, C{invisible} or C{offline}.
    @ivar priority: the priority, or L{None} when the client's form has none.
    @ivar message: the status message (empty for none).
    """

    status: str
    priority: int | None
    message: str


def showToStatus(show: str | None) -> str:
    """
    Map a presence C{<show/>} (L{None} for plain available) to the value of
    the C{status} field.
    """
    return show or "online"


def statusToShow(status: str) -> str | None:
    """
    The inverse of L{showToStatus}, for the values that are a C{<show/>}.
    """
    return None if status == "online" else status


def checkOwnResource(ownJID: JID, target: JID, gatewayBase: str | None = None) -> None:
    """
    @param gatewayBase: C{[xmpp] resource}: no gateway instance's resource
        (L{isGatewayResource}) is a client either.
    @raise NotOwnResource: unless C{target} is a full JID of the same bare
        JID as C{ownJID}, other than C{ownJID} itself (or another gateway
        instance's).
    """
    if (
        target.userhost() != ownJID.userhost()
        or not target.resource
        or target.resource == ownJID.resource
        or (gatewayBase is not None and isGatewayResource(gatewayBase, target.resource))
    ):
        raise NotOwnResource(
            f"refusing remote control of {target.full()}: only other resources of "
            f"{ownJID.userhost()} may be controlled"
        )


def _commandOf(iq: domish.Element) -> domish.Element | None:
    for child in iq.elements():
        if child.name == "command" and child.uri == NS_COMMANDS:
            command: domish.Element = child
            return command
    return None


def _formOf(command: domish.Element) -> Any:
    for child in command.elements():
        if child.name == "x" and child.uri == data_form.NS_X_DATA:
            return data_form.Form.fromElement(child)
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return str(value)


def _int(value: Any) -> int | None:
    try:
        return max(-128, min(127, int(str(value).strip())))
    except (TypeError, ValueError):
        return None


class RemoteControl:
    """
    Remote control of the other clients of one user.
    """

    log = Logger()

    def __init__(self, ownJID: JID, sendRequest: SendRequest, clock: IReactorTime,
                 timeout: float, gatewayBase: str | None = None) -> None:  # fmt: skip
        """
        @param ownJID: the gateway's full JID.
        @param gatewayBase: C{[xmpp] resource}: no gateway instance's
            resource is ever controlled (L{checkOwnResource}).
        @param sendRequest: sends an iq and returns its result (see
            L{sipxmpp.xmpp.session.IXMPPSession.sendRequest}).
        @param clock: for the timeout of every operation.
        @param timeout: seconds an operation (all its round trips) may take.
        """
        self.ownJID = ownJID
        self.gatewayBase = gatewayBase
        self._sendRequest = sendRequest
        self.clock = clock
        self.timeout = timeout

    # -- public ------------------------------------------------------------

    def commands(self, target: JID) -> Deferred[frozenset[str]]:
        """
        Ask C{target} for the nodes of its ad-hoc commands (disco#items on
        the commands node). A client that does not answer disco#items with
        a result offers none. The items are also read from a C{<query/>} in
        the commands namespace, as mcabber 1.1.2 answers: that is accepted
        only because C{target} is another resource of the user's own bare
        JID (nothing else is asked).
        """
        try:
            checkOwnResource(self.ownJID, target, self.gatewayBase)
        except NotOwnResource:
            return defer.fail()
        iq = self._iq(target, "get")
        query = iq.addElement((NS_DISCO_ITEMS, "query"))
        query["node"] = NS_COMMANDS

        async def run() -> frozenset[str]:
            try:
                result = await self._sendRequest(iq, self.timeout)
            except error.StanzaError:
                return frozenset()
            nodes = set()
            for child in result.elements():
                if child.name == "query" and child.uri in (NS_DISCO_ITEMS, NS_COMMANDS):
                    for item in child.elements():
                        if item.name == "item" and item.getAttribute("node"):
                            nodes.add(item["node"])
            return frozenset(nodes)

        return self._bounded(run())

    def discoInfo(self, target: JID, node: str | None) -> Deferred[domish.Element]:
        """
        Ask C{target} for its disco#info on C{node} (for XEP-0115, the caps
        C{node#ver}); return the C{<query/>} of its answer.
        """
        try:
            checkOwnResource(self.ownJID, target, self.gatewayBase)
        except NotOwnResource:
            return defer.fail()
        iq = self._iq(target, "get")
        query = iq.addElement((NS_DISCO_INFO, "query"))
        if node:
            query["node"] = node

        async def run() -> domish.Element:
            result = await self._request(iq)
            for child in result.elements():
                if child.name == "query" and child.uri == NS_DISCO_INFO:
                    answer: domish.Element = child
                    return answer
            raise CommandFailed(f"{target.full()} answered disco#info without a query")

        return self._bounded(run())

    def setStatus(self, target: JID, node: str, status: str, message: str,
                  current: RemoteStatus | None = None) -> Deferred[RemoteStatus]:  # fmt: skip
        """
        Set C{target}'s status with command C{node}, keeping its priority.

        @param current: what the gateway knows of the client's status from
            its presence: the priority to send when the form has no
            priority field, and the values to return for Gajim's legacy form
            (which does not show the current ones).
        @return: the status the client had before (to restore later).
        """
        saved: list[RemoteStatus] = []

        def values(previous: RemoteStatus) -> RemoteStatus:
            saved.append(previous)
            return RemoteStatus(status, previous.priority, message)

        d = self._change(target, node, values, current)
        return d.addCallback(lambda _: saved[0])

    def restoreStatus(self, target: JID, node: str, previous: RemoteStatus) -> Deferred[None]:
        """
        Put back C{previous} (as returned by L{setStatus}).
        """

        def values(now: RemoteStatus) -> RemoteStatus:
            priority = previous.priority if previous.priority is not None else now.priority
            return RemoteStatus(previous.status, priority, previous.message)

        return self._change(target, node, values, previous).addCallback(lambda _: None)

    # -- the command -------------------------------------------------------

    def _change(
        self,
        target: JID,
        node: str,
        values: Callable[[RemoteStatus], RemoteStatus],
        current: RemoteStatus | None,
    ) -> Deferred[None]:
        try:
            checkOwnResource(self.ownJID, target, self.gatewayBase)
        except NotOwnResource:
            return defer.fail()
        if node not in STATUS_NODES:
            return defer.fail(CommandFailed(f"unsupported command node {node!r}"))

        sessionid: list[str] = []

        async def run() -> None:
            try:
                await self._runCommand(target, node, values, current, sessionid)
            except CancelledError:
                # Timed out: tell the client to drop its command session, if
                # it told us one; an answer, if any, is of no interest.
                if sessionid:
                    self._sendCancel(target, node, sessionid[0])
                raise

        return self._bounded(run())

    async def _runCommand(
        self,
        target: JID,
        node: str,
        values: Callable[[RemoteStatus], RemoteStatus],
        current: RemoteStatus | None,
        sessionid: list[str],
    ) -> None:
        execute = self._iq(target, "set")
        command = execute.addElement((NS_COMMANDS, "command"))
        command["node"] = node
        command["action"] = "execute"
        answer = _commandOf(await self._request(execute))
        if answer is None:
            raise CommandFailed(f"{target.full()} answered {node} without a command")
        if answer.getAttribute("sessionid"):
            sessionid.append(answer["sessionid"])
        state = answer.getAttribute("status")
        form = _formOf(answer)
        if state != "executing" or form is None:
            raise CommandFailed(
                f"{target.full()} answered {node} with status {state!r}"
                + ("" if form is not None else " and no form")
            )

        if node == NODE_LEGACY_GAJIM:
            shown = RemoteStatus(
                _text(form.get("presence-type")) or "online",
                None,
                _text(form.get("presence-desc")),
            )
            # Gajim's form does not show the current status; the presence
            # we tracked does.
            now = current if current is not None else shown
            wanted = values(now)
            submit = data_form.Form("submit", formNamespace=form.formNamespace)
            submit.addField(data_form.Field(var="presence-type", value=wanted.status))
            submit.addField(data_form.Field("text-multi", var="presence-desc",
                                            values=wanted.message.split("\n")))  # fmt: skip
        else:
            priority = _int(form.get("status-priority"))
            if priority is None and current is not None:
                priority = current.priority
            message = form.fields.get("status-message")
            if message is not None and message.values:
                text = _text(message.values)
            else:
                # mcabber's form does not show the current message; the
                # presence we tracked does.
                text = current.message if current is not None else ""
            now = RemoteStatus(
                _text(form.get("status")) or (current.status if current else "online"),
                priority,
                text,
            )
            wanted = values(now)
            submit = data_form.Form("submit", formNamespace=NS_RC)
            submit.addField(data_form.Field(var="status", value=wanted.status))
            if wanted.priority is not None:
                # Always sent: Psi resets the priority to 0 without it.
                submit.addField(data_form.Field(var="status-priority", value=str(wanted.priority)))
            submit.addField(data_form.Field("text-multi", var="status-message",
                                            values=wanted.message.split("\n")))  # fmt: skip

        iq = self._iq(target, "set")
        command = iq.addElement((NS_COMMANDS, "command"))
        command["node"] = node
        if sessionid:
            command["sessionid"] = sessionid[0]
        command.addChild(submit.toElement())
        answer = _commandOf(await self._request(iq))
        state = answer.getAttribute("status") if answer is not None else None
        if state == "completed":
            return
        if state == "executing" and sessionid:
            self._sendCancel(target, node, sessionid[0])
        raise CommandFailed(f"{target.full()} answered the submitted {node} with status {state!r}")

    # -- plumbing ----------------------------------------------------------

    def _iq(self, target: JID, kind: str) -> domish.Element:
        iq = domish.Element((None, "iq"))
        iq["type"] = kind
        iq["to"] = target.full()
        iq.addUniqueId()
        return iq

    async def _request(self, iq: domish.Element) -> domish.Element:
        try:
            return await self._sendRequest(iq, self.timeout)
        except error.StanzaError as e:
            raise CommandFailed(f"{iq['to']} answered with error {e.condition}",
                                e.condition) from None

    def _sendCancel(self, target: JID, node: str, sessionid: str) -> None:
        iq = self._iq(target, "set")
        command = iq.addElement((NS_COMMANDS, "command"))
        command["node"] = node
        command["sessionid"] = sessionid
        command["action"] = "cancel"
        self._sendRequest(iq, self.timeout).addErrback(lambda _: None)

    def _bounded(self, coroutine: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred.fromCoroutine(coroutine)
        d.addTimeout(self.timeout, self.clock)

        def timedOut(reason: Any) -> Any:
            if reason.check(defer.TimeoutError, xmlstream.TimeoutError):
                raise CommandTimeout(f"no answer within {self.timeout:g} s")
            return reason

        return d.addErrback(timedOut)
