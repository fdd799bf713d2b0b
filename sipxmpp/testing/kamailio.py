"""
A real Kamailio 5.6 as the telco registrar behind the gateway.

Kamailio runs in the foreground (C{kamailio -DD -E}) with the static
C{etc/kamailio.cfg}; listening sockets, worker count, memory and switches
are given on the command line.  It is ready when it answers an OPTIONS over
UDP, which proves that its workers run the routing script.

L{KamailioPuaServer} runs C{etc/kamailio-pua.cfg} instead: Kamailio as the
telco's proxy, PUBLISHing its users' dialog state (pua_dialoginfo) to a
presence server such as sipxmpp.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.trial.unittest import FailTest, SkipTest

from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, tcpAccepting
from sipxmpp.testing.process import (
    MissingBinary,
    ServerProcess,
    findBinary,
    isCI,
    runCommand,
)
from sipxmpp.testing.templates import etcPath


def sipOptions(host: str, port: int, timeout: float = 0.5) -> int | None:
    """
    Send one OPTIONS over UDP to C{sip:host:port} and return the status
    code of the response, or L{None} if none came within C{timeout}.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        localPort = sock.getsockname()[1]
        tag = uuid.uuid4().hex[:10]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{localPort};branch=z9hG4bK{tag};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{host}>;tag={tag}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {tag}@{host}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.settimeout(timeout)
        sock.sendto(request.encode("ascii"), (host, port))
        try:
            data = sock.recv(65536)
        except OSError:
            return None
    statusLine = data.split(b"\r\n", 1)[0].split()
    if len(statusLine) < 2 or not statusLine[1].isdigit():
        return None
    return int(statusLine[1])


class KamailioServer(ServerProcess):
    """
    Kamailio as an in-memory registrar and proxy for one domain.

    It honours Path on REGISTER and follows it on lookup, Record-Routes
    dialog-forming requests, loose-routes in-dialog ones, relays statefully
    and refuses to forward anywhere but 127.0.0.0/8.

    @ivar domain: the SIP domain it serves.
    @ivar host: the loopback address it listens on.
    @ivar port: its port, for both UDP and TCP.
    @ivar uri: C{sip:HOST:PORT}, e.g. for the gateway's upstream setting.
    @ivar configFile: the configuration in use.
    @ivar users: user name -> password, when digest auth is on.
    """

    name = "kamailio"

    def __init__(
        self,
        domain: str = "example.test",
        host: str = LOOPBACK,
        port: int | None = None,
        baseDir: str | None = None,
        children: int = 2,
        shmMB: int = 64,
        pkgMB: int = 8,
        maxBuffer: int = 262144,
        auth: bool = False,
        users: Mapping[str, str] | None = None,
        pathMode: int = 1,
        debug: bool = False,
        config: str | None = None,
        defines: Iterable[str] = (),
    ) -> None:
        """
        @param port: the UDP and TCP port; a free one if L{None}.
        @param children: worker processes per listening socket (C{-n}).
        @param shmMB: shared memory, MB (C{-m}); raise it for load tests.
        @param pkgMB: private memory per process, MB (C{-M}).
        @param maxBuffer: cap of the UDP receive buffer auto-probe, bytes.
        @param auth: digest-authenticate REGISTER and INVITE (C{WITH_AUTH}).
        @param users: user name -> password for C{auth}.
        @param pathMode: registrar C{path_mode}: 1 stores Path whatever the
            UA supports, 2 answers 420 without "Supported: path".
        @param debug: log every request and reply.
        @param config: the configuration (default: C{etc/kamailio.cfg}).
        @param defines: more C{-A} pre-processor defines.
        """
        super().__init__(baseDir, autoPorts=port is None)
        self.domain = domain
        self.host = host
        self.port = port if port is not None else freeSIPPort(host)
        self.children = children
        self.shmMB = shmMB
        self.pkgMB = pkgMB
        self.maxBuffer = maxBuffer
        self.auth = auth
        self.users = dict(users or {})
        self.pathMode = pathMode
        self.debug = debug
        self.configFile = config or etcPath("kamailio.cfg")
        self.defines = list(defines)
        self.pidFile = os.path.join(self.baseDir, "kamailio.pid")
        self.usersFile = os.path.join(self.baseDir, "kamailio-users.cfg")
        self.binary = findBinary("kamailio")

    @property
    def uri(self) -> str:
        """
        The SIP URI of this proxy.
        """
        return f"sip:{self.host}:{self.port}"

    def prepare(self) -> None:
        if self.auth:
            # Imported by the config's htable init route from the working
            # directory; passwords must not hold a quote or backslash.
            with open(self.usersFile, "w", encoding="utf-8") as f:
                for user, password in sorted(self.users.items()):
                    if any(c in user + password for c in '"\\\n'):
                        raise ValueError(f"unsupported character in credentials of {user!r}")
                    f.write(f'$sht(users=>{user}) = "{password}";\n')

    def command(self) -> list[str]:
        defines = [
            f'SIP_DOMAIN="{self.domain}"',
            f"PATH_MODE={self.pathMode}",
            f"MAX_BUFFER={self.maxBuffer}",
            *(["WITH_AUTH"] if self.auth else []),
            *(["WITH_DEBUG"] if self.debug else []),
            *self.defines,
        ]
        args = [
            self.binary,
            "-DD",  # foreground: the main process is our child
            "-E",  # log to stderr, i.e. the console log
            "-f",
            self.configFile,
            "-l",
            f"udp:{self.host}:{self.port}",
            "-l",
            f"tcp:{self.host}:{self.port}",
            "-n",
            str(self.children),
            "-m",
            str(self.shmMB),
            "-M",
            str(self.pkgMB),
            "-S",  # no SCTP
            "-Y",
            self.baseDir,  # runtime dir, instead of /run/kamailio
            "-w",
            self.baseDir,  # working dir, where import_file looks
            "-P",
            self.pidFile,
        ]
        for define in defines:
            args += ["-A", define]
        return args

    def isReady(self) -> bool:
        return tcpAccepting(self.host, self.port) and sipOptions(self.host, self.port) == 200

    def choosePorts(self) -> None:
        self.port = freeSIPPort(self.host)

    def listenPorts(self) -> list[tuple[str, str, int]]:
        return [("udp", self.host, self.port), ("tcp", self.host, self.port)]


@functools.lru_cache(maxsize=1)
def moduleDirectories() -> tuple[str, ...]:
    """
    Return the folders the installed Kamailio loads its modules from, as
    C{kamailio -I} reports them (Debian:
    C{/usr/lib/x86_64-linux-gnu/kamailio/modules}).

    @raise MissingBinary: if Kamailio is not installed.
    """
    result = runCommand([findBinary("kamailio"), "-I"], timeout=10, check=False)
    for line in result.stdout.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "default paths to modules":
            return tuple(path for path in value.strip().split(":") if path)
    return ()


def missingModules(*names: str) -> list[str]:
    """
    Return those of the Kamailio modules C{names} (without C{.so}) that
    are not installed; all of them if Kamailio itself is not.
    """
    try:
        folders = moduleDirectories()
    except MissingBinary:
        return list(names)
    return [
        name
        for name in names
        if not any(os.path.exists(os.path.join(folder, name + ".so")) for folder in folders)
    ]


def requireModules(*names: str) -> None:
    """
    Skip the calling test if one of the Kamailio modules C{names} is not
    installed, or fail it under C{CI=true} (see
    L{sipxmpp.testing.process.requireBinaries}).

    @raise SkipTest: locally, when a module is missing.
    @raise FailTest: under CI, when a module is missing.
    """
    missing = missingModules(*names)
    if not missing:
        return
    reason = (
        f"Kamailio module(s) not installed: {', '.join(missing)}"
        " (Debian: apt-get install kamailio kamailio-presence-modules)"
    )
    if isCI():
        raise FailTest(reason + " (CI=true: missing servers fail instead of skipping)")
    raise SkipTest(reason)


class KamailioPuaServer(KamailioServer):
    """
    Kamailio with C{etc/kamailio-pua.cfg}: registrar and proxy for one
    domain that tracks every call it relays (dialog) and PUBLISHes the
    caller's and the callee's dialog state (pua_dialoginfo) to
    C{publishTo}.

    pua cannot start without a database; it gets a private db_text one in
    C{baseDir/pua-db}, made from the table files the kamailio package
    ships, and otherwise works from memory.

    @ivar publishTo: where every PUBLISH goes (pua's outbound proxy).
    """

    name = "kamailio-pua"

    modules = ("dialog", "db_text", "pua", "pua_dialoginfo")
    """
    The modules the configuration needs beyond L{KamailioServer}'s.
    """

    tables = ("version", "pua")
    """
    The db_text files pua needs: its table and the table versions.
    """

    def __init__(self, publishTo: str, **kwargs: Any) -> None:
        """
        @param publishTo: a SIP URI on 127.0.0.0/8, e.g.
            C{sip:127.0.0.1:5090} (the configuration refuses any other).
        @param kwargs: as for L{KamailioServer} (C{auth} is not supported).
        """
        if kwargs.get("auth"):
            raise ValueError("etc/kamailio-pua.cfg does no digest authentication")
        kwargs.setdefault("config", etcPath("kamailio-pua.cfg"))
        super().__init__(**kwargs)
        self.publishTo = publishTo
        self.dbDir = os.path.join(self.baseDir, "pua-db")
        self.defines += [f'PUBLISH_TO="{publishTo}"', f'PUA_DB_URL="text://{self.dbDir}"']

    @staticmethod
    def schemaDir() -> str:
        """
        The folder of the db_text table files of the installed Kamailio
        (Debian: C{/usr/share/kamailio/dbtext/kamailio}).
        """
        prefix = os.path.dirname(os.path.dirname(findBinary("kamailio")))
        return os.path.join(prefix, "share", "kamailio", "dbtext", "kamailio")

    def prepare(self) -> None:
        super().prepare()
        os.makedirs(self.dbDir, exist_ok=True)
        for table in self.tables:
            source = os.path.join(self.schemaDir(), table)
            if not os.path.exists(source):
                raise FileNotFoundError(f"{source} not found: is the kamailio package complete?")
            shutil.copyfile(source, os.path.join(self.dbDir, table))


# --- scale-out: Kamailio dispatcher in front of several sipxmpp (issue 15, item 6) ---


class KamailioDispatcherServer(KamailioServer):
    """
    Kamailio with C{etc/kamailio-dispatcher.cfg}: takes the PUBLISHes of a
    core (L{KamailioPuaServer} with C{publishTo=} this server's L{uri}) and
    relays each to one of C{destinations}, chosen by a hash of the
    Request-URI's user part among those that answer its OPTIONS probes.

    The dispatcher list file (set 1, C{destinations} in order) is written
    to C{baseDir/dispatcher.list} at start.

    @ivar destinations: the sipxmpp instances' SIP URIs, in hash order.
    @ivar ctlSocket: the BINRPC socket (C{kamcmd -s unix:PATH}), for
        L{dispatcherStates}.
    """

    name = "kamailio-dispatcher"

    modules = ("dispatcher", "ctl")
    """
    The modules the configuration needs beyond L{KamailioServer}'s.
    """

    def __init__(
        self,
        destinations: Iterable[str],
        pingInterval: int = 1,
        probingThreshold: int = 1,
        inactiveThreshold: int = 1,
        probeTimeoutMs: int = 2000,
        **kwargs: Any,
    ) -> None:
        """
        @param destinations: SIP URIs on 127.0.0.0/8, e.g.
            C{sip:127.0.0.1:5090} (the configuration refuses any other).
        @param pingInterval: seconds between OPTIONS probes
            (C{DS_PING_INTERVAL}).
        @param probingThreshold: failed probes before an instance is out
            (C{DS_PROBING_THRESHOLD}).
        @param inactiveThreshold: answered probes before it is back
            (C{DS_INACTIVE_THRESHOLD}).
        @param probeTimeoutMs: silence, ms, that fails a probe or a PUBLISH
            (C{PROBE_TIMEOUT}).
        @param kwargs: as for L{KamailioServer} (C{auth} is not supported).
        """
        if kwargs.get("auth"):
            raise ValueError("etc/kamailio-dispatcher.cfg does no digest authentication")
        kwargs.setdefault("config", etcPath("kamailio-dispatcher.cfg"))
        super().__init__(**kwargs)
        self.destinations = list(destinations)
        for destination in self.destinations:
            if not destination.startswith("sip:127.") or any(c in destination for c in " \n\""):
                raise ValueError(f"not a loopback SIP URI: {destination!r}")
        self.listFile = os.path.join(self.baseDir, "dispatcher.list")
        self.ctlSocket = os.path.join(self.baseDir, "ctl.sock")
        self.defines += [
            f'DS_LIST="{self.listFile}"',
            f"DS_PING_INTERVAL={pingInterval}",
            f"DS_PROBING_THRESHOLD={probingThreshold}",
            f"DS_INACTIVE_THRESHOLD={inactiveThreshold}",
            f"PROBE_TIMEOUT={probeTimeoutMs}",
            f'PING_FROM="sip:sipxmpp-dispatcher@{self.host}"',
            f'CTL_SOCKET="unix:{self.ctlSocket}"',
        ]

    def prepare(self) -> None:
        super().prepare()
        with open(self.listFile, "w", encoding="utf-8") as f:
            for destination in self.destinations:
                f.write(f"1 {destination} 0 0\n")

    def dispatcherStates(self) -> dict[str, str]:
        """
        Each destination's state flags as C{kamcmd dispatcher.list} shows
        them (e.g. C{AP}: active and probing, C{IP}: inactive).
        """
        result = runCommand(
            [findBinary("kamcmd"), "-s", f"unix:{self.ctlSocket}", "dispatcher.list"],
            timeout=10,
            check=False,
        )
        states: dict[str, str] = {}
        uri = None
        for line in result.stdout.splitlines():
            key, _, value = line.strip().partition(":")
            value = value.strip()
            if key == "URI":
                uri = value
            elif key == "FLAGS" and uri is not None:
                states[uri] = value
                uri = None
        return states


class KamailioPresenceServer(KamailioServer):
    """
    Kamailio with C{etc/kamailio-presence.cfg}: registrar and proxy for one
    domain that tracks every call it relays (dialog), PUBLISHes both
    parties' dialog state to itself (pua_dialoginfo, pua) and serves it to
    subscribers (presence, presence_dialoginfo): the server of sipxmpp's
    SUBSCRIBE mode.

    pua and presence cannot start without a database; they get a private
    db_text one in C{baseDir/presence-db} and otherwise work from memory,
    so a restart forgets every subscription and presentity.
    """

    name = "kamailio-presence"

    modules = ("dialog", "db_text", "pua", "pua_dialoginfo", "presence", "presence_dialoginfo",
               "presence_xml")
    """
    The modules the configuration needs beyond L{KamailioServer}'s.
    """

    tables = ("version", "pua", "presentity", "active_watchers", "watchers")
    """
    The db_text files pua and presence look for.
    """

    def __init__(self, maxExpires: int = 3600, **kwargs: Any) -> None:
        """
        @param maxExpires: the longest subscription granted.
        @param kwargs: as for L{KamailioServer} (C{auth} is not supported).
        """
        if kwargs.get("auth"):
            raise ValueError("etc/kamailio-presence.cfg does no digest authentication")
        kwargs.setdefault("config", etcPath("kamailio-presence.cfg"))
        super().__init__(**kwargs)
        self.maxExpires = maxExpires
        self.dbDir = os.path.join(self.baseDir, "presence-db")

    def command(self) -> list[str]:
        # The port may change between starts (choosePorts): define it here.
        args = super().command()
        for define in (
            f'PRESENCE_URI="{self.uri}"',
            f'PRESENCE_DB_URL="text://{self.dbDir}"',
            f"MAX_EXPIRES={self.maxExpires}",
        ):
            args += ["-A", define]
        return args

    def prepare(self) -> None:
        super().prepare()
        # Fresh tables at every start: nothing survives a restart.
        shutil.rmtree(self.dbDir, ignore_errors=True)
        os.makedirs(self.dbDir)
        for table in self.tables:
            source = os.path.join(KamailioPuaServer.schemaDir(), table)
            if not os.path.exists(source):
                raise FileNotFoundError(f"{source} not found: is the kamailio package complete?")
            shutil.copyfile(source, os.path.join(self.dbDir, table))
