"""
Tests for C{[backpublish]} (issue 18): its keys in L{sipxmpp.config}, the
wiring in L{sipxmpp.sip.shell.service.buildSIP} (refused without a source
of the users' XMPP presence), and publish mode composed by L{sipxmpp.tap}.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.config import ConfigError, Settings, changedKeys, loadSettings
from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.presence import InMemoryPresenceSource, UserPresence
from sipxmpp.sip.core.presenceagent import PresenceAgent
from sipxmpp.sip.core.presencepublisher import PresencePublisher
from sipxmpp.sip.shell.service import (
    BackpublishError,
    BackpublishService,
    BackpublishSettings,
    backpublishingOf,
    buildSIP,
)
from sipxmpp.store.addresses import aorOfURI
from sipxmpp.store.opening import initialiseStore
from sipxmpp.store.provisioned import ProvisionedAoRs
from sipxmpp.tap import GatewayService, Options, makeService
from sipxmpp.telephony.state import TelephonyStateMachine
from sipxmpp.xmpp.presencesource import XMPPPresenceSource
from tests.unit.test_config import MINIMAL
from tests.unit.test_tap import CONFIG, UDPMemoryReactor

ALICE = "sip:alice@example.test"


class ConfigTestCase(SynchronousTestCase):
    def write(self, text: str) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "sipxmpp.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def load(self, text: str) -> Settings:
        return loadSettings(self.write(MINIMAL + text))


class KeysTests(ConfigTestCase):
    def test_default(self) -> None:
        """
        Off by default, with the subscription bounds of a presence agent.
        """
        settings = self.load("")
        self.assertEqual(settings.backpublish, BackpublishSettings("off", "", 60, 3600))

    def test_values(self) -> None:
        settings = self.load("[backpublish]\nmode = Publish\n"
                             "presence_server = sip:127.0.0.1:5070;transport=tcp\n"
                             "min_expires = 30\nmax_expires = 600\n")  # fmt: skip
        self.assertEqual(settings.backpublish, BackpublishSettings(
            "publish", "sip:127.0.0.1:5070;transport=tcp", 30, 600))  # fmt: skip
        self.assertEqual(self.load("[backpublish]\nmode = serve\n").backpublish.mode, "serve")

    def test_allowedWatchers(self) -> None:
        """
        AoRs (in normal form, as the presence agent compares them) and
        domains (lower case).
        """
        settings = self.load("[backpublish]\nallowed_watchers = SIP:Ops@Partner.TEST:5070 "
                             "Example.TEST\n  sip:noc@example.test\n")  # fmt: skip
        self.assertEqual(settings.backpublish.allowedWatchers,
                         ("sip:Ops@partner.test:5070", "example.test", "sip:noc@example.test"))

    def test_errors(self) -> None:
        """
        One line naming the key: an unknown mode, publish without a
        server, a server that is not a SIP URI of a server, bounds upside
        down.
        """
        for text, fragments in [
            ("mode = both", ("[backpublish] mode = 'both'", "off, serve, publish")),
            ("mode = publish", ("[backpublish] presence_server = ''", "required with mode = publish")),
            ("presence_server = sip:ps@127.0.0.1", ("[backpublish] presence_server", "SIP URI")),
            ("presence_server = sips:127.0.0.1", ("[backpublish] presence_server",)),
            ("min_expires = 0", ("[backpublish] min_expires", "whole number")),
            ("allowed_watchers = bob@example.test", ("[backpublish] allowed_watchers",
                                                     "scheme is missing")),
            ("allowed_watchers = tel:+4930123", ("[backpublish] allowed_watchers",
                                                 "only sip: and sips:")),
            ("allowed_watchers = not_a_domain!", ("[backpublish] allowed_watchers",
                                                  "neither a SIP AoR")),
            ("min_expires = 900\nmax_expires = 600", ("[backpublish] min_expires = '900'",
                                                      "max_expires (600)")),
        ]:  # fmt: skip
            path = self.write(MINIMAL + "[backpublish]\n" + text + "\n")
            error = self.assertRaises(ConfigError, loadSettings, path)
            message = str(error)
            self.assertNotIn("\n", message)
            for fragment in fragments:
                self.assertIn(fragment, message)

    def test_example(self) -> None:
        """
        The example file documents every key, with the defaults.
        """
        example = os.path.join(os.path.dirname(__file__), "..", "..", "etc",
                               "sipxmpp.conf.example")  # fmt: skip
        self.assertEqual(loadSettings(example).backpublish, BackpublishSettings())

    def test_restartKeys(self) -> None:
        """
        A change of mode is seen by a re-read (and needs a restart).
        """
        old, new = self.load(""), self.load("[backpublish]\nmode = serve\n")
        self.assertEqual(changedKeys(old, new), [("backpublish", "mode")])


class BuildTests(ConfigTestCase):
    def build(self, text: str, presence: InMemoryPresenceSource | None = None,
              **kwargs: object) -> tuple[object, object]:  # fmt: skip
        settings = self.load(text)
        reactor = MemoryReactorClock()
        return buildSIP(settings.sip, reactor, Metrics(), TelephonyStateMachine(reactor),
                        aorOfURI, ingest=settings.ingest, backpublish=settings.backpublish,
                        presence=presence, **kwargs)  # type: ignore[arg-type]  # fmt: skip

    def test_off(self) -> None:
        _, proxy = self.build("", InMemoryPresenceSource())
        self.assertIsNone(backpublishingOf(proxy))  # type: ignore[arg-type]
        self.assertNotIn("SUBSCRIBE", proxy.localMethods())  # type: ignore[attr-defined]

    def test_notAvailable(self) -> None:
        """
        serve or publish without a presence source (serve also without
        authorise or the provisioned AoRs) is refused, never a no-op.
        """
        for text in ("mode = serve\n", "mode = publish\npresence_server = sip:127.0.0.1:5070\n"):
            error = self.assertRaises(BackpublishError, self.build, "[backpublish]\n" + text)
            self.assertIn("needs the users' XMPP presence", str(error))
            self.assertTrue(str(error).startswith("[backpublish] mode = "))
        self.assertRaises(BackpublishError, self.build, "[backpublish]\nmode = serve\n",
                          InMemoryPresenceSource())  # fmt: skip

    def test_serve(self) -> None:
        """
        serve: the proxy's SUBSCRIBE handler is a presence agent reading
        the source, with the configured bounds, watchers from the trusted
        networks and the upstream.
        """
        source = InMemoryPresenceSource()
        _, proxy = self.build("[backpublish]\nmode = serve\nmin_expires = 30\n", source,
                              isProvisioned=lambda aor: aor == ALICE,
                              authorise=lambda w, u: "active")  # fmt: skip
        [agent] = proxy.localHandlers("SUBSCRIBE")  # type: ignore[attr-defined]
        assert isinstance(agent, PresenceAgent)
        self.assertEqual((agent.minExpires, agent.maxExpires), (30, 3600))
        self.assertEqual(agent.contact, "sip:sipxmpp@127.0.0.1:5060")
        self.assertEqual([str(n) for n in agent.watchers or ()],
                         ["127.0.0.0/8", "::1/128", "127.0.0.1/32"])  # fmt: skip
        backpublishing = backpublishingOf(proxy)  # type: ignore[arg-type]
        assert backpublishing is not None
        self.assertIs(backpublishing.backpublisher, agent)

    def test_publish(self) -> None:
        source = InMemoryPresenceSource()
        _, proxy = self.build("[backpublish]\nmode = publish\nmax_expires = 900\n"
                              "presence_server = sip:127.0.0.1:5070;transport=tcp\n",
                              source)  # fmt: skip
        backpublishing = backpublishingOf(proxy)  # type: ignore[arg-type]
        assert backpublishing is not None
        publisher = backpublishing.backpublisher
        assert isinstance(publisher, PresencePublisher)
        self.assertEqual((publisher.server, publisher.expires),
                         (Peer("TCP", "127.0.0.1", 5070), 900))  # fmt: skip
        self.assertNotIn("SUBSCRIBE", proxy.localMethods())  # type: ignore[attr-defined]

    def test_publishTransportNotListening(self) -> None:
        text = ("listen = udp:5060:interface=127.0.0.1\n[backpublish]\nmode = publish\n"
                "presence_server = sip:127.0.0.1:5070;transport=tcp\n")  # fmt: skip
        error = self.assertRaises(BackpublishError, self.build, text, InMemoryPresenceSource())
        self.assertIn("[backpublish] presence_server: the server uses TCP", str(error))


class ServiceTests(SynchronousTestCase):
    def test_publisherLife(self) -> None:
        """
        The service starts the publisher, tells it the provisioned AoRs,
        and at stop removes the publications.
        """
        clock = Clock()
        source = InMemoryPresenceSource()
        sent: list[bytes] = []
        publisher = PresencePublisher(clock, source, lambda data, peer, user: sent.append(data),
                                      Peer("UDP", "127.0.0.1", 5070))  # fmt: skip
        service = BackpublishService(publisher)
        source.set(ALICE, UserPresence("away"))
        service.aorsChanged([ALICE], [])
        self.assertEqual(sent, [])
        service.startService()
        self.assertEqual(len(sent), 1)
        service.stopService()
        self.assertFalse(publisher.running)


class StartTests(SynchronousTestCase):
    def test_publishComposed(self) -> None:
        """
        twistd with mode = publish composes a presence publisher reading
        the users' XMPP presence, started after SIP as C{backpublish} and
        fed by the provisioned AoRs (serve: see test_tap).
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "sipxmpp.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(CONFIG + "[backpublish]\nmode = publish\n"
                    "presence_server = sip:127.0.0.1:5070\n"
                    f"[store]\nurl = sqlite:///{directory}/store.sqlite\n"
                    f"key_file = {directory}/secret.key\n")  # fmt: skip
        initialiseStore(loadSettings(path).store).close()
        options = Options()
        options.parseOptions(["--config", path])
        service = makeService(options, UDPMemoryReactor())
        assert isinstance(service, GatewayService) and service.proxy is not None
        names = [child.name for child in service]
        self.assertLess(names.index("sip"), names.index("backpublish"))
        backpublishing = backpublishingOf(service.proxy)
        assert backpublishing is not None
        self.assertIs(service.getServiceNamed("backpublish"), backpublishing)
        publisher = backpublishing.backpublisher
        assert isinstance(publisher, PresencePublisher)
        self.assertIsInstance(publisher._source, XMPPPresenceSource)
        self.assertEqual(publisher.server, Peer("UDP", "127.0.0.1", 5070))
        self.assertNotIn("SUBSCRIBE", service.proxy.localMethods())
        provisioned = service.getServiceNamed("provisioned")
        assert isinstance(provisioned, ProvisionedAoRs)
        provisioned._loaded(frozenset({ALICE}))
        self.assertIsNotNone(publisher.publication(ALICE))
