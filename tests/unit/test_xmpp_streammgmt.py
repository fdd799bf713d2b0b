"""
Tests for L{sipxmpp.xmpp.streammgmt}: the sans-IO L{AckQueue}, and XEP-0198
in a session (enable, acks, resumption, its failure and expiry) against a
scripted server on a StringTransport with a Clock.
"""

from __future__ import annotations

import gc
import re
import weakref
from dataclasses import replace

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from sipxmpp.xmpp import expatnames
from sipxmpp.xmpp.session import SessionSettings, XMPPSession
from sipxmpp.xmpp.streammgmt import (
    MODULUS,
    REQUEST_DELAY,
    REQUEST_EVERY,
    AckQueue,
    ManagedXmlStream,
    StreamNotResumed,
    isStanza,
)
from sipxmpp.xmpp.wokkelcompat import subprotocols
from tests.unit.test_xmpp_session import HEADER, PASSWORD, FakeEndpoint, Server

SM = "urn:xmpp:sm:3"
BIND_SM = (
    "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
    f"<sm xmlns='{SM}'/></stream:features>"
)
RESUME_SM = BIND_SM  # after SASL, a server offers both


def presence(n: int) -> domish.Element:
    element = domish.Element((None, "presence"))
    element["id"] = f"p{n}"
    return element


class AckQueueTests(SynchronousTestCase):
    def test_stanzas(self) -> None:
        self.assertTrue(isStanza(presence(1)))
        self.assertTrue(isStanza(domish.Element(("jabber:client", "iq"))))
        self.assertFalse(isStanza(domish.Element((SM, "r"))))
        self.assertFalse(isStanza("</stream:stream>"))

    def test_requestPacing(self) -> None:
        """
        The first stanza asks for an ack later; the tenth unrequested one
        at once; none while an ask is outstanding.
        """
        queue = AckQueue()
        self.assertEqual(queue.sent(presence(1)), "later")
        for n in range(2, REQUEST_EVERY):
            self.assertEqual(queue.sent(presence(n)), "later")
        self.assertEqual(queue.sent(presence(REQUEST_EVERY)), "now")
        queue.requested()
        self.assertEqual(queue.sent(presence(99)), "no")
        self.assertTrue(queue.acknowledged(REQUEST_EVERY))
        self.assertEqual([s["id"] for s in queue.unacked], ["p99"])  # type: ignore[index]
        self.assertFalse(queue.acknowledged(REQUEST_EVERY + 1))
        self.assertEqual(queue.unacked, [])

    def test_inbound(self) -> None:
        queue = AckQueue()
        for _ in range(3):
            queue.received()
        self.assertEqual(queue.inbound, 3)
        queue.inbound = MODULUS - 1
        queue.received()
        self.assertEqual(queue.inbound, 0)

    def test_ackTooHigh(self) -> None:
        queue = AckQueue()
        queue.sent(presence(1))
        self.assertRaises(ValueError, queue.acknowledged, 2)
        self.assertEqual(len(queue.unacked), 1)

    def test_partialAckAndAgain(self) -> None:
        queue = AckQueue()
        for n in range(1, 6):
            queue.sent(presence(n))
        queue.acknowledged(2)
        queue.acknowledged(2)  # the same ack twice drops nothing more
        self.assertEqual([s["id"] for s in queue.unacked], ["p3", "p4", "p5"])  # type: ignore[index]

    def test_wraps(self) -> None:
        queue = AckQueue()
        queue.outbound = MODULUS - 2
        for n in range(1, 5):
            queue.sent(presence(n))
        self.assertEqual(queue.outbound, 2)
        queue.acknowledged(0)
        self.assertEqual([s["id"] for s in queue.unacked], ["p3", "p4"])  # type: ignore[index]

    def test_bounded(self) -> None:
        """
        A server that never acks: only the last C{maxUnacked} stanzas are
        kept; a late ack still counts.
        """
        queue = AckQueue(maxUnacked=3)
        for n in range(1, 6):
            queue.sent(presence(n))
        self.assertEqual(queue.dropped, 2)
        self.assertEqual([s["id"] for s in queue.unacked], ["p3", "p4", "p5"])  # type: ignore[index]
        queue.acknowledged(1)
        self.assertEqual(len(queue.unacked), 3)
        queue.acknowledged(4)
        self.assertEqual([s["id"] for s in queue.unacked], ["p5"])  # type: ignore[index]
        self.assertEqual([s["id"] for s in queue.resumed(4)], ["p5"])  # type: ignore[index]

    def test_resumed(self) -> None:
        """
        After resumption, what the server did not handle goes again, and
        the count continues from the server's.
        """
        queue = AckQueue()
        for n in range(1, 5):
            queue.sent(presence(n))
        queue.requested()
        again = queue.resumed(1)
        self.assertEqual([s["id"] for s in again], ["p2", "p3", "p4"])  # type: ignore[index]
        self.assertEqual(queue.unacked, [])
        self.assertEqual(queue.outbound, 1)
        for stanza in again:
            queue.sent(stanza)
        queue.acknowledged(4)
        self.assertEqual(queue.unacked, [])


class Recorder(subprotocols.XMPPHandler):  # type: ignore[misc]
    """
    A handler as the publisher's: what it was told and saw.
    """

    def __init__(self) -> None:
        super().__init__()
        self.initialized = 0
        self.lost = 0
        self.messages: list[str] = []

    def connectionInitialized(self) -> None:
        self.initialized += 1
        self.xmlstream.addObserver("/message", self.onMessage)

    def connectionLost(self, reason: Failure) -> None:
        self.lost += 1
        super().connectionLost(reason)

    def onMessage(self, element: domish.Element) -> None:
        self.messages.append(element["id"])


class SessionTests(SynchronousTestCase):
    settings = SessionSettings(requireTLS=False, pingInterval=600, pingTimeout=20)

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.session = XMPPSession(self.clock, JID("alice@example.test"), PASSWORD, self.settings,
                                   tlsOptions=object(),  # type: ignore[arg-type]
                                   endpoint=self.endpoint, jitter=lambda: 0.5)  # fmt: skip
        self.recorder = Recorder()
        self.session.addHandler(self.recorder)

    def server(self) -> Server:
        protocol, transport = self.endpoint.connections[-1]
        return Server(protocol, transport)

    def login(self, maxSeconds: int = 60, offered: bool = True) -> Server:
        """
        Start, bind and enable stream management (resumable).
        """
        self.session.start()
        server = self.server()
        server.authenticate()
        server.heard()
        server.say(HEADER + (BIND_SM if offered else BIND_SM.replace(f"<sm xmlns='{SM}'/>", "")))
        ident = re.search(r"<iq [^>]*id=['\"]([^'\"]+)", server.heard())
        assert ident is not None
        server.say(f"<iq type='result' id='{ident.group(1)}'><bind xmlns='urn:ietf:params:xml:ns:"
                   "xmpp-bind'><jid>alice@example.test/sipxmpp</jid></bind></iq>")  # fmt: skip
        if offered:
            enable = server.heard()
            self.assertIn("<enable", enable)
            self.assertIn("resume='true'", enable.replace('"', "'"))
            server.say(f"<enabled xmlns='{SM}' id='sm-1' resume='true' max='{maxSeconds}'/>")
        self.assertEqual(self.session.state, "connected")
        self.assertEqual(self.recorder.initialized, 1)
        return server

    def test_acks(self) -> None:
        """
        The server's <r/> is answered with the stanzas handled; our
        stanzas are asked about once, REQUEST_DELAY after the first.
        """
        server = self.login()
        server.heard()
        server.say("<message id='m1' from='bob@example.test/x'/><message id='m2'/>")
        server.say(f"<r xmlns='{SM}'/>")
        self.assertRegex(server.heard(), r"<a xmlns=.urn:xmpp:sm:3. h=.2./>")
        for n in range(3):
            self.assertTrue(self.session.send(presence(n)))
        self.assertNotIn("<r", server.heard())
        self.clock.advance(REQUEST_DELAY)
        self.assertRegex(server.heard(), r"<r xmlns=.urn:xmpp:sm:3./>")
        server.say(f"<a xmlns='{SM}' h='3'/>")
        assert self.session.management.queue is not None
        self.assertEqual(self.session.management.queue.unacked, [])
        self.clock.advance(REQUEST_DELAY)
        self.assertEqual(server.heard(), "")

    def test_notOffered(self) -> None:
        server = self.login(offered=False)
        self.assertNotIn("enable", server.heard())
        self.assertIsNone(self.session.management.queue)
        server.lose(Failure(ConnectionLost("cut")))
        self.assertFalse(self.session.ready)
        self.assertEqual(self.recorder.lost, 1)

    def test_turnedOff(self) -> None:
        """
        C{streamManagement=False}: not enabled although offered; a lost
        connection is a new login.
        """
        session = XMPPSession(self.clock, JID("alice@example.test"), PASSWORD,
                              replace(self.settings, streamManagement=False),
                              tlsOptions=object(),  # type: ignore[arg-type]
                              endpoint=self.endpoint, jitter=lambda: 0.5)  # fmt: skip
        recorder = Recorder()
        session.addHandler(recorder)
        session.start()
        server = self.server()
        server.authenticate()
        server.heard()
        server.say(HEADER + BIND_SM)
        ident = re.search(r"<iq [^>]*id=['\"]([^'\"]+)", server.heard())
        assert ident is not None
        server.say(f"<iq type='result' id='{ident.group(1)}'><bind xmlns='urn:ietf:params:xml:ns:"
                   "xmpp-bind'><jid>alice@example.test/sipxmpp</jid></bind></iq>")  # fmt: skip
        self.assertEqual(session.state, "connected")
        self.assertNotIn("enable", server.heard())
        server.lose(Failure(ConnectionLost("cut")))
        self.assertEqual(recorder.lost, 1)
        self.assertTrue(session.state.startswith("reconnecting"), session.state)

    def test_resumed(self) -> None:
        """
        After a blip the stream is resumed: same JID, the handlers neither
        lose nor re-initialize it, their observers follow, an iq in flight
        is answered and what the server did not get goes again.
        """
        server = self.login()
        server.heard()
        server.say("<message id='m1'/>")
        self.session.send(presence(1))
        command = domish.Element((None, "iq"))
        command["type"], command["to"], command["id"] = "set", "alice@example.test/psi", "cmd-1"
        d = self.session.sendRequest(command)
        server.lose(Failure(ConnectionLost("cut")))
        self.assertTrue(self.session.ready)
        self.assertTrue(self.session.send(presence(2)))  # sent once resumed
        server = self._resume()
        sent = server.heard()
        self.assertRegex(sent, r"<resume xmlns=.urn:xmpp:sm:3. (previd=.sm-1. h=.1.|h=.1. previd=.sm-1.)/>")
        server.say(f"<resumed xmlns='{SM}' previd='sm-1' h='1'/>")
        sent = server.heard()
        self.assertNotIn("p1", sent)  # acknowledged by h=1
        self.assertLess(sent.index("cmd-1"), sent.index("p2"))
        self.assertNotIn("bind", sent)
        self.assertEqual(self.session.state, "connected")
        self.assertEqual(self.session.jid.full(), "alice@example.test/sipxmpp")
        self.assertEqual((self.recorder.initialized, self.recorder.lost), (1, 0))
        self.assertNoResult(d)
        server.say("<iq type='result' id='cmd-1' from='alice@example.test/psi'/>")
        self.assertEqual(self.successResultOf(d)["id"], "cmd-1")
        server.say("<message id='m2'/>")
        self.assertEqual(self.recorder.messages, ["m1", "m2"])
        server.say(f"<r xmlns='{SM}'/>")
        self.assertRegex(server.heard(), r"h=.3.")  # m1, then the iq result and m2
        self.assertEqual(self.session.management.resumptions, 1)

    def _resume(self) -> Server:
        self.assertTrue(self.session.state.startswith("resuming"), self.session.state)
        self.clock.advance(1)
        again = self.server()
        again.authenticate()
        again.heard()
        again.say(HEADER + RESUME_SM)
        return again

    def test_resumeFailed(self) -> None:
        """
        The server cannot resume: bind afresh on the same stream; the
        handlers see the loss and a new login, the iq in flight fails.
        """
        server = self.login()
        command = domish.Element((None, "iq"))
        command["type"], command["id"] = "set", "cmd-1"
        d = self.session.sendRequest(command)
        self.session.send(presence(1))
        server.lose(Failure(ConnectionLost("cut")))
        self.session.send(presence(2))
        server = self._resume()
        server.heard()
        server.say(f"<failed xmlns='{SM}'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                   "</failed>")  # fmt: skip
        failure = self.failureResultOf(d, StreamNotResumed)
        self.assertEqual(failure.getErrorMessage(),
                         "the XMPP stream was lost and not resumed: the server could not "
                         "resume the stream (item-not-found)")
        sent = server.heard()
        self.assertIn("bind", sent)
        ident = re.search(r"<iq [^>]*id=['\"]([^'\"]+)", sent)
        assert ident is not None
        server.say(f"<iq type='result' id='{ident.group(1)}'><bind xmlns='urn:ietf:params:xml:ns:"
                   "xmpp-bind'><jid>alice@example.test/sipxmpp</jid></bind></iq>")  # fmt: skip
        sent = server.heard()
        self.assertIn("<enable", sent)
        self.assertNotIn("p2", sent)  # nothing stale goes out on a fresh stream
        server.say(f"<enabled xmlns='{SM}' id='sm-2' resume='true'/>")
        self.assertEqual((self.recorder.initialized, self.recorder.lost), (2, 1))
        self.assertEqual(self.session.state, "connected")
        self.assertEqual(self.session.management.resumeID, "sm-2")

    def test_expired(self) -> None:
        """
        Not resumed within the server's max: the handlers learn the stream
        is lost, the iq fails, and the attempt under way is dropped.
        """
        server = self.login(maxSeconds=5)
        command = domish.Element((None, "iq"))
        command["type"], command["id"] = "set", "cmd-1"
        d = self.session.sendRequest(command)
        server.lose(Failure(ConnectionLost("cut")))
        self.clock.advance(1)
        attempt = self.server()
        self.assertIsNot(attempt.protocol, server.protocol)
        self.assertNoResult(d)
        self.clock.advance(4)
        self.assertIn("not resumed within 5 s", self.failureResultOf(d, StreamNotResumed).getErrorMessage())
        self.assertEqual(self.recorder.lost, 1)
        self.assertFalse(self.session.ready)
        self.assertTrue(attempt.transport.disconnecting)
        self.assertFalse(self.session.management.resuming)

    def test_cleanClose(self) -> None:
        """
        A server that closes the stream ended the session: nothing to
        resume.
        """
        server = self.login()
        server.say("</stream:stream>")
        server.lose()
        self.assertEqual(self.recorder.lost, 1)
        self.assertFalse(self.session.ready)
        self.assertTrue(self.session.state.startswith("reconnecting"), self.session.state)

    def test_stopWhileResuming(self) -> None:
        server = self.login()
        server.lose(Failure(ConnectionLost("cut")))
        d = self.session.stop()
        self.successResultOf(d)
        self.assertEqual(self.recorder.lost, 1)
        self.assertEqual(self.session.state, "stopped")
        self.assertFalse(self.session.management.resuming)

    def test_resumeAttemptLost(self) -> None:
        """
        An attempt to resume that loses its connection before the answer
        leaves the stream held; the next attempt resumes it.
        """
        server = self.login()
        server.lose(Failure(ConnectionLost("cut")))
        server = self._resume()
        server.lose(Failure(ConnectionLost("again")))
        self.assertTrue(self.session.state.startswith("resuming"), self.session.state)
        self.clock.advance(2)
        server = self.server()
        server.authenticate()
        server.heard()
        server.say(HEADER + RESUME_SM)
        self.assertIn("<resume", server.heard())
        server.say(f"<resumed xmlns='{SM}' previd='sm-1' h='0'/>")
        self.assertEqual(self.session.state, "connected")
        self.assertEqual((self.recorder.initialized, self.recorder.lost), (1, 0))

    def test_resumedWithBadCount(self) -> None:
        """
        A server claiming more stanzas than were sent: nothing is sent
        again, and the next ack is counted from its figure.
        """
        server = self.login()
        self.session.send(presence(1))
        server.lose(Failure(ConnectionLost("cut")))
        server = self._resume()
        server.heard()
        server.say(f"<resumed xmlns='{SM}' previd='sm-1' h='7'/>")
        self.assertNotIn("p1", server.heard())
        self.assertEqual(self.session.state, "connected")
        self.session.send(presence(2))
        server.say(f"<a xmlns='{SM}' h='8'/>")
        assert self.session.management.queue is not None
        self.assertEqual(self.session.management.queue.unacked, [])

    def test_streamError(self) -> None:
        """
        A stream error ends the session on the server's side: nothing to
        resume.
        """
        server = self.login()
        server.say("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                   "</stream:error>")  # fmt: skip
        server.lose(Failure(ConnectionLost("closed")))
        self.assertEqual(self.recorder.lost, 1)
        self.assertFalse(self.session.management.resuming)

    def test_bindStateKept(self) -> None:
        """
        The handlers' stream after resumption is the new one.
        """
        server = self.login()
        server.lose(Failure(ConnectionLost("cut")))
        server = self._resume()
        server.heard()
        server.say(f"<resumed xmlns='{SM}' previd='sm-1' h='0'/>")
        self.assertIs(self.recorder.xmlstream.transport, server.transport)
        self.assertIs(self.session.streamManager.xmlstream.transport, server.transport)



class SharedNamesTests(SynchronousTestCase):
    """
    L{ManagedXmlStream}'s parsers intern names in one dictionary.
    """

    def received(self) -> tuple[list[domish.Element], ManagedXmlStream]:
        xs = ManagedXmlStream(xmlstream.Authenticator())
        xs.makeConnection(StringTransport())
        elements: list[domish.Element] = []
        xs.addObserver("/presence", elements.append)
        xs.dataReceived(HEADER.encode() + b"<presence from='a@example.test/r'>"
                        b"<show>away</show></presence>")  # fmt: skip
        return elements, xs

    def test_shared(self) -> None:
        [first], one = self.received()
        [second], other = self.received()
        self.assertEqual((second.name, second["from"], str(second.show)),
                         ("presence", "a@example.test/r", "away"))  # fmt: skip
        self.assertIs(one.stream.parser.intern, other.stream.parser.intern)
        self.assertIn("jabber:client show", one.stream.parser.intern)

    def test_bounded(self) -> None:
        """
        Past MAX_SHARED_NAMES, new parsers share a new dictionary.
        """
        self.patch(expatnames, "MAX_SHARED_NAMES", 0)
        _, one = self.received()
        [second], other = self.received()
        self.assertEqual(str(second.show), "away")
        self.assertIsNot(one.stream.parser.intern, other.stream.parser.intern)


class ReleasedParserTests(SynchronousTestCase):
    """
    L{ManagedXmlStream} drops a parser it is done with, so that refcounting
    frees the old element stream and what it holds (the XmlStream, its
    connection) without waiting for the garbage collector.
    """

    def setUp(self) -> None:
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)

    def test_connectionLost(self) -> None:
        xs = ManagedXmlStream(xmlstream.Authenticator())
        xs.makeConnection(StringTransport())
        xs.dataReceived(HEADER.encode() + b"<presence from='a@example.test/r'/>")
        # The parser holds the element stream's methods: the stream gone,
        # its parser was freed too.
        stream = weakref.ref(xs.stream)
        xs.connectionLost(Failure(ConnectionLost()))
        self.assertIsNone(stream())
        self.assertIsNone(xs.stream)

    def test_restartedInAHandler(self) -> None:
        """
        A stream restarted from one of its parser's handlers (as SASL's
        C{<success/>} does) goes on with the new parser; the old one is
        freed once it returns.
        """
        xs = ManagedXmlStream(xmlstream.Authenticator())
        xs.makeConnection(StringTransport())
        xs.sendHeader = lambda: None  # type: ignore[method-assign]
        old: list[weakref.ref[domish.ExpatElementStream]] = []

        def restart(element: domish.Element) -> None:
            old.append(weakref.ref(xs.stream))
            xs.reset()

        xs.addOnetimeObserver("/success", restart)
        elements: list[domish.Element] = []
        xs.addObserver("/presence", elements.append)
        xs.dataReceived(HEADER.encode() + b"<success/>")
        self.assertEqual([ref() for ref in old], [None])
        xs.dataReceived(HEADER.encode() + b"<presence from='a@example.test/r'/>")
        self.assertEqual([e["from"] for e in elements], ["a@example.test/r"])

    def test_observersDropped(self) -> None:
        """
        Once the end of the stream is dispatched, its observers and
        initializers (which hold the stream) are dropped: nothing but
        refcounting is needed to free it.
        """

        class Handler:
            def __init__(self, xs: xmlstream.XmlStream) -> None:
                self.xmlstream = xs
                self.ended: list[Failure] = []
                xs.addObserver("/presence", self.presence)
                xs.addObserver(xmlstream.STREAM_END_EVENT, self.ended.append)

            def presence(self, element: domish.Element) -> None:
                pass

        # The session's authenticator outlives its streams, as its factory
        # does, and holds the last one.
        authenticator = xmlstream.Authenticator()
        xs = ManagedXmlStream(authenticator)
        xs.makeConnection(StringTransport())
        xs.initializers = [Handler(xs)]
        handler = Handler(xs)
        ref = weakref.ref(xs)
        xs.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(handler.ended), 1)
        del xs, handler
        ManagedXmlStream(authenticator)  # the next connection
        self.assertIsNone(ref())
