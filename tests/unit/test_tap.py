"""
Tests for L{sipxmpp.tap}: options, overrides and service composition.
"""

from __future__ import annotations

import io
import json
import os
import sys

from twisted.application.service import Application, IServiceCollection
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.config import loadSettings
from sipxmpp.ops.logs import makeLogObserver
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.presenceagent import PresenceAgent
from sipxmpp.sip.core.publications import EventStateCompositor
from sipxmpp.sip.shell.overload import OverloadMonitor
from sipxmpp.sip.shell.service import backpublishingOf, subscriptionsOf
from sipxmpp.store.opening import defaultOwner, initialiseStore
from sipxmpp.store.provisioned import ProvisionedAoRs
from sipxmpp.tap import GatewayService, Options, makeService
from sipxmpp.xmpp.presencesource import XMPPPresenceSource

CONFIG = """\
[sip]
upstream = sip:127.0.0.1:5070;transport=udp
domain = example.test
[http]
listen = tcp:18099:interface=127.0.0.1
"""


class UDPMemoryReactor(MemoryReactorClock):
    """
    A memory reactor that also records UDP listeners.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpServers: list[tuple[int, object, int, str]] = []

    def listenUDP(self, port: int, protocol: object, interface: str = "",
                  maxPacketSize: int = 8192) -> object:
        self.udpServers.append((port, protocol, maxPacketSize, interface))
        listening = MemoryReactor.listenTCP(self, port, None, 50, interface)  # type: ignore[arg-type]
        self.tcpServers.pop()
        return listening


class OptionsTests(SynchronousTestCase):
    """
    L{Options} maps flags and --set onto configuration keys.
    """

    def test_defaults(self) -> None:
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["config"], "/etc/sipxmpp/sipxmpp.conf")
        self.assertEqual(options.overrides(), {})

    def test_overrides(self) -> None:
        options = Options()
        options.parseOptions(
            [
                "--config", "x.conf", "--domain", "d.test", "--log-level", "debug",
                "--set", "xmpp.priority=-3", "--set", "xmpp.status_text=a=b",
            ]
        )
        self.assertEqual(options["config"], "x.conf")
        self.assertEqual(
            options.overrides(),
            {
                ("sip", "domain"): "d.test",
                ("log", "level"): "debug",
                ("xmpp", "priority"): "-3",
                ("xmpp", "status_text"): "a=b",
            },
        )

    def test_badSet(self) -> None:
        options = Options()
        self.assertRaises(usage.UsageError, options.parseOptions, ["--set", "nodot=1"])
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--set", "a.b"])


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} validates the configuration and composes named services.
    """

    def configPath(self, text: str = CONFIG) -> str:
        """
        Write C{text} plus a [store] in a fresh directory, initialised as
        C{sipxmpp-admin init} would.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "sipxmpp.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + f"[store]\nurl = sqlite:///{directory}/store.sqlite\n"
                    f"key_file = {directory}/secret.key\n")
        if "level = loud" not in text:
            initialiseStore(loadSettings(path).store).close()
        return path

    def test_namedChildren(self) -> None:
        options = Options()
        options.parseOptions(["--config", self.configPath()])
        reactor = UDPMemoryReactor()
        service = makeService(options, reactor)
        self.assertIsInstance(service, GatewayService)
        assert isinstance(service, GatewayService)
        self.assertEqual(service.settings.sip.domain, "example.test")
        self.assertEqual([child.name for child in service],
                         ["store", "xmpp", "accounts", "sip", "overload", "keepalive", "http"])
        overload = service.getServiceNamed("overload")
        assert isinstance(overload, OverloadMonitor) and service.proxy is not None
        self.assertEqual(service.proxy.isOverloaded, overload.isOverloaded)
        self.assertEqual((overload.lagThreshold, overload.backlogThreshold), (1, 0.25))
        sip = service.getServiceNamed("sip")
        http = service.getServiceNamed("http")
        sip.startService()
        http.startService()
        self.addCleanup(sip.stopService)
        self.addCleanup(http.stopService)
        # SIP and the ops endpoint listen where configured, on the injected
        # reactor: SIP over UDP and TCP on 5060, ops on 18099.
        self.assertEqual([(port, interface) for port, _, _, interface in reactor.udpServers],
                         [(5060, "127.0.0.1")])
        self.assertEqual(
            sorted((port, interface) for port, _, _, interface in reactor.tcpServers),
            [(5060, "127.0.0.1"), (18099, "127.0.0.1")],
        )

    def test_statusAndChecks(self) -> None:
        """
        C{/status} (JSON) has each user's states, JID, how the call is
        shown and last events, and the totals; C{/healthz/ready} runs the
        named checks, the upstream's among them since one is configured
        (without one there is no keepalive: see test_ingestComposed).
        """
        reactor = UDPMemoryReactor()
        service = makeService(self.options(self.configPath()), reactor)
        assert isinstance(service, GatewayService) and service.machine is not None
        service.machine.bindingUpdated("sip:alice@example.test", "c1", 3600)
        service.machine.dialogEarly("sip:alice@example.test", "d1")
        status = service.status()
        alice = status["users"]["sip:alice@example.test"]  # type: ignore[index]
        self.assertEqual(alice["telephony"], "ringing")
        self.assertEqual(alice["xmpp"], "logged out")
        self.assertEqual(alice["shown"], {"on": None, "resource": None})
        self.assertEqual(status["totals"],
                         {"users": 1, "telephony": {"ringing": 1}, "xmpp": {"logged out": 1},
                          "shown": {}})
        self.assertEqual(status["sip"], {"bindings": 0, "transactions": 0})
        site = service.getServiceNamed("http").factory  # type: ignore[attr-defined]
        health = site.resource.children[b"healthz"]
        self.assertEqual(sorted(health.ready._checks),
                         ["fds", "reactor", "running", "store", "upstream", "xmpp"])

    def test_ingestComposed(self) -> None:
        """
        With publishers and no upstream, the gateway keeps the provisioned
        AoRs in memory and its proxy answers PUBLISH with a compositor that
        has the configured bounds and publishers; without [ingest], neither.
        """
        plain = makeService(self.options(self.configPath()), UDPMemoryReactor())
        assert isinstance(plain, GatewayService) and plain.proxy is not None
        self.assertEqual(plain.proxy.localHandlers("PUBLISH"), [])
        self.assertNotIn("provisioned", [child.name for child in plain])
        self.assertNotIn("provisioned", plain.status()["sip"])  # type: ignore[operator]
        text = CONFIG.replace("upstream = sip:127.0.0.1:5070;transport=udp", "upstream =")
        text += "[ingest]\npublishers = 127.0.0.2/32\nmin_expires = 8\nmax_expires = 600\n"
        service = makeService(self.options(self.configPath(text)), UDPMemoryReactor())
        assert isinstance(service, GatewayService) and service.proxy is not None
        self.assertEqual([child.name for child in service],
                         ["store", "xmpp", "accounts", "provisioned", "sip", "overload", "http"])
        [compositor] = service.proxy.localHandlers("PUBLISH")
        assert isinstance(compositor, EventStateCompositor)
        self.assertEqual((compositor.minExpires, compositor.maxExpires), (8, 600))
        self.assertTrue(compositor.allows("127.0.0.2"))
        self.assertFalse(compositor.allows("127.0.0.1"))
        self.assertIsNone(service.proxy.settings.upstream)
        # /status counts them (none loaded: the store has not started).
        self.assertEqual(service.status()["sip"],
                         {"bindings": 0, "transactions": 0, "provisioned": 0})

    def test_subscribeComposed(self) -> None:
        """
        With C{[ingest] subscribe} (and no upstream) the provisioned AoRs
        are kept, the proxy's NOTIFY handler is the dialog subscriptions
        at that server, fed by the provisioned AoRs, started after SIP.
        """
        plain = makeService(self.options(self.configPath()), UDPMemoryReactor())
        assert isinstance(plain, GatewayService) and plain.proxy is not None
        self.assertIsNone(subscriptionsOf(plain.proxy))
        text = CONFIG.replace("upstream = sip:127.0.0.1:5070;transport=udp", "upstream =")
        text += "[ingest]\nsubscribe = sip:127.0.0.1:5070\nsubscribe_expires = 120\n"
        service = makeService(self.options(self.configPath(text)), UDPMemoryReactor())
        assert isinstance(service, GatewayService) and service.proxy is not None
        self.assertEqual([child.name for child in service],
                         ["store", "xmpp", "accounts", "provisioned", "sip", "subscribe", "overload",
                          "http"])  # fmt: skip
        subscriptions = subscriptionsOf(service.proxy)
        assert subscriptions is not None
        self.assertEqual(subscriptions.server, Peer("UDP", "127.0.0.1", 5070))
        self.assertEqual(subscriptions.expires, 120)
        self.assertEqual(subscriptions.contact, "sip:sipxmpp@127.0.0.1:5060")
        self.assertIn("NOTIFY", service.proxy.localMethods())
        provisioned = service.getServiceNamed("provisioned")
        assert isinstance(provisioned, ProvisionedAoRs)
        provisioned._loaded(frozenset({"sip:alice@example.test"}))
        self.assertEqual(subscriptions.aors, frozenset({"sip:alice@example.test"}))

    def test_backpublishServeComposed(self) -> None:
        """
        C{[backpublish] mode = serve}: the provisioned AoRs are kept, the
        proxy's SUBSCRIBE handler is a presence agent reading the users'
        XMPP presence (and authorising with their rosters), started after
        SIP as C{backpublish} and fed by the provisioned AoRs.
        """
        text = CONFIG + "[backpublish]\nmode = serve\n"
        service = makeService(self.options(self.configPath(text)), UDPMemoryReactor())
        assert isinstance(service, GatewayService) and service.proxy is not None
        self.assertEqual([child.name for child in service],
                         ["store", "xmpp", "accounts", "provisioned", "sip", "backpublish",
                          "overload", "keepalive", "http"])  # fmt: skip
        backpublishing = backpublishingOf(service.proxy)
        assert backpublishing is not None
        self.assertIs(service.getServiceNamed("backpublish"), backpublishing)
        agent = backpublishing.backpublisher
        assert isinstance(agent, PresenceAgent)
        self.assertEqual(service.proxy.localHandlers("SUBSCRIBE"), [agent])
        self.assertIsInstance(agent._source, XMPPPresenceSource)
        provisioned = service.getServiceNamed("provisioned")
        assert isinstance(provisioned, ProvisionedAoRs)
        provisioned._loaded(frozenset({"sip:alice@example.test"}))
        self.assertTrue(agent._isProvisioned("sip:alice@example.test"))

    def test_subscribeTransportNotListening(self) -> None:
        """
        A subscribe server over a transport SIP does not listen on stops
        the start with one line naming the key.
        """
        text = CONFIG + "[ingest]\nsubscribe = sip:127.0.0.1:5070;transport=tcp\n"
        text = text.replace("[http]", "listen = udp:5060:interface=127.0.0.1\n[http]")
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        exit = self.assertRaises(SystemExit, makeService, self.options(self.configPath(text)),
                                 UDPMemoryReactor())  # fmt: skip
        self.assertEqual(exit.code, 1)
        [line] = stderr.getvalue().splitlines()
        self.assertIn("[ingest] subscribe: the server uses TCP", line)

    def test_instanceNamesTheOwner(self) -> None:
        """
        C{[store] instance} is the name the gateway's runtime state is
        saved and restored under; empty, the host name.
        """
        plain = makeService(self.options(self.configPath()), UDPMemoryReactor())
        self.assertEqual(plain.getServiceNamed("store").store.runtime.owner, defaultOwner())
        path = self.configPath(CONFIG)
        with open(path, "a", encoding="utf-8") as f:
            f.write("instance = gw-b\n")
        named = makeService(self.options(path), UDPMemoryReactor())
        self.assertEqual(named.getServiceNamed("store").store.runtime.owner, "gw-b")

    def test_instanceNamesTheResource(self) -> None:
        """
        A named instance's XMPP sessions log in with a resource of their
        own (C{[xmpp] resource}, a dash, the name), also after a SIGHUP
        reload; without a name, with C{[xmpp] resource}.
        """
        plain = makeService(self.options(self.configPath()), UDPMemoryReactor())
        assert isinstance(plain, GatewayService) and plain.sessions is not None
        self.assertEqual(plain.sessions.settings.resource, "sipxmpp")
        path = self.configPath(CONFIG)
        with open(path, "a", encoding="utf-8") as f:
            f.write("instance = gw-b\n[xmpp]\nstatus_text = Busy\n")
        named = makeService(self.options(path), UDPMemoryReactor())
        assert isinstance(named, GatewayService) and named.sessions is not None
        self.assertEqual(named.sessions.settings.resource, "sipxmpp-gw-b")
        with open(path, "a", encoding="utf-8") as f:
            f.write("ringing_text = Rings\n")
        self.assertTrue(named.reloadConfig())
        self.assertEqual(named.sessions.settings.resource, "sipxmpp-gw-b")

    def options(self, path: str) -> Options:
        options = Options()
        options.parseOptions(["--config", path])
        return options

    def test_storeNotInitialised(self) -> None:
        """
        A store without its key file stops the start with one line that
        says how to create it.
        """
        path = self.configPath()
        os.unlink(os.path.join(os.path.dirname(path), "secret.key"))
        options = Options()
        options.parseOptions(["--config", path])
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        exit = self.assertRaises(SystemExit, makeService, options, MemoryReactorClock())
        self.assertEqual(exit.code, 1)
        [line] = stderr.getvalue().splitlines()
        self.assertIn("sipxmpp-admin init", line)

    def test_configErrorIsOneLine(self) -> None:
        """
        A bad configuration prints one line on stderr and exits with 1.
        """
        options = Options()
        options.parseOptions(["--config", self.configPath(CONFIG + "[log]\nlevel = loud\n")])
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        exit = self.assertRaises(SystemExit, makeService, options, MemoryReactorClock())
        self.assertEqual(exit.code, 1)
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertIn("[log] level = 'loud'", lines[0])
        self.assertTrue(lines[0].startswith("sipxmpp: configuration error: "))

    def test_overrideApplied(self) -> None:
        options = Options()
        options.parseOptions(
            ["--config", self.configPath(), "--http-listen", "tcp:18098:interface=127.0.0.1"]
        )
        reactor = MemoryReactorClock()
        service = makeService(options, reactor)
        http = service.getServiceNamed("http")  # type: ignore[attr-defined]
        http.startService()
        self.addCleanup(http.stopService)
        self.assertEqual(reactor.tcpServers[0][0], 18098)

    def test_logObserverComponent(self) -> None:
        """
        Attached to a twistd application, the gateway registers its
        configured log observer, which twistd prefers over its default.
        """
        options = Options()
        options.parseOptions(["--config", self.configPath()])
        service = makeService(options, MemoryReactorClock())
        application = Application("sipxmpp")
        service.setServiceParent(application)
        self.assertIsNotNone(application.getComponent(ILogObserver))
        self.assertIn(service, list(IServiceCollection(application)))


class LogObserverTests(SynchronousTestCase):
    """
    L{makeLogObserver} filters by level and writes text or JSON lines.
    """

    def settings(self, level: str, fmt: str) -> object:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(CONFIG + f"[log]\nlevel = {level}\nformat = {fmt}\n")
        return loadSettings(path).log

    def test_jsonAndLevel(self) -> None:
        stream = io.StringIO()
        log = Logger(observer=makeLogObserver(self.settings("warn", "json"), stream))  # type: ignore[arg-type]
        log.info("hidden {x}", x=1)
        log.warn("shown {x}", x=2)
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        record = json.loads(lines[0])
        self.assertEqual((record["level"], record["message"]), ("warn", "shown 2"))

    def test_text(self) -> None:
        stream = io.StringIO()
        log = Logger(observer=makeLogObserver(self.settings("debug", "text"), stream))  # type: ignore[arg-type]
        log.debug("detail {x}", x=3)
        self.assertIn("detail 3", stream.getvalue())


class ReloadConfigTests(SynchronousTestCase):
    """
    L{GatewayService.reloadConfig} (SIGHUP) applies the live keys and keeps
    the running configuration when the file is broken.
    """

    configPath = MakeServiceTests.configPath
    options = MakeServiceTests.options

    def service(self) -> tuple[GatewayService, str, list[dict[str, object]]]:
        path = self.configPath(CONFIG + "[xmpp]\nstatus_text = Busy\n")
        service = makeService(self.options(path), MemoryReactorClock())
        assert isinstance(service, GatewayService)
        events: list[dict[str, object]] = []
        service.log = Logger(observer=events.append)  # type: ignore[arg-type]
        return service, path, events

    def rewrite(self, path: str, old: str, new: str) -> None:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace(old, new))

    def test_liveKeysApplied(self) -> None:
        service, path, events = self.service()
        assert service.publisher is not None and service.sessions is not None
        self.rewrite(path, "status_text = Busy", "status_text = Am Telefon\n"
                     "failed_retry_delay = 30\npriority = -3")
        self.rewrite(path, "domain = example.test", "domain = other.test")
        self.assertTrue(service.reloadConfig())
        self.assertEqual(service.publisher.settings.statusText, "Am Telefon")
        self.assertEqual(service.sessions.settings.failedRetryDelay, 30)
        self.assertEqual(service.settings.xmpp.priority, -1)
        self.assertEqual(service.settings.sip.domain, "example.test")
        messages = [str(e.get("names")) for e in events]
        self.assertEqual(messages, ["[xmpp] status_text, [xmpp] failed_retry_delay",
                                    "[sip] domain, [xmpp] priority"])

    def test_logLevel(self) -> None:
        service, path, events = self.service()
        application = Application("sipxmpp")
        service.setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        with open(path, "a", encoding="utf-8") as f:
            f.write("[log]\nlevel = error\n")
        self.assertTrue(service.reloadConfig())
        self.assertEqual(service._levelFilter.defaultLogLevel, LogLevel.error)
        self.assertFalse(observer._shouldLogEvent({"log_level": LogLevel.warn, "log_namespace": "t"}))
        self.assertTrue(observer._shouldLogEvent({"log_level": LogLevel.error, "log_namespace": "t"}))

    def test_brokenFileKept(self) -> None:
        service, path, events = self.service()
        self.rewrite(path, "status_text = Busy", "status_text = Am Telefon\nnonsense = 1")
        self.assertFalse(service.reloadConfig())
        assert service.publisher is not None
        self.assertEqual(service.publisher.settings.statusText, "Busy")
        [event] = events
        self.assertIn("unknown key", str(event["e"]))
        self.assertNotIn("\n", str(event["e"]))
