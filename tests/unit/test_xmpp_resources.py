"""
Tests for L{sipxmpp.xmpp.resources}: tracking the user's other resources.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from twisted.words.xish.domish import elementStream

from sipxmpp.xmpp.resources import (
    Caps,
    CommandCache,
    ResourceChange,
    ResourceTracker,
    cacheKey,
    gatewayResource,
    isGatewayResource,
)
from tests.unit.xmppstreams import capsVer, presenceXML


def parse(xml: str) -> domish.Element:
    found: list[domish.Element] = []
    stream = elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = found.append
    stream.DocumentEndEvent = lambda: None
    stream.parse("<r xmlns='jabber:client'>" + xml)
    return found[0]


class ResourceTrackerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tracker = ResourceTracker(JID("alice@example.test/sipxmpp"))

    def feed(self, xml: str) -> ResourceChange | None:
        return self.tracker.presenceReceived(parse(xml))

    def test_availableWithCaps(self) -> None:
        change = self.feed(presenceXML("alice@example.test/psi", "away", "lunch", 5, "v1"))
        psi = self.tracker.get("psi")
        assert psi is not None
        self.assertEqual((psi.priority, psi.show, psi.status), (5, "away", "lunch"))
        self.assertEqual(psi.caps, Caps("http://psi-plus.com", capsVer("v1"), "sha-1"))
        assert change is not None
        self.assertIsNone(change.before)

    def test_ignored(self) -> None:
        """
        Contacts, the gateway's own resource, the bare JID and subscription
        stanzas are not the user's other resources.
        """
        for xml in (
            presenceXML("bob@example.test/psi", priority=9),
            presenceXML("alice@example.test/sipxmpp", priority=9),
            presenceXML("alice@example.test", priority=9),
            presenceXML("alice@example.test/psi", kind="subscribe"),
        ):
            self.assertIsNone(self.feed(xml), xml)
        self.assertEqual(self.tracker.available(), [])

    def test_ownPresenceEchoed(self) -> None:
        """
        The server's echo of the gateway's own presence, spelled as its
        full JID or otherwise, is not another resource.
        """
        for sender in ("alice@example.test/sipxmpp", "Alice@Example.Test/sipxmpp"):
            self.assertIsNone(self.feed(presenceXML(sender, priority=9)), sender)
        self.assertEqual(self.tracker.available(), [])

    def test_unavailable(self) -> None:
        self.feed(presenceXML("alice@example.test/psi", priority=1))
        change = self.feed(presenceXML("alice@example.test/psi", kind="unavailable"))
        assert change is not None
        self.assertIsNone(change.after)
        self.assertIsNone(self.tracker.get("psi"))

    def test_orderAndHighest(self) -> None:
        self.feed(presenceXML("alice@example.test/a", priority=1))
        self.feed(presenceXML("alice@example.test/b", priority=7))
        self.feed(presenceXML("alice@example.test/c", priority=-5))
        self.assertEqual([r.resource for r in self.tracker.available()], ["b", "a", "c"])
        self.assertEqual(self.tracker.highestPriority(), 7)

    def test_badPriorityAndShow(self) -> None:
        self.feed(
            "<presence from='alice@example.test/x'><show>busy</show><priority>lots</priority></presence>"
        )
        x = self.tracker.get("x")
        assert x is not None
        self.assertEqual((x.show, x.priority), (None, 0))

    def test_sameAgainIsNoChange(self) -> None:
        self.feed(presenceXML("alice@example.test/a", priority=1))
        self.assertIsNone(self.feed(presenceXML("alice@example.test/a", priority=1)))

    def test_looksLike(self) -> None:
        self.feed(presenceXML("alice@example.test/a", "dnd", "call", 3))
        a = self.tracker.get("a")
        assert a is not None
        self.assertTrue(a.looksLike("dnd", "call"))
        self.assertFalse(a.looksLike("dnd", "other"))
        self.assertFalse(a.looksLike(None, "call"))


class GatewayResourceTests(SynchronousTestCase):
    """
    Each gateway instance logs in with a resource of its own, and every
    instance's resource is known for a gateway's, not a client.
    """

    def test_naming(self) -> None:
        self.assertEqual(gatewayResource("sipxmpp", "gw-a"), "sipxmpp-gw-a")
        self.assertEqual(gatewayResource("phone", "gw.b_2"), "phone-gw.b_2")
        self.assertEqual(gatewayResource("sipxmpp", ""), "sipxmpp")
        self.assertNotEqual(gatewayResource("sipxmpp", "gw-a"), gatewayResource("sipxmpp", "gw-b"))

    def test_recognised(self) -> None:
        for resource in ("sipxmpp", "sipxmpp-gw-a", "sipxmpp-gw-b", "sipxmpp-host.example"):
            self.assertTrue(isGatewayResource("sipxmpp", resource), resource)
        for resource in ("psi", "sipxmpp2", "Sipxmpp-gw-a", "gw-a", "mcabber-sipxmpp", ""):
            self.assertFalse(isGatewayResource("sipxmpp", resource), resource)

    def test_otherInstanceIsNoClient(self) -> None:
        """
        gw-a's tracker leaves out gw-b's resource (it logs in as the same
        user while it takes the user over) and one without an instance
        name, like C{sipxmpp-admin account check}, but not the user's
        clients.
        """
        tracker = ResourceTracker(JID("alice@example.test/sipxmpp-gw-a"), "sipxmpp")
        for sender in ("alice@example.test/sipxmpp-gw-b", "alice@example.test/sipxmpp",
                       "alice@example.test/sipxmpp-gw-a"):  # fmt: skip
            self.assertIsNone(tracker.presenceReceived(parse(presenceXML(sender, priority=9))))
        self.assertEqual(tracker.available(), [])
        self.assertIsNotNone(
            tracker.presenceReceived(parse(presenceXML("alice@example.test/psi", priority=1))))
        self.assertEqual([r.resource for r in tracker.available()], ["psi"])

    def test_withoutBaseOnlyOwn(self) -> None:
        """
        Without the base, only the gateway's own resource is left out.
        """
        tracker = ResourceTracker(JID("alice@example.test/sipxmpp-gw-a"))
        tracker.presenceReceived(parse(presenceXML("alice@example.test/sipxmpp-gw-b", priority=-1)))
        self.assertEqual([r.resource for r in tracker.available()], ["sipxmpp-gw-b"])


class CommandCacheTests(SynchronousTestCase):
    def test_keys(self) -> None:
        jid = JID("alice@example.test/psi")
        self.assertEqual(cacheKey(jid, Caps("n", "v", "sha-1")), ("caps", "sha-1", "v"))
        self.assertEqual(cacheKey(jid, Caps("n", "v", "")), ("jid", jid.full(), ""))
        self.assertEqual(cacheKey(jid, None), ("jid", jid.full(), ""))

    def test_lru(self) -> None:
        cache = CommandCache(maxEntries=2)
        a, b, c = ("caps", "h", "a"), ("caps", "h", "b"), ("caps", "h", "c")
        cache.put(a, frozenset(["x"]))
        cache.put(b, frozenset())
        self.assertEqual(cache.get(a), frozenset(["x"]))
        cache.put(c, frozenset())
        self.assertIsNone(cache.get(b))
        self.assertEqual(len(cache), 2)

    def test_expires(self) -> None:
        """
        An entry is gone C{ttl} seconds after it was stored (stored again,
        it lives on).
        """
        now = [1000.0]
        cache = CommandCache(ttl=3600, now=lambda: now[0])
        key = ("caps", "sha-1", "v")
        cache.put(key, frozenset(["x"]))
        now[0] += 3599
        self.assertEqual(cache.get(key), frozenset(["x"]))
        now[0] += 1
        self.assertIsNone(cache.get(key))
        self.assertEqual(len(cache), 0)
        cache.put(key, frozenset())
        now[0] += 3000
        self.assertEqual(cache.get(key), frozenset())
