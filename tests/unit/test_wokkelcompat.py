"""
wokkel 18 imported through L{sipxmpp.xmpp.wokkelcompat} works on the
pinned Twisted: the modules the publisher needs import, build and parse.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from sipxmpp.xmpp.wokkelcompat import client, data_form, disco, subprotocols, xmppim


def connectedStream() -> tuple[xmlstream.XmlStream, StringTransport]:
    stream = xmlstream.XmlStream(xmlstream.Authenticator())
    transport = StringTransport()
    stream.makeConnection(transport)
    stream.dataReceived(
        b"<stream:stream xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams' from='example.test' "
        b"id='s1' version='1.0'>"
    )
    transport.clear()
    return stream, transport


class WokkelCompatTests(SynchronousTestCase):
    """
    The wokkel modules import and their core objects work.
    """

    def test_dataFormRoundTrip(self) -> None:
        """
        An XEP-0146 form, as the remote-control client submits it, survives
        rendering and parsing.
        """
        form = data_form.Form(
            "submit",
            formNamespace="http://jabber.org/protocol/rc",
            fields=[
                data_form.Field("list-single", var="status", value="dnd"),
                data_form.Field("text-single", var="status-priority", value="5"),
                data_form.Field("text-multi", var="status-message",
                                values=["I am currently on the phone"]),
            ],
        )
        parsed = data_form.Form.fromElement(form.toElement())
        self.assertEqual(parsed.formNamespace, "http://jabber.org/protocol/rc")
        self.assertEqual(parsed.getValues()["status"], "dnd")
        self.assertEqual(parsed.getValues()["status-message"], ["I am currently on the phone"])

    def test_discoItemsParse(self) -> None:
        """
        A disco#items answer on the commands node parses into items.
        """
        query = domish.Element((disco.NS_DISCO_ITEMS, "query"))
        query["node"] = "http://jabber.org/protocol/commands"
        item = query.addElement("item")
        item["jid"] = "alice@example.test/desktop"
        item["node"] = "http://jabber.org/protocol/rc#set-status"
        items = disco.DiscoItems.fromElement(query)
        self.assertEqual(items.nodeIdentifier, "http://jabber.org/protocol/commands")
        self.assertEqual(
            [(i.entity, i.nodeIdentifier) for i in items],
            [(JID("alice@example.test/desktop"), "http://jabber.org/protocol/rc#set-status")],
        )

    def test_presenceProtocolSends(self) -> None:
        """
        xmppim's presence protocol, attached through a subprotocols stream
        manager, serialises an available presence with show and priority.
        """
        factory = xmlstream.XmlStreamFactory(xmlstream.Authenticator())
        manager = subprotocols.StreamManager(factory)
        presence = xmppim.PresenceProtocol()
        presence.setHandlerParent(manager)
        stream, transport = connectedStream()
        manager._connected(stream)
        manager._authd(stream)
        presence.available(show="dnd", statuses={None: "On the phone"}, priority=-1)
        sent = transport.value().decode("utf-8")
        self.assertIn("<show>dnd</show>", sent)
        self.assertIn("<priority>-1</priority>", sent)
        self.assertIn("On the phone", sent)

    def test_clientStreamManager(self) -> None:
        """
        wokkel's client is a stream manager over an XML stream factory, the
        base the publisher's sessions build on.
        """
        factory = client.HybridClientFactory(JID("alice@example.test/sipxmpp"), "secret")
        self.assertIsInstance(factory, xmlstream.XmlStreamFactory)
        self.assertTrue(issubclass(client.XMPPClient, subprotocols.StreamManager))
