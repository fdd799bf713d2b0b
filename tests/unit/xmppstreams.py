"""
Stream stubs for the XMPP unit tests: a session whose stream is a real
twisted.words L{xmlstream.XmlStream} with wokkel's L{StreamManager}, over a
L{StringTransport}. Tests read what was sent as elements and feed what the
server or the user's clients answer as XML text.

Test-only helpers, no tests: trial does not collect this module.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from sipxmpp.xmpp.session import ElementRequest, IXMPPSession, NotConnected
from sipxmpp.xmpp.wokkelcompat import subprotocols

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_XDATA = "jabber:x:data"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
CAPS_NODE = "http://psi-plus.com"
STREAM_HEADER = (
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    " from='example.test' id='s1' version='1.0'>"
)


def child(element: domish.Element, name: str, uri: str | None = None) -> domish.Element | None:
    """
    Return the first child element called C{name} (in C{uri} if given).
    """
    for c in element.elements():
        if c.name == name and (uri is None or c.uri == uri):
            return c
    return None


def formValues(command: domish.Element) -> dict[str, list[str]]:
    """
    Return the fields of the data form in C{command}: var -> values.
    """
    x = child(command, "x", NS_XDATA)
    assert x is not None, command.toXml()
    values: dict[str, list[str]] = {}
    for field in x.elements():
        if field.name == "field":
            values[field["var"]] = [str(v) for v in field.elements() if v.name == "value"]
    return values


@implementer(IXMPPSession)
class FakeSession:
    """
    An L{IXMPPSession} whose stream is under the test's control.

    @ivar sent: every element sent on any stream, in order.
    """

    def __init__(self, clock: Clock, jid: str = "alice@example.test/sipxmpp") -> None:
        self.clock = clock
        self.jid = JID(jid)
        self.state = "stopped"
        self.sent: list[domish.Element] = []
        self.started = 0
        self.stopped = 0
        self.xs: xmlstream.XmlStream | None = None
        self.transport: StringTransport | None = None
        self.factory = xmlstream.XmlStreamFactory(xmlstream.Authenticator())
        self.streamManager = subprotocols.StreamManager(self.factory, reactor=clock)
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    def addHandler(self, handler: Any) -> None:
        handler.setHandlerParent(self.streamManager)

    def send(self, element: domish.Element) -> bool:
        if not self._ready or self.xs is None:
            return False
        self.xs.send(element)
        return True

    def sendRequest(self, element: domish.Element, timeout: float | None = None) -> Deferred[domish.Element]:
        if not self._ready:
            return defer.fail(NotConnected("not connected"))
        d: Deferred[domish.Element] = self.streamManager.request(ElementRequest(element, timeout))
        return d

    def start(self) -> None:
        self.started += 1
        self.state = "connecting"

    def stop(self) -> Deferred[None]:
        self.stopped += 1
        self.state = "stopped"
        if self.xs is not None:
            self.disconnect()
        return defer.succeed(None)

    # -- test controls -----------------------------------------------------

    def connect(self) -> None:
        """
        Bring a new stream up, authenticated and bound.
        """
        xs = self.factory.buildProtocol(None)
        original = xs.send

        def recordingSend(obj: Any) -> None:
            if isinstance(obj, domish.Element):
                self.sent.append(obj)
            original(obj)

        xs.send = recordingSend
        self.transport = StringTransport()
        xs.makeConnection(self.transport)
        xs.dataReceived(STREAM_HEADER)
        self.xs = xs
        self._ready = True
        self.state = "connected"
        xs.dispatch(xs, xmlstream.STREAM_AUTHD_EVENT)

    def disconnect(self) -> None:
        xs, self.xs = self.xs, None
        self._ready = False
        self.state = "reconnecting"
        assert xs is not None
        xs.connectionLost(Failure(ConnectionDone()))

    def receive(self, xml: str) -> None:
        """
        Feed C{xml} (whole stanzas) as if the server sent it.
        """
        assert self.xs is not None
        self.xs.dataReceived(xml)

    def take(self) -> list[domish.Element]:
        """
        Return and forget what was sent so far.
        """
        sent, self.sent = self.sent, []
        return sent

    def _takeNamed(self, name: str) -> list[domish.Element]:
        taken = [e for e in self.sent if e.name == name]
        self.sent = [e for e in self.sent if e.name != name]
        return taken

    def iqs(self) -> list[domish.Element]:
        """
        Return and forget the iqs sent so far (other stanzas stay), but the
        XEP-0115 disco#info queries (see L{discoInfos}).
        """
        taken = [e for e in self.sent if e.name == "iq" and not isDiscoInfo(e)]
        self.sent = [e for e in self.sent if e.name != "iq" or isDiscoInfo(e)]
        return taken

    def discoInfos(self) -> list[domish.Element]:
        """
        Return and forget the disco#info queries sent so far.
        """
        taken = [e for e in self.sent if e.name == "iq" and isDiscoInfo(e)]
        self.sent = [e for e in self.sent if not (e.name == "iq" and isDiscoInfo(e))]
        return taken

    def answerDiscoInfos(self) -> None:
        """
        Answer every disco#info query sent so far as the client whose caps
        name (see L{capsVer}) its node names; unknown ones get an error.
        """
        for iq in self.discoInfos():
            query = child(iq, "query", NS_DISCO_INFO)
            assert query is not None
            node = query.getAttribute("node") or ""
            name = CAPS_NAMES.get(node.partition("#")[2])
            if name is None:
                self.answer(iq, "<error type='cancel'><item-not-found "
                                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
                            kind="error")  # fmt: skip
            else:
                self.answer(iq, capsInfo(name, node))

    def presences(self) -> list[domish.Element]:
        """
        Return and forget the presences sent so far (other stanzas stay).
        """
        return self._takeNamed("presence")

    def answer(self, iq: domish.Element, payload: str = "", kind: str = "result") -> None:
        """
        Answer C{iq} as its addressee.
        """
        sender = iq.getAttribute("to") or "example.test"
        self.receive(
            f"<iq type='{kind}' id='{iq['id']}' from='{sender}' to='{self.jid.full()}'>"
            f"{payload}</iq>"
        )


def isDiscoInfo(iq: domish.Element) -> bool:
    return iq.getAttribute("type") == "get" and child(iq, "query", NS_DISCO_INFO) is not None


# ver -> the caps name it was made from (L{capsVer}).
CAPS_NAMES: dict[str, str] = {}


def capsInfo(name: str, node: str | None = None) -> str:
    """
    The disco#info answer of a client whose caps are named C{name}: one
    identity called C{name}, the caps and commands features.
    """
    nodeAttr = f" node='{node}'" if node else ""
    return (
        f"<query xmlns='{NS_DISCO_INFO}'{nodeAttr}>"
        f"<identity category='client' type='pc' name='{name}'/>"
        f"<feature var='{NS_CAPS}'/><feature var='{NS_COMMANDS}'/></query>"
    )


def capsVer(name: str) -> str:
    """
    The XEP-0115 sha-1 ver that L{capsInfo} of C{name} verifies.
    """
    s = f"client/pc//{name}<{NS_CAPS}<{NS_COMMANDS}<".encode()
    ver = base64.b64encode(hashlib.sha1(s).digest()).decode()
    CAPS_NAMES[ver] = name
    return ver


def rcForm(status: str = "online", priority: str | None = "5", message: str = "working",
           formType: str = "form") -> str:  # fmt: skip
    """
    The XEP-0146 set-status form as a client shows it.
    """
    fields = [
        "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/rc</value></field>",
        f"<field var='status' type='list-single'><value>{status}</value>"
        "<option><value>online</value></option><option><value>dnd</value></option></field>",
    ]
    if priority is not None:
        fields.append(f"<field var='status-priority' type='text-single'><value>{priority}</value></field>")
    fields.append(f"<field var='status-message' type='text-multi'><value>{message}</value></field>")
    return f"<x xmlns='{NS_XDATA}' type='{formType}'>{''.join(fields)}</x>"


def commandAnswer(node: str, status: str, sessionid: str | None = None, body: str = "") -> str:
    sid = f" sessionid='{sessionid}'" if sessionid else ""
    return f"<command xmlns='{NS_COMMANDS}' node='{node}' status='{status}'{sid}>{body}</command>"


def itemsAnswer(jid: str, nodes: list[str]) -> str:
    items = "".join(f"<item jid='{jid}' node='{n}' name='x'/>" for n in nodes)
    return (
        "<query xmlns='http://jabber.org/protocol/disco#items' "
        f"node='http://jabber.org/protocol/commands'>{items}</query>"
    )


def presenceXML(frm: str, show: str | None = None, status: str | None = None,
                priority: int = 0, caps: str | None = None, kind: str | None = None) -> str:  # fmt: skip
    """
    A presence from C{frm}; C{caps} names its XEP-0115 caps (the ver is
    L{capsVer} of it, answered by L{FakeSession.answerDiscoInfos}).
    """
    parts = []
    if show:
        parts.append(f"<show>{show}</show>")
    if status is not None:
        parts.append(f"<status>{status}</status>")
    parts.append(f"<priority>{priority}</priority>")
    if caps:
        parts.append(
            f"<c xmlns='{NS_CAPS}' hash='sha-1' node='{CAPS_NODE}' ver='{capsVer(caps)}'/>"
        )
    kindAttr = f" type='{kind}'" if kind else ""
    return f"<presence from='{frm}' to='alice@example.test/sipxmpp'{kindAttr}>{''.join(parts)}</presence>"
