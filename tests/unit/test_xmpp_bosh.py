"""
Tests for the sans-IO core of L{sipxmpp.xmpp.bosh}: request ids, what goes
in each C{<body/>}, the session's limits, the XEP-0206 restart, and the
order in which responses are read. No sockets: the server's answers are
written here as XEP-0124's examples are.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from sipxmpp.xmpp.bosh import (
    NS_HTTPBIND,
    NS_XBOSH,
    BOSHClient,
    BOSHError,
    BOSHRequest,
    OutboundStream,
    Terminated,
    checkBOSHURL,
    isBOSHURL,
)

XML_LANG = ("http://www.w3.org/XML/1998/namespace", "lang")
FEATURES = (
    "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    "<mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>"
)


def parse(body: bytes) -> tuple[domish.Element, list[domish.Element]]:
    stream = domish.elementStream()
    roots: list[domish.Element] = []
    children: list[domish.Element] = []
    stream.DocumentStartEvent = roots.append
    stream.ElementEvent = children.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(body)
    return roots[0], children


def response(children: str = "", **attrs: str) -> bytes:
    extra = "".join(f" {k}='{v}'" for k, v in attrs.items())
    return (
        f"<body xmlns='{NS_HTTPBIND}' xmlns:stream='http://etherx.jabber.org/streams'"
        f"{extra}>{children}</body>"
    ).encode()


def drain(client: BOSHClient) -> list[bytes | Terminated]:
    out: list[bytes | Terminated] = []
    while (item := client.nextInbound()) is not None:
        out.append(item)
    return out


class Session:
    """
    A client whose session the server created: requests=2, hold=1,
    polling=5, the creation response carrying the stream features.
    """

    def __init__(self, rid: int = 1000, **created: str) -> None:
        self.client = BOSHClient(rid=rid, wait=60)
        self.client.open("example.test")
        [self.creation] = self.client.pull(0.0)
        attrs = {"sid": "S1", "wait": "60", "requests": "2", "hold": "1",
                 "polling": "5", "inactivity": "60", "ver": "1.6", "from": "example.test"}  # fmt: skip
        attrs.update(created)
        self.client.receive(self.creation.rid, response(FEATURES, **attrs))
        self.opened = drain(self.client)


class CreationTests(SynchronousTestCase):
    def test_creationRequest(self) -> None:
        """
        The first request asks for a session with the domain, BOSH 1.6,
        XMPP 1.0, the wait and hold=1, without a session id.
        """
        client = BOSHClient(rid=4242, wait=30)
        client.open("example.test")
        [request] = client.pull(0.0)
        body, children = parse(request.body)
        self.assertEqual(request.rid, 4242)
        self.assertEqual((body.uri, body.name), (NS_HTTPBIND, "body"))
        self.assertEqual(body["rid"], "4242")
        self.assertEqual(body["to"], "example.test")
        self.assertEqual(body[XML_LANG], "en")
        self.assertEqual(body["ver"], "1.6")
        self.assertEqual(body["wait"], "30")
        self.assertEqual(body["hold"], "1")
        self.assertEqual(body[(NS_XBOSH, "version")], "1.0")
        self.assertFalse(body.hasAttribute("sid"))
        self.assertEqual(children, [])

    def test_nothingElseBeforeTheSession(self) -> None:
        """
        Until the server answers the creation, stanzas wait.
        """
        client = BOSHClient(rid=1)
        client.open("example.test")
        client.pull(0.0)
        client.send(b"<presence xmlns='jabber:client'/>")
        self.assertEqual(client.pull(1.0), [])

    def test_randomRid(self) -> None:
        """
        Without a given one, the first rid is random and leaves room to
        count up below 2**53.
        """
        rids = {BOSHClient().rid for _ in range(20)}
        self.assertGreater(len(rids), 1)
        self.assertTrue(all(0 < r < 2**53 - 2**40 for r in rids))

    def test_streamHeaderThenFeatures(self) -> None:
        """
        The creation response becomes a stream header from the domain with
        the session id, then the features, as a TCP server would send.
        """
        session = Session()
        header, features = session.opened
        assert isinstance(header, bytes) and isinstance(features, bytes)
        self.assertIn(b"<stream:stream", header)
        self.assertIn(b"from='example.test'", header)
        self.assertIn(b"id='S1'", header)
        self.assertIn(b"version='1.0'", header)
        root, [element] = parse(header + features + b"</stream:stream>")
        self.assertEqual((element.uri, element.name), (xmlstream.NS_STREAMS, "features"))

    def test_serverLimitsAdopted(self) -> None:
        """
        The server's wait, hold, requests, polling and inactivity replace
        ours.
        """
        client = Session(wait="30", requests="3", hold="2", polling="7", inactivity="90").client
        self.assertEqual((client.wait, client.hold, client.requests), (30, 2, 3))
        self.assertEqual((client.polling, client.inactivity), (7.0, 90.0))
        self.assertEqual(client.sid, "S1")

    def test_noSid(self) -> None:
        """
        A creation response without a session id is an error.
        """
        client = BOSHClient(rid=1)
        client.open("example.test")
        [request] = client.pull(0.0)
        self.assertRaises(BOSHError, client.receive, request.rid, response())

    def test_notBOSH(self) -> None:
        """
        An answer that is not a C{<body/>} of XEP-0124 is an error.
        """
        for answer in (b"<html><body/></html>", b"<body xmlns='"):
            client = BOSHClient(rid=1)
            client.open("example.test")
            [request] = client.pull(0.0)
            self.assertRaises(BOSHError, client.receive, request.rid, answer)


class RequestTests(SynchronousTestCase):
    def test_onePendingForInbound(self) -> None:
        """
        Once the session exists, one empty request is always pending, with
        the next rid and the session id.
        """
        session = Session(rid=1000)
        [poll] = session.client.pull(0.0)
        body, children = parse(poll.body)
        self.assertEqual(poll.rid, 1001)
        self.assertEqual((body["rid"], body["sid"]), ("1001", "S1"))
        self.assertEqual(children, [])
        self.assertEqual(session.client.pull(1.0), [])

    def test_stanzasBesideTheHeldRequest(self) -> None:
        """
        A stanza goes at once in a second request (requests=2); more wait
        for an answer, then go together in the next rid.
        """
        client = Session(rid=1000).client
        [poll] = client.pull(0.0)
        client.send(b"<presence xmlns='jabber:client'/>")
        [first] = client.pull(0.0)
        self.assertEqual(first.rid, 1002)
        client.send(b"<message xmlns='jabber:client' to='a@example.test'/>")
        client.send(b"<iq xmlns='jabber:client' type='get' id='x'/>")
        self.assertEqual(client.pull(0.0), [])
        self.assertEqual(client.inFlight, 2)
        client.receive(poll.rid, response())
        [second] = client.pull(0.0)
        _, children = parse(second.body)
        self.assertEqual(second.rid, 1003)
        self.assertEqual([c.name for c in children], ["message", "iq"])
        self.assertEqual({c.uri for c in children}, {"jabber:client"})

    def test_ridsConsecutive(self) -> None:
        """
        Every request's rid is the previous one's plus one.
        """
        client = Session(rid=7).client
        rids = [7]
        for n in range(5):
            client.send(b"<presence xmlns='jabber:client'/>")
            requests = client.pull(float(n))
            rids.extend(r.rid for r in requests)
            for r in requests:
                client.receive(r.rid, response())
        self.assertEqual(rids, list(range(7, 7 + len(rids))))
        self.assertGreater(len(rids), 5)

    def test_responsesReadInRidOrder(self) -> None:
        """
        A response that overtakes an earlier one waits for it.
        """
        client = Session(rid=10).client
        [poll] = client.pull(0.0)
        client.send(b"<presence xmlns='jabber:client'/>")
        [sent] = client.pull(0.0)
        client.receive(sent.rid, response("<message xmlns='jabber:client' id='second'/>"))
        self.assertEqual(drain(client), [])
        client.receive(poll.rid, response("<message xmlns='jabber:client' id='first'/>"))
        ids = [parse(b"<r>" + item + b"</r>")[1][0]["id"] for item in drain(client)
               if isinstance(item, bytes)]  # fmt: skip
        self.assertEqual(ids, ["first", "second"])

    def test_unknownRidIgnored(self) -> None:
        """
        An answer to a request not in flight is not read.
        """
        client = Session(rid=10).client
        client.receive(999, response("<message xmlns='jabber:client'/>"))
        self.assertEqual(drain(client), [])

    def test_pollingSession(self) -> None:
        """
        With hold=0 (a polling session) an empty request goes no sooner
        than C{polling} seconds after the previous one; a stanza goes at
        once.
        """
        client = Session(rid=1, hold="0", requests="1", polling="5").client
        [poll] = client.pull(100.0)
        client.receive(poll.rid, response())
        self.assertEqual(client.pull(101.0), [])
        self.assertEqual(client.wakeAt(101.0), 105.0)
        [later] = client.pull(105.0)
        self.assertEqual(later.rid, poll.rid + 1)
        client.receive(later.rid, response())
        client.send(b"<presence xmlns='jabber:client'/>")
        [stanza] = client.pull(106.0)
        self.assertEqual([c.name for c in parse(stanza.body)[1]], ["presence"])

    def test_longPollNotDelayed(self) -> None:
        """
        With hold=1, the next empty request follows an answer at once:
        the server holds it (no polling delay on inbound stanzas).
        """
        client = Session(rid=1, polling="5").client
        [poll] = client.pull(100.0)
        client.receive(poll.rid, response("<message xmlns='jabber:client'/>"))
        self.assertEqual(len(client.pull(100.5)), 1)
        self.assertIsNone(client.wakeAt(100.5))


class RestartAndEndTests(SynchronousTestCase):
    def test_restart(self) -> None:
        """
        A new stream header after SASL becomes a request of its own with
        xmpp:restart='true', the session id, to and xml:lang; the new
        features are read after a new stream header, whichever response
        brings them.
        """
        client = Session(rid=50).client
        [poll] = client.pull(0.0)
        client.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>x</auth>")
        [auth] = client.pull(0.0)
        client.receive(poll.rid, response("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"))
        [success] = drain(client)
        assert isinstance(success, bytes)
        self.assertIn(b"<success", success)
        client.restart()
        [restart] = client.pull(0.0)
        body, children = parse(restart.body)
        self.assertEqual(restart.rid, 53)
        self.assertEqual(body[(NS_XBOSH, "restart")], "true")
        self.assertEqual((body["sid"], body["to"], body[XML_LANG]), ("S1", "example.test", "en"))
        self.assertEqual(children, [])
        # Prosody answers on the request it was holding, not the restart's.
        client.receive(auth.rid, response(FEATURES))
        header, features = drain(client)
        assert isinstance(header, bytes) and isinstance(features, bytes)
        self.assertIn(b"<stream:stream", header)
        self.assertIn(b"features", features)
        client.receive(restart.rid, response())
        self.assertEqual(drain(client), [])

    def test_restartAnsweredWithFeatures(self) -> None:
        """
        Features in the restart's own response come after the header too.
        """
        client = Session(rid=50).client
        [poll] = client.pull(0.0)
        client.restart()
        [restart] = client.pull(0.0)
        client.receive(poll.rid, response())
        self.assertEqual(drain(client), [])
        client.receive(restart.rid, response(FEATURES))
        header, features = drain(client)
        assert isinstance(header, bytes) and isinstance(features, bytes)
        self.assertTrue(header.startswith(b"<stream:stream"))

    def test_terminate(self) -> None:
        """
        The stream's end becomes type='terminate' carrying what was queued;
        its answer ends the session cleanly, and nothing more is sent.
        """
        client = Session(rid=1).client
        client.pull(0.0)
        client.send(b"<presence xmlns='jabber:client' type='unavailable'/>")
        client.terminate()
        [end] = client.pull(0.0)
        body, children = parse(end.body)
        self.assertEqual(body["type"], "terminate")
        self.assertEqual([c.name for c in children], ["presence"])
        # The answer to our terminate ends it, whatever the held request.
        client.receive(end.rid, response(type="terminate"))
        self.assertEqual(client.nextInbound(), Terminated(None))
        self.assertTrue(client.closed)
        client.send(b"<presence xmlns='jabber:client'/>")
        self.assertEqual(client.pull(1.0), [])

    def test_serverTerminates(self) -> None:
        """
        The server's terminate with a condition ends the session after the
        stanzas of that response.
        """
        client = Session(rid=1).client
        [poll] = client.pull(0.0)
        client.receive(poll.rid, response("<message xmlns='jabber:client'/>", type="terminate",
                                          condition="remote-connection-failed"))  # fmt: skip
        message, end = drain(client)
        self.assertIsInstance(message, bytes)
        self.assertEqual(end, Terminated("remote-connection-failed"))


class OutboundStreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.client = BOSHClient(rid=1)
        self.client.open("example.test")
        [creation] = self.client.pull(0.0)
        self.client.receive(creation.rid, response(sid="S"))
        drain(self.client)
        self.client.pull(0.0)
        self.outbound = OutboundStream(self.client)
        # What twisted.words' XmlStream really writes.
        self.xs = xmlstream.XmlStream(xmlstream.Authenticator())
        self.xs.namespace = "jabber:client"
        self.xs.otherEntity = JID("example.test")
        self.transport = StringTransport()
        self.xs.makeConnection(self.transport)

    def written(self) -> bytes:
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    def sent(self) -> BOSHRequest:
        [request] = self.client.pull(0.0)
        self.client.receive(request.rid, response())
        return request

    def test_stanzaNamespaced(self) -> None:
        """
        The XML stream writes stanzas in its default namespace; in a body
        they say C{jabber:client} themselves.
        """
        self.xs.sendHeader()
        self.outbound.write(self.written())
        self.assertEqual(self.client.pull(0.0), [])
        iq = domish.Element((None, "iq"))
        iq["type"] = "get"
        iq.addElement(("urn:xmpp:ping", "ping"))
        self.xs.send(iq)
        raw = self.written()
        self.assertNotIn(b"jabber:client", raw)
        self.outbound.write(raw)
        _, [child] = parse(self.sent().body)
        self.assertEqual((child.uri, child.name), ("jabber:client", "iq"))
        self.assertEqual(child.firstChildElement().uri, "urn:xmpp:ping")

    def test_secondHeaderRestarts(self) -> None:
        """
        The first header is the session's own; the next one restarts.
        """
        self.xs.sendHeader()
        self.outbound.write(self.written())
        self.xs.reset()
        self.xs.sendHeader()
        self.outbound.write(self.written())
        body, _ = parse(self.sent().body)
        self.assertEqual(body[(NS_XBOSH, "restart")], "true")

    def test_footerTerminates(self) -> None:
        """
        The stream's footer terminates the session.
        """
        self.xs.sendHeader()
        self.outbound.write(self.written())
        self.xs.sendFooter()
        self.outbound.write(self.written())
        body, _ = parse(self.sent().body)
        self.assertEqual(body["type"], "terminate")

    def test_dataBeforeHeader(self) -> None:
        """
        A stanza before any header is an error, not a guess.
        """
        self.assertRaises(BOSHError, self.outbound.write, b"<presence/>")


class URLTests(SynchronousTestCase):
    def test_accepted(self) -> None:
        for url in ("https://xmpp.example.com:5281/http-bind", "https://[::1]:5281/http-bind",
                    "http://127.0.0.1:5280/http-bind", "http://localhost/bosh"):  # fmt: skip
            self.assertEqual(checkBOSHURL(url), url)
            self.assertTrue(isBOSHURL(url))

    def test_refused(self) -> None:
        """
        Plain http to a host on a network, other schemes, credentials in the
        URL and bad ports are refused.
        """
        for url in ("http://xmpp.example.com/http-bind", "http://192.0.2.1:5280/http-bind",
                    "ftp://xmpp.example.com/", "https://user:pw@xmpp.example.com/",
                    "https://xmpp.example.com:99999/", "https:///http-bind",
                    "https://xmpp.example.com/?a=b"):  # fmt: skip
            self.assertRaises(ValueError, checkBOSHURL, url)

    def test_notURL(self) -> None:
        self.assertFalse(isBOSHURL("xmpp.example.com:5222"))
        self.assertFalse(isBOSHURL("tls:xmpp.example.com:5223"))


class EndpointChoiceTests(SynchronousTestCase):
    """
    Where a BOSH URL as a session's server leads (L{makeEndpoint},
    L{canonicalServer}).
    """

    def test_makeEndpoint(self) -> None:
        """
        A BOSH URL gives a L{BOSHEndpoint}, never without the trust root
        its HTTPS check needs.
        """
        from twisted.internet.ssl import platformTrust
        from twisted.internet.testing import MemoryReactor

        from sipxmpp.xmpp.bosh import BOSHEndpoint
        from sipxmpp.xmpp.endpoints import makeEndpoint

        url = "https://xmpp.example.test:5281/http-bind"
        endpoint = makeEndpoint(MemoryReactor(), url, "example.test", trustRoot=platformTrust())
        self.assertIsInstance(endpoint, BOSHEndpoint)
        self.assertRaises(ValueError, makeEndpoint, MemoryReactor(), url, "example.test")
        self.assertRaises(ValueError, makeEndpoint, MemoryReactor(),
                          "http://xmpp.example.test/http-bind", "example.test",
                          trustRoot=platformTrust())  # fmt: skip

    def test_accountServer(self) -> None:
        """
        An account's own server may be a BOSH URL, checked like C{[xmpp]
        bosh_url}.
        """
        from sipxmpp.xmpp.endpoints import canonicalServer

        url = "https://xmpp.example.test:5281/http-bind"
        self.assertEqual(canonicalServer(f" {url} "), url)
        self.assertRaises(ValueError, canonicalServer, "http://xmpp.example.test/http-bind")
