"""
Tests for L{sipxmpp.config}: typed settings and one-line errors.
"""

from __future__ import annotations

import ipaddress
import os

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.config import (
    LIVE_KEYS,
    SCHEMA,
    ConfigError,
    Settings,
    changedKeys,
    liveSettings,
    loadSettings,
)

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "sipxmpp.conf.example")

MINIMAL = """\
[sip]
upstream = sip:127.0.0.1:5070;transport=udp
domain = Example.TEST
"""


class LoadSettingsTests(SynchronousTestCase):
    """
    L{loadSettings} reads an INI file into settings with defaults.
    """

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assertConfigError(self, text: str, *fragments: str) -> ConfigError:
        path = self.write(text)
        error = self.assertRaises(ConfigError, loadSettings, path)
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(path), message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return error

    def test_defaults(self) -> None:
        settings = loadSettings(self.write(MINIMAL))
        self.assertEqual(settings.sip.domain, "example.test")
        self.assertEqual(settings.sip.upstream, "sip:127.0.0.1:5070;transport=udp")
        self.assertEqual([s.transport for s in settings.sip.listen], ["UDP", "TCP"])
        self.assertEqual({s.interface for s in settings.sip.listen}, {"127.0.0.1"})
        self.assertEqual(
            settings.sip.trustedNetworks,
            (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
        )
        self.assertEqual(settings.xmpp.mode, "remote-control")
        self.assertEqual(settings.xmpp.resource, "sipxmpp")
        self.assertEqual(settings.xmpp.priority, -1)
        self.assertEqual(settings.xmpp.statusText, "I am currently on the phone")
        self.assertIs(settings.xmpp.requireTLS, True)
        self.assertEqual(settings.xmpp.server, "")
        self.assertEqual(settings.store.url, "sqlite:////var/lib/sipxmpp/sipxmpp.sqlite")
        self.assertEqual(settings.http.listen, "tcp:8080:interface=127.0.0.1")
        self.assertEqual(settings.sip.advertisedAddress, "127.0.0.1")
        self.assertEqual(settings.sip.registerMode, "path")
        self.assertEqual(settings.sip.dialogWatchdog, 14400)
        self.assertEqual((settings.sip.streamIdleTimeout, settings.sip.maxConnections), (600, 1024))
        self.assertEqual(settings.sip.udpReceiveBuffer, 4 * 2**20)
        self.assertEqual((settings.sip.overloadLag, settings.sip.overloadBacklog), (1, 0.25))
        self.assertEqual((settings.sip.maxMessageSize, settings.sip.maxHeaders,
                          settings.sip.maxHeaderLength, settings.sip.maxBodySize),
                         (65535, 256, 8192, 65535))
        self.assertEqual((settings.log.level, settings.log.format), ("info", "text"))

    def test_example(self) -> None:
        """
        The shipped example parses, and shows every key of the schema.
        """
        from sipxmpp.config import SCHEMA

        settings = loadSettings(EXAMPLE)
        self.assertEqual(settings.xmpp.server, "127.0.0.1:5222")
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        for section, keys in SCHEMA.items():
            self.assertIn(f"[{section}]", text)
            for key in keys:
                self.assertIn(f"\n{key} =", text, f"{key} is not documented in the example")

    def test_values(self) -> None:
        settings = loadSettings(
            self.write(
                MINIMAL
                + "listen = udp:5062 ssl:5061:interface=\\:\\:1:privateKey=k.pem:certKey=c.pem\n"
                "trusted_networks = 10.0.0.0/8 2001:db8::/32\n"
                "[xmpp]\nmode = Resource\npriority = -5\nrequire_tls = no\n"
                "server = [::1]:5222\nstatus_text = On a call\n"
                "[store]\nurl = postgresql://gw@127.0.0.1/sipxmpp\n"
                "[log]\nlevel = debug\nformat = json\n"
            )
        )
        udp, tls = settings.sip.listen
        self.assertEqual((udp.transport, udp.port, udp.interface), ("UDP", 5062, ""))
        self.assertEqual((tls.transport, tls.port, tls.interface), ("TLS", 5061, "::1"))
        self.assertEqual(tls.option("certKey"), "c.pem")
        self.assertEqual(len(settings.sip.trustedNetworks), 2)
        self.assertEqual(settings.sip.advertisedAddress, "::1")
        self.assertEqual(settings.xmpp.mode, "resource")
        self.assertEqual(settings.xmpp.priority, -5)
        self.assertIs(settings.xmpp.requireTLS, False)
        self.assertEqual(settings.xmpp.server, "[::1]:5222")
        self.assertEqual(settings.xmpp.statusText, "On a call")
        self.assertEqual(settings.store.url, "postgresql://gw@127.0.0.1/sipxmpp")
        self.assertEqual((settings.log.level, settings.log.format), ("debug", "json"))

    def test_overrides(self) -> None:
        path = self.write(MINIMAL)
        settings = loadSettings(
            path, {("sip", "domain"): "other.test", ("log", "level"): "warn"}
        )
        self.assertEqual(settings.sip.domain, "other.test")
        self.assertEqual(settings.log.level, "warn")
        error = self.assertRaises(ConfigError, loadSettings, path, {("sip", "nope"): "1"})
        self.assertIn("[sip] nope", str(error))

    def test_ingest(self) -> None:
        """
        C{[ingest]}: no publisher by default; with one, the upstream may be
        empty (a gateway outside the SIP path that only takes PUBLISH).
        """
        settings = loadSettings(self.write(MINIMAL))
        self.assertEqual(settings.ingest.publishers, ())
        self.assertEqual((settings.ingest.minExpires, settings.ingest.maxExpires), (5, 3600))
        settings = loadSettings(self.write(
            "[sip]\nupstream =\ndomain = a.test\n"
            "[ingest]\npublishers = 127.0.0.1/32 10.1.0.0/16\nmin_expires = 30\n"
        ))
        self.assertEqual(settings.sip.upstream, "")
        self.assertEqual(settings.ingest.publishers, (ipaddress.ip_network("127.0.0.1/32"),
                                                      ipaddress.ip_network("10.1.0.0/16")))
        self.assertEqual(settings.ingest.minExpires, 30)

    def test_instance(self) -> None:
        """
        C{[store] instance} names the gateway in a shared store: empty (the
        host name) by default; a name with spaces or slashes is refused.
        """
        self.assertEqual(loadSettings(self.write(MINIMAL)).store.instance, "")
        settings = loadSettings(self.write(MINIMAL + "[store]\ninstance = gw-a.1\n"))
        self.assertEqual(settings.store.instance, "gw-a.1")
        self.assertConfigError(MINIMAL + "[store]\ninstance = gw a\n", "[store] instance",
                               "letters, digits")

    def test_resourceNamesInstance(self) -> None:
        """
        An instance with a name logs in with C{[xmpp] resource}, a dash and
        the name; without one (the host name stays out of what contacts
        see), with C{[xmpp] resource}. The publisher knows the base, to
        leave every instance's resource out of the user's clients.
        """
        plain = loadSettings(self.write(MINIMAL))
        self.assertEqual(plain.xmpp.session(plain.store.instance).resource, "sipxmpp")
        named = loadSettings(self.write(
            MINIMAL + "[store]\ninstance = gw-a\n[xmpp]\nresource = phone\n"))
        self.assertEqual(named.xmpp.session(named.store.instance).resource, "phone-gw-a")
        self.assertEqual(named.xmpp.publisher().gatewayResource, "phone")

    def test_ingestErrors(self) -> None:
        """
        A gateway with neither an upstream nor a publisher would learn
        nothing; bounds must be ordered; publishers are CIDRs.
        """
        self.assertConfigError("[sip]\nupstream =\ndomain = a.test\n",
                               "[sip] upstream = ''", "[ingest] publishers is empty")
        self.assertConfigError(MINIMAL + "[ingest]\nmin_expires = 600\nmax_expires = 300\n",
                               "[ingest] min_expires = '600'", "max_expires (300)")
        self.assertConfigError(MINIMAL + "[ingest]\npublishers = core.example\n",
                               "[ingest] publishers", "CIDRs")

    def test_subscribe(self) -> None:
        """
        C{[ingest] subscribe} names a server like the upstream (empty: off)
        and is a source of its own: with it, the upstream may be empty;
        C{subscribe_expires} is 3600 by default.
        """
        settings = loadSettings(self.write(MINIMAL))
        self.assertEqual((settings.ingest.subscribe, settings.ingest.subscribeExpires),
                         ("", 3600))  # fmt: skip
        settings = loadSettings(self.write(
            "[sip]\nupstream =\ndomain = a.test\n"
            "[ingest]\nsubscribe = sip:127.0.0.1:5070;transport=tcp\nsubscribe_expires = 60\n"
        ))  # fmt: skip
        self.assertEqual(settings.sip.upstream, "")
        self.assertEqual(settings.ingest.subscribe, "sip:127.0.0.1:5070;transport=tcp")
        self.assertEqual(settings.ingest.subscribeExpires, 60)
        self.assertConfigError("[sip]\nupstream =\ndomain = a.test\n[ingest]\nsubscribe =\n",
                               "[sip] upstream = ''", "[ingest] subscribe off")  # fmt: skip
        for value, fragment in [
            ("sip:alice@a.test", "expected a SIP URI of a server"),
            ("http://a.test", "expected a SIP URI"),
            ("sips:a.test", "TLS"),
        ]:
            self.assertConfigError(MINIMAL + f"[ingest]\nsubscribe = {value}\n",
                                   f"[ingest] subscribe = {value!r}", fragment)  # fmt: skip
        self.assertConfigError(MINIMAL + "[ingest]\nsubscribe_expires = 5\n",
                               "[ingest] subscribe_expires", "whole number from 10")  # fmt: skip

    def test_missingFile(self) -> None:
        error = self.assertRaises(ConfigError, loadSettings, "/nonexistent/sipxmpp.conf")
        self.assertEqual(
            str(error),
            "/nonexistent/sipxmpp.conf: cannot read configuration file: No such file or directory",
        )

    def test_requiredKey(self) -> None:
        self.assertConfigError("[sip]\ndomain = a.test\n", "[sip] upstream", "required")

    def test_badValues(self) -> None:
        """
        Each bad value names section, key, value and what was expected.
        """
        cases = [
            ("listen = udp:abc", "[sip] listen = 'udp:abc'", "not a number"),
            ("listen = http:80", "[sip] listen", "unknown endpoint type"),
            ("listen = udp:5060:interface=foo", "interface 'foo' is not an IP"),
            ("listen = udp:5060:bogus=1", "unknown option 'bogus'"),
            ("listen = ssl:5061", "needs privateKey"),
            ("trusted_networks = 10.0.0.0/33", "[sip] trusted_networks", "CIDRs"),
        ]
        for line, *fragments in cases:
            self.assertConfigError(MINIMAL + line + "\n", *fragments)
        self.assertConfigError(
            "[sip]\nupstream = http://x\ndomain = a.test\n",
            "[sip] upstream = 'http://x'",
            "expected a SIP URI",
        )
        self.assertConfigError(
            "[sip]\nupstream = sip:a.test\ndomain = not a domain\n", "[sip] domain"
        )
        for upstream, fragment in [
            ("sip:alice@a.test", "expected a SIP URI of a server"),
            ("sip:a.test;transport=tls", "TLS towards the upstream is not supported"),
            ("sips:a.test", "TLS towards the upstream is not supported"),
        ]:
            self.assertConfigError(
                f"[sip]\nupstream = {upstream}\ndomain = a.test\n", "[sip] upstream", fragment
            )
        self.assertConfigError(MINIMAL + "address = gateway.example\n", "[sip] address",
                               "IP address")
        self.assertConfigError(MINIMAL + "listen = udp:5060\n", "[sip] address", "required")
        self.assertConfigError(MINIMAL + "register_mode = rewrite\n", "[sip] register_mode")
        self.assertConfigError(MINIMAL + "dialog_watchdog = 5\n", "[sip] dialog_watchdog")
        self.assertConfigError(MINIMAL + "max_connections = 0\n", "[sip] max_connections",
                               "whole number from 1")
        self.assertConfigError(MINIMAL + "max_message_size = big\n", "[sip] max_message_size")
        self.assertConfigError(MINIMAL + "udp_receive_buffer = 4096\n", "[sip] udp_receive_buffer",
                               "whole number from 65536")
        self.assertConfigError(MINIMAL + "overload_lag = -1\n", "[sip] overload_lag",
                               "seconds from 0 to 10")
        self.assertConfigError(MINIMAL + "overload_backlog = 2\n", "[sip] overload_backlog",
                               "fraction from 0 to 1")
        for line, fragment in [
            ("mode = both", "expected one of remote-control, resource"),
            ("priority = 5", "negative integer"),
            ("priority = x", "negative integer"),
            ("require_tls = maybe", "expected yes or no"),
            ("server = host", "HOST:PORT"),
            ("server = tls:host", "tls:HOST:PORT (Direct TLS"),
            ("server = starttls:host:5222", "HOST:PORT"),
            ("server = ::1:5222", "HOST:PORT"),
            ("server = tls:h:65536", "HOST:PORT"),
            ("resource = a/b", "resource"),
            ("status_text = ", "non-empty"),
        ]:
            self.assertConfigError(MINIMAL + "[xmpp]\n" + line + "\n", "[xmpp]", fragment)
        self.assertConfigError(MINIMAL + "[store]\nurl = mysql://x\n", "[store] url")
        self.assertConfigError(MINIMAL + "[http]\nlisten = udp:80\n", "[http] listen")
        self.assertConfigError(MINIMAL + "[log]\nlevel = loud\n", "[log] level")

    def test_directTLSServer(self) -> None:
        """
        C{[xmpp] server = tls:HOST:PORT} asks for Direct TLS (XEP-0368),
        spelled one way whatever the case of the prefix.
        """
        for line, server in [("tls:xmpp.example.test:5223", "tls:xmpp.example.test:5223"),
                             ("TLS:[::1]:5223", "tls:[::1]:5223"),
                             ("127.0.0.1:5222", "127.0.0.1:5222")]:
            settings = loadSettings(self.write(MINIMAL + f"[xmpp]\nserver = {line}\n"))
            self.assertEqual(settings.xmpp.server, server)
            self.assertEqual(settings.xmpp.session().server, server)

    def test_boshURL(self) -> None:
        """
        C{[xmpp] bosh_url} carries every session over BOSH: it is the
        sessions' server; plain http only to a loopback host.
        """
        url = "https://xmpp.example.test:5281/http-bind"
        settings = loadSettings(self.write(MINIMAL + f"[xmpp]\nbosh_url = {url}\n"))
        self.assertEqual(settings.xmpp.boshUrl, url)
        self.assertEqual(settings.xmpp.session().server, url)
        local = "http://127.0.0.1:5280/http-bind"
        settings = loadSettings(self.write(MINIMAL + f"[xmpp]\nbosh_url = {local}\n"))
        self.assertEqual(settings.xmpp.session().server, local)
        self.assertEqual(loadSettings(self.write(MINIMAL)).xmpp.session().server, "")

    def test_boshURLRefused(self) -> None:
        """
        Clear text to a network host, another scheme, or both a server and a
        BOSH URL are refused.
        """
        self.assertConfigError(MINIMAL + "[xmpp]\nbosh_url = http://xmpp.example.test/http-bind\n",
                               "[xmpp] bosh_url", "loopback")  # fmt: skip
        self.assertConfigError(MINIMAL + "[xmpp]\nbosh_url = xmpp.example.test:5280\n",
                               "[xmpp] bosh_url", "expected a BOSH URL")  # fmt: skip
        self.assertConfigError(
            MINIMAL + "[xmpp]\nserver = 127.0.0.1:5222\nbosh_url = https://h.example/http-bind\n",
            "[xmpp] bosh_url", "not both",
        )

    def test_unknownNames(self) -> None:
        self.assertConfigError(MINIMAL + "[sipp]\n", "[sipp]", "unknown section")
        self.assertConfigError(MINIMAL + "upstreams = x\n", "[sip] upstreams", "unknown key")

    def test_syntaxErrors(self) -> None:
        self.assertConfigError("upstream = x\n", "line 1", "[section] header")
        self.assertConfigError(MINIMAL + "domain = b.test\n", "domain is set twice")
        self.assertConfigError(MINIMAL + "just words\n", "line 4", "key = value")
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"[sip]\ndomain = \xff\n")
        self.assertIn("not UTF-8", str(self.assertRaises(ConfigError, loadSettings, path)))

    def test_channelBinding(self) -> None:
        """
        C{[xmpp] channel_binding}: C{auto} by default, C{off} on request,
        nothing else.
        """
        self.assertEqual(loadSettings(self.write(MINIMAL)).xmpp.session().channelBinding, "auto")
        settings = loadSettings(self.write(MINIMAL + "[xmpp]\nchannel_binding = off\n"))
        self.assertEqual(settings.xmpp.session().channelBinding, "off")
        self.assertConfigError(MINIMAL + "[xmpp]\nchannel_binding = tls-unique\n",
                               "[xmpp] channel_binding", "expected one of auto, off")

    def test_streamManagement(self) -> None:
        """
        C{[xmpp] stream_management}: on by default, off on request, a
        boolean.
        """
        self.assertTrue(loadSettings(self.write(MINIMAL)).xmpp.session().streamManagement)
        settings = loadSettings(self.write(MINIMAL + "[xmpp]\nstream_management = no\n"))
        self.assertFalse(settings.xmpp.session().streamManagement)
        self.assertConfigError(MINIMAL + "[xmpp]\nstream_management = sometimes\n",
                               "[xmpp] stream_management")


class LiveSettingsTests(SynchronousTestCase):
    """
    L{liveSettings}: what a re-read file changes while running.
    """

    def load(self, extra: str) -> Settings:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(MINIMAL + extra)
        return loadSettings(path)

    def test_liveAndRestart(self) -> None:
        running = self.load("[xmpp]\nstatus_text = Busy\n[log]\nlevel = info\n")
        new = self.load("[xmpp]\nstatus_text = Telefoniere\npriority = -5\n"
                        "failed_retry_delay = 30\n[log]\nlevel = debug\n")
        merged, live, restart = liveSettings(running, new)
        self.assertEqual(live, [("xmpp", "status_text"), ("xmpp", "failed_retry_delay"),
                                ("log", "level")])
        self.assertEqual(restart, [("xmpp", "priority")])
        self.assertEqual((merged.xmpp.statusText, merged.xmpp.failedRetryDelay,
                          merged.log.level), ("Telefoniere", 30, "debug"))
        # A key that needs a restart keeps its running value.
        self.assertEqual(merged.xmpp.priority, -1)
        self.assertEqual(changedKeys(merged, new), [("xmpp", "priority")])

    def test_unchanged(self) -> None:
        running = self.load("")
        self.assertEqual(liveSettings(running, self.load("")), (running, [], []))

    def test_liveKeysExist(self) -> None:
        for section, key in LIVE_KEYS:
            self.assertIn(key, SCHEMA[section])
