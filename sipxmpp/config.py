"""
The configuration file: one INI file read into typed, validated settings.

Every key has a default and a parser in L{SCHEMA}; the parsers raise
C{ValueError} with what they expected, and L{loadSettings} turns that into a
L{ConfigError} naming the file, section, key and bad value, so an operator
sees one line that says exactly what to fix. Unknown sections and keys are
errors too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sipxmpp.sip.core.proxy import Network
from sipxmpp.sip.shell.endpoints import EndpointSyntaxError, ListenSpec, parseListen
from sipxmpp.sip.shell.service import (
    BackpublishSettings,
    IngestSettings,
    SIPSettings,
    firstWorkerPort,
)
from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.uri import SIPURI, parseURI
from sipxmpp.store.addresses import InvalidAddress, normaliseAoR
from sipxmpp.store.opening import StoreSettings
from sipxmpp.xmpp.bosh import checkBOSHURL
from sipxmpp.xmpp.endpoints import parseServer
from sipxmpp.xmpp.publisher import PublisherSettings
from sipxmpp.xmpp.resources import gatewayResource
from sipxmpp.xmpp.sasl import CHANNEL_BINDING_MODES
from sipxmpp.xmpp.session import SessionSettings

DEFAULT_CONFIG_PATH = "/etc/sipxmpp/sipxmpp.conf"



class ConfigError(Exception):
    """
    The configuration is unusable. C{str()} is a single line for operators.
    """

    def __init__(
        self,
        path: str,
        message: str,
        section: str | None = None,
        key: str | None = None,
        value: str | None = None,
    ) -> None:
        self.path = path
        self.section = section
        self.key = key
        self.value = value
        self.message = message
        where = path
        if section is not None:
            where += f": [{section}]"
            if key is not None:
                where += f" {key}"
                if value is not None:
                    where += f" = {value!r}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class XMPPSettings:
    """
    C{[xmpp]}: how the publisher logs in and what it shows.
    """

    mode: str
    resource: str
    priority: int
    statusText: str
    caFile: str
    requireTLS: bool
    server: str
    boshUrl: str
    ringingText: str
    holdText: str
    publishActivity: bool
    logoutGrace: float
    commandTimeout: float
    pingInterval: float
    pingTimeout: float
    reconnectMaxDelay: float
    failedRetryDelay: float
    loginConcurrency: int
    loginRate: float
    loginTimeout: float
    clientState: str
    channelBinding: str
    streamManagement: bool

    def session(self, instance: str = "") -> SessionSettings:
        """
        What every XMPP session takes from C{[xmpp]}; C{instance} is C{[store]
        instance}: when set, the resource names it (L{gatewayResource}), so
        instances sharing a store never log in with the same full JID. The
        host name, the default instance name, is not put in the resource:
        every contact of the user sees the resource.
        """
        return SessionSettings(
            resource=gatewayResource(self.resource, instance),
            # One place to connect: the BOSH URL is a server of its own kind.
            server=self.boshUrl or self.server,
            requireTLS=self.requireTLS,
            pingInterval=self.pingInterval,
            pingTimeout=self.pingTimeout,
            reconnectMaxDelay=self.reconnectMaxDelay,
            failedRetryDelay=self.failedRetryDelay,
            loginConcurrency=self.loginConcurrency,
            loginRate=self.loginRate,
            loginTimeout=self.loginTimeout,
            clientStateInactive=self.clientState == "inactive",
            channelBinding=self.channelBinding,
            streamManagement=self.streamManagement,
        )

    def publisher(self) -> PublisherSettings:
        """
        What the publisher takes from C{[xmpp]}.
        """
        return PublisherSettings(
            mode=self.mode,
            priority=self.priority,
            statusText=self.statusText,
            ringingText=self.ringingText,
            holdText=self.holdText,
            publishActivity=self.publishActivity,
            logoutGrace=self.logoutGrace,
            commandTimeout=self.commandTimeout,
            gatewayResource=self.resource,
        )


@dataclass(frozen=True)
class HTTPSettings:
    """
    C{[http]}: the operations endpoint (metrics, health, status page).
    """

    listen: str


@dataclass(frozen=True)
class LogSettings:
    """
    C{[log]}: verbosity and output format.
    """

    level: str
    format: str


@dataclass(frozen=True)
class Settings:
    """
    The whole configuration.
    """

    path: str
    sip: SIPSettings
    ingest: IngestSettings
    xmpp: XMPPSettings
    store: StoreSettings
    http: HTTPSettings
    log: LogSettings
    backpublish: BackpublishSettings = BackpublishSettings()


# --- value parsers: each raises ValueError("expected ...") ---


def _listenList(text: str) -> tuple[ListenSpec, ...]:
    specs = []
    for word in text.split():
        try:
            specs.append(parseListen(word))
        except EndpointSyntaxError as e:
            raise ValueError(
                f"{e}; expected space-separated endpoints like "
                "'udp:5060:interface=127.0.0.1 tcp:5060:interface=127.0.0.1'"
            ) from None
    if not specs:
        raise ValueError("expected at least one endpoint, e.g. udp:5060")
    return tuple(specs)


_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"


def _sipURI(text: str) -> str:
    # The upstream is a server: scheme, host, port and URI parameters such
    # as transport=tcp, no user part. Parsed by the SIP stack's own parser.
    # Empty: no upstream, the gateway forwards nothing (a pure publisher).
    if not text:
        return text
    expected = "expected a SIP URI of a server, like sip:127.0.0.1:5070;transport=udp"
    try:
        uri = parseURI(text)
    except SIPParseError:
        raise ValueError(expected) from None
    if not isinstance(uri, SIPURI) or uri.user is not None or uri.headers:
        raise ValueError(expected)
    transport = (uri.params.get("transport") or "udp").lower()
    if uri.secure or transport not in ("udp", "tcp"):
        raise ValueError("transport must be udp or tcp (TLS towards the upstream is not supported)")
    return text


def _ipAddress(text: str) -> str:
    if not text:
        return text
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ValueError("expected an IP address, like 192.0.2.10") from None


_DOMAIN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$")


def _domain(text: str) -> str:
    if not _DOMAIN.match(text):
        raise ValueError("expected a DNS domain name, like example.com")
    return text.lower()


def _watchers(text: str) -> tuple[str, ...]:
    # SIP watcher AoRs (normal form, as the presence agent compares them)
    # or domains (every AoR of that host).
    allowed = []
    for word in text.split():
        if ":" in word or "@" in word:
            try:
                allowed.append(normaliseAoR(word))
            except InvalidAddress as e:
                raise ValueError(str(e)) from None
        elif _DOMAIN.match(word):
            allowed.append(word.lower())
        else:
            raise ValueError(f"{word!r} is neither a SIP AoR like sip:bob@example.test "
                             "nor a domain like example.test")  # fmt: skip
    return tuple(allowed)


def _networks(text: str) -> tuple[Network, ...]:
    nets = []
    for word in text.split():
        try:
            nets.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            raise ValueError(
                f"{word!r} is not a network; expected space-separated CIDRs "
                "like '127.0.0.0/8 10.0.0.0/8'"
            ) from None
    return tuple(nets)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return text.lower()

    return parse


def _negativeInt(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a negative integer, like -1") from None
    if not -128 <= value < 0:
        raise ValueError(
            "expected a negative integer from -128 to -1 (the gateway's "
            "resource must never receive the user's messages)"
        )
    return value


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    raise ValueError("expected yes or no")


def _text(text: str) -> str:
    return text


def _nonEmpty(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a non-empty value")
    return text.strip()


def _resource(text: str) -> str:
    if not text or any(c.isspace() or c in "/@" for c in text) or len(text) > 1023:
        raise ValueError("expected an XMPP resource without spaces, '/' or '@'")
    return text


def _serverEndpoint(text: str) -> str:
    # Optional HOST:PORT (STARTTLS) or tls:HOST:PORT (Direct TLS) that
    # replaces DNS SRV lookups for the XMPP server.
    if not text:
        return text
    try:
        return str(parseServer(text))
    except ValueError as e:
        raise ValueError(f"{e}; or empty for DNS SRV") from None


def _boshURL(text: str) -> str:
    # Optional BOSH (XEP-0206) service that carries every session instead.
    return checkBOSHURL(text) if text else text


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number of seconds from {low:g} to {high:g}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a number of seconds from {low:g} to {high:g}")
        return value

    return parse


def _perSecond(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not low <= value <= high:
            raise ValueError(f"expected a rate per second from {low:g} to {high:g}")
        return value

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return int(text)

    return parse


def _workers(text: str) -> int:
    if text.strip().lower() == "auto":
        return max(1, min(64, os.cpu_count() or 1))
    try:
        return _integer(1, 64)(text)
    except ValueError:
        raise ValueError("expected auto (the machine's cores) or a whole number from 1 to 64"
                         ) from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a fraction from 0 to 1") from None
    if not 0 <= value <= 1:
        raise ValueError("expected a fraction from 0 to 1")
    return value


_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _instanceName(text: str) -> str:
    if text and not _INSTANCE.match(text):
        raise ValueError("expected a name of letters, digits, '.', '_' or '-' (at most 64), "
                         "or empty for the host name")
    return text


def _storeURL(text: str) -> str:
    if text.startswith("sqlite:///") and len(text) > len("sqlite:///"):
        return text
    if text.startswith(("postgresql://", "postgres://")):
        return text
    raise ValueError("expected sqlite:///PATH or postgresql://USER@HOST/DB")


def _httpListen(text: str) -> str:
    try:
        spec = parseListen(text)
    except EndpointSyntaxError as e:
        raise ValueError(f"{e}; expected an endpoint like tcp:8080:interface=127.0.0.1") from None
    if spec.transport == "UDP":
        raise ValueError("expected a tcp: or ssl: endpoint, not udp:")
    return spec.description


@dataclass(frozen=True)
class Key:
    """
    One configuration key: its default (C{None} means required) and parser.
    """

    default: str | None
    parse: Callable[[str], Any]


SCHEMA: Mapping[str, Mapping[str, Key]] = {
    "sip": {
        "listen": Key("udp:5060:interface=127.0.0.1 tcp:5060:interface=127.0.0.1", _listenList),
        "upstream": Key(None, _sipURI),
        "domain": Key(None, _domain),
        "trusted_networks": Key("127.0.0.0/8 ::1/128", _networks),
        "address": Key("", _ipAddress),
        "register_mode": Key("path", _choice("path", "contact")),
        "dialog_watchdog": Key("14400", _seconds(60, 7 * 86400)),
        "stream_idle_timeout": Key("600", _seconds(1, 86400)),
        "max_connections": Key("1024", _integer(1, 1_000_000)),
        "udp_receive_buffer": Key("4194304", _integer(65_536, 1_073_741_824)),
        "overload_backlog": Key("0.25", _fraction),
        "overload_lag": Key("1", _seconds(0, 10)),
        "max_message_size": Key("65535", _integer(1024, 1_048_576)),
        "max_headers": Key("256", _integer(16, 4096)),
        "max_header_length": Key("8192", _integer(256, 1_048_576)),
        "max_body_size": Key("65535", _integer(0, 1_048_576)),
        "workers": Key("1", _workers),
        "worker_ports": Key("0", _integer(0, 65535)),
    },
    "ingest": {
        "publishers": Key("", _networks),
        "min_expires": Key("5", _integer(1, 3600)),
        "max_expires": Key("3600", _integer(60, 7 * 86400)),
        "subscribe": Key("", _sipURI),
        "subscribe_expires": Key("3600", _integer(10, 7 * 86400)),
    },
    "backpublish": {
        "mode": Key("off", _choice("off", "serve", "publish")),
        "presence_server": Key("", _sipURI),
        "allowed_watchers": Key("", _watchers),
        "min_expires": Key("60", _integer(1, 3600)),
        "max_expires": Key("3600", _integer(60, 7 * 86400)),
    },
    "xmpp": {
        "mode": Key("remote-control", _choice("remote-control", "resource")),
        "resource": Key("sipxmpp", _resource),
        "priority": Key("-1", _negativeInt),
        "status_text": Key("I am currently on the phone", _nonEmpty),
        "ca_file": Key("", _text),
        "require_tls": Key("yes", _boolean),
        "server": Key("", _serverEndpoint),
        "bosh_url": Key("", _boshURL),
        "ringing_text": Key("My phone is ringing", _nonEmpty),
        "hold_text": Key("I have a call on hold", _nonEmpty),
        "publish_activity": Key("no", _boolean),
        "logout_grace": Key("300", _seconds(0, 86400)),
        "command_timeout": Key("10", _seconds(0.1, 300)),
        "ping_interval": Key("60", _seconds(1, 3600)),
        "ping_timeout": Key("20", _seconds(0.1, 600)),
        "reconnect_max_delay": Key("60", _seconds(1, 3600)),
        "failed_retry_delay": Key("600", _seconds(10, 86400)),
        "login_concurrency": Key("100", _integer(1, 100000)),
        "login_rate": Key("200", _perSecond(0, 100000)),
        "login_timeout": Key("60", _seconds(1, 3600)),
        "client_state": Key("active", _choice("active", "inactive")),
        "channel_binding": Key("auto", _choice(*CHANNEL_BINDING_MODES)),
        "stream_management": Key("yes", _boolean),
    },
    "store": {
        "url": Key("sqlite:////var/lib/sipxmpp/sipxmpp.sqlite", _storeURL),
        "key_file": Key("/etc/sipxmpp/secret.key", _nonEmpty),
        "instance": Key("", _instanceName),
    },
    "http": {
        "listen": Key("tcp:8080:interface=127.0.0.1", _httpListen),
    },
    "log": {
        "level": Key("info", _choice("debug", "info", "warn", "error", "critical")),
        "format": Key("text", _choice("text", "json")),
    },
}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    name = head + "".join(word.capitalize() for word in rest)
    return {"requireTls": "requireTLS"}.get(name, name)


def loadSettings(
    path: str, overrides: Mapping[tuple[str, str], str] | None = None
) -> Settings:
    """
    Read, merge with C{overrides} (from the command line) and validate.

    @param overrides: C{(section, key) -> raw value}, applied over the file.
    @raise ConfigError: with a one-line explanation of the first problem.
    """
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except OSError as e:
        raise ConfigError(path, f"cannot read configuration file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "configuration file is not UTF-8 text") from None
    except configparser.Error as e:
        raise ConfigError(path, _describeParserError(e)) from None

    raw: dict[str, dict[str, str]] = {section: {} for section in SCHEMA}
    for section in parser.sections():
        if section not in SCHEMA:
            raise ConfigError(
                path, "unknown section; expected one of " + ", ".join(f"[{s}]" for s in SCHEMA),
                section,
            )
        for key, value in parser.items(section):
            if key not in SCHEMA[section]:
                raise ConfigError(
                    path, "unknown key; expected one of " + ", ".join(SCHEMA[section]),
                    section, key,
                )
            raw[section][key] = value.strip()
    for (section, key), value in (overrides or {}).items():
        if section not in SCHEMA or key not in SCHEMA[section]:
            raise ConfigError("command line", "unknown key", section, key)
        raw[section][key] = value.strip()

    parsed: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        parsed[section] = {}
        for key, spec in keys.items():
            text = raw[section].get(key, spec.default)
            if text is None:
                raise ConfigError(path, "required key is missing", section, key)
            try:
                parsed[section][_camel(key)] = spec.parse(text)
            except ValueError as e:
                raise ConfigError(path, str(e), section, key, text) from None

    ingest = parsed["ingest"]
    if ingest["minExpires"] > ingest["maxExpires"]:
        raise ConfigError(path, f"must not be above max_expires ({ingest['maxExpires']})",
                          "ingest", "min_expires", str(ingest["minExpires"]))
    if not parsed["sip"]["upstream"] and not ingest["publishers"] and not ingest["subscribe"]:
        raise ConfigError(
            path, "empty, and [ingest] publishers is empty too and [ingest] subscribe off: "
            "the gateway would learn nothing; name the SIP core to forward to, the "
            "publishers allowed to PUBLISH, or a server to SUBSCRIBE at",
            "sip", "upstream", "",
        )
    backpublish = parsed["backpublish"]
    if backpublish["minExpires"] > backpublish["maxExpires"]:
        raise ConfigError(path, f"must not be above max_expires ({backpublish['maxExpires']})",
                          "backpublish", "min_expires", str(backpublish["minExpires"]))
    if backpublish["mode"] == "publish" and not backpublish["presenceServer"]:
        raise ConfigError(path, "required with mode = publish: the SIP URI of the presence "
                          "server to PUBLISH at, like sip:127.0.0.1:5070;transport=udp",
                          "backpublish", "presence_server", "")
    if not parsed["sip"]["address"] and not any(s.interface for s in parsed["sip"]["listen"]):
        raise ConfigError(
            path, "required when no listen endpoint names an interface: the IP address "
            "phones and the upstream reach the gateway at", "sip", "address",
        )
    if parsed["xmpp"]["boshUrl"] and parsed["xmpp"]["server"]:
        raise ConfigError(path, "set either server or bosh_url, not both", "xmpp", "bosh_url",
                          parsed["xmpp"]["boshUrl"])  # fmt: skip
    _checkWorkers(path, parsed)
    return Settings(
        path=path,
        sip=SIPSettings(**parsed["sip"]),
        ingest=IngestSettings(**parsed["ingest"]),
        xmpp=XMPPSettings(**parsed["xmpp"]),
        store=StoreSettings(**parsed["store"]),
        http=HTTPSettings(**parsed["http"]),
        log=LogSettings(**parsed["log"]),
        backpublish=BackpublishSettings(**parsed["backpublish"]),
    )


def _checkWorkers(path: str, parsed: dict[str, dict[str, Any]]) -> None:
    """
    C{[sip] workers} above 1 runs the proxy in worker processes: what those
    cannot do yet is refused at start, never silently dropped.
    """
    sip = parsed["sip"]
    if sip["workers"] == 1:
        return
    value = str(sip["workers"])
    refusals = [
        (any(s.transport == "TLS" for s in sip["listen"]), "an ssl: listen endpoint"),
        (any(s.port == 0 for s in sip["listen"]), "a listen port 0 (each worker must bind "
                                                   "the same port)"),
        (bool(parsed["ingest"]["publishers"]), "[ingest] publishers"),
        (bool(parsed["ingest"]["subscribe"]), "[ingest] subscribe"),
        (parsed["backpublish"]["mode"] != "off", "[backpublish] mode other than off"),
    ]
    for refused, what in refusals:
        if refused:
            raise ConfigError(path, f"worker processes do not support {what} yet; "
                              "set workers = 1", "sip", "workers", value)
    if firstWorkerPort(sip["listen"], sip["workerPorts"]) + sip["workers"] - 1 > 65535:
        raise ConfigError(path, "the workers' ports would pass 65535", "sip", "worker_ports",
                          str(sip["workerPorts"]))


# The keys a running gateway applies when it re-reads the file (SIGHUP);
# every other key takes effect at the next start.
LIVE_KEYS: frozenset[tuple[str, str]] = frozenset({
    ("log", "level"),
    ("xmpp", "mode"),
    ("xmpp", "status_text"),
    ("xmpp", "ringing_text"),
    ("xmpp", "hold_text"),
    ("xmpp", "logout_grace"),
    ("xmpp", "command_timeout"),
    ("xmpp", "failed_retry_delay"),
})


def changedKeys(old: Settings, new: Settings) -> list[tuple[str, str]]:
    """
    Return the C{(section, key)} pairs whose value differs between C{old}
    and C{new}, in the order of L{SCHEMA}.
    """
    changed = []
    for section, keys in SCHEMA.items():
        before, after = getattr(old, section), getattr(new, section)
        for key in keys:
            if getattr(before, _camel(key)) != getattr(after, _camel(key)):
                changed.append((section, key))
    return changed


def liveSettings(running: Settings, new: Settings) -> tuple[Settings, list[tuple[str, str]],
                                                            list[tuple[str, str]]]:
    """
    Merge a re-read configuration into the C{running} one.

    @return: the settings to run with (C{running} with the live keys of
        C{new}), the live keys that changed and the changed keys that need
        a restart.
    """
    changed = changedKeys(running, new)
    live = [k for k in changed if k in LIVE_KEYS]
    restart = [k for k in changed if k not in LIVE_KEYS]
    sections: dict[str, Any] = {}
    for section, key in live:
        fields = sections.setdefault(section, {})
        fields[_camel(key)] = getattr(getattr(new, section), _camel(key))
    merged = running
    for section, fields in sections.items():
        merged = replace(merged, **{section: replace(getattr(merged, section), **fields)})
    return merged, live, restart


def _describeParserError(e: configparser.Error) -> str:
    # configparser's messages span lines and repeat the file name.
    if isinstance(e, configparser.DuplicateOptionError):
        return f"line {e.lineno}: [{e.section}] {e.option} is set twice"
    if isinstance(e, configparser.DuplicateSectionError):
        return f"line {e.lineno}: section [{e.section}] appears twice"
    if isinstance(e, configparser.MissingSectionHeaderError):
        return f"line {e.lineno}: expected a [section] header before {e.line.strip()!r}"
    if isinstance(e, configparser.ParsingError):
        lineno, line = e.errors[0]
        return f"line {lineno}: cannot parse {line.strip()!r} (expected key = value)"
    return " ".join(str(e).split())
