"""
A real Prosody 0.12 for tests and the dev stack.

Prosody runs in the foreground (C{prosody -F --config FILE}) with all its
state in a private folder, c2s on a free loopback port, STARTTLS required,
and a certificate for the virtual host issued by a L{TestCA}.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from sipxmpp.testing.ports import LOOPBACK, freeTCPPort, tcpAccepting
from sipxmpp.testing.process import ServerProcess, findBinary, runCommand
from sipxmpp.testing.templates import etcPath, writeFromTemplate
from sipxmpp.testing.tls import ServerCertificate, TestCA


def _encode(part: str) -> str:
    """
    Encode a host or user name the way Prosody's datamanager names files:
    every non-alphanumeric character becomes C{%xx} (lowercase hex).
    """
    return re.sub(
        r"[^A-Za-z0-9]",
        lambda m: "".join(f"%{b:02x}" for b in m.group(0).encode()),
        part,
    )


def _luaString(value: str) -> str:
    """
    Quote C{value} as a Lua string literal.
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class ProsodyServer(ServerProcess):
    """
    Prosody with one virtual host, users and pre-filled rosters.

    @ivar domain: the virtual host (the XMPP domain of the users).
    @ivar host: the address c2s listens on (loopback).
    @ivar port: the c2s port (STARTTLS required).
    @ivar httpsPort: the HTTPS port of BOSH (C{/http-bind}), or L{None}.
    @ivar directTLSPort: the c2s Direct TLS port (XEP-0368), or L{None}.
    @ivar caFile: the CA certificate clients must trust.
    @ivar certificate: the server's L{ServerCertificate}.
    @ivar configFile: the generated C{prosody.cfg.lua}.
    @ivar dataDir: Prosody's C{data_path}.
    @ivar logFile: Prosody's own log.
    @ivar users: user name -> password of the users created so far.
    @ivar passwordHash: the SCRAM hash of stored passwords ("SHA-1",
        "SHA-256"): the SCRAM mechanism Prosody offers.
    @ivar tlsProtocol: Prosody's C{ssl.protocol} for c2s.
    """

    name = "prosody"

    def __init__(
        self,
        domain: str = "example.test",
        host: str = LOOPBACK,
        port: int | None = None,
        baseDir: str | None = None,
        ca: TestCA | None = None,
        users: Mapping[str, str] | None = None,
        passwordHash: str = "SHA-1",
        tlsProtocol: str = "tlsv1_2+",
        untrusted: bool = False,
        certHostnames: Iterable[str] | None = None,
        logLevel: str = "info",
        template: str | None = None,
        bosh: bool = False,
        streamManagement: bool = False,
        directTLS: bool = False,
        tlsTickets: bool = False,
    ) -> None:
        """
        @param port: the c2s port; a free one if L{None}.
        @param ca: the CA issuing the server certificate; a new one in
            C{baseDir} if L{None}.
        @param users: user name -> password, registered before start.
        @param passwordHash: "SHA-1" or "SHA-256" (Prosody's C{password_hash}).
        @param tlsProtocol: "tlsv1_2+" (Prosody's default: TLS 1.3 when the
            client has it) or "tlsv1_2" (TLS 1.2 only, where Prosody 0.12
            offers SCRAM-*-PLUS with tls-unique).
        @param untrusted: present a certificate from another CA than C{ca}
            (for tests that must refuse the server); C{caFile} stays C{ca}'s.
        @param certHostnames: names in the server certificate (default:
            C{[domain]}); give another name to test a hostname mismatch.
        @param logLevel: Prosody's minimum log level ("debug" for details).
        @param template: the configuration template (default: the source
            tree's C{etc/prosody.cfg.lua.in}).
        @param bosh: serve BOSH on an HTTPS port of its own, with the
            certificate also naming C{host} (the URL's host: no SNI for an
            address, so Prosody presents this certificate).
        @param streamManagement: offer XEP-0198 (C{mod_smacks}): off by
            default, as a client that vanishes stays online while its
            session waits to be resumed.
        @param directTLS: also serve c2s with Direct TLS (XEP-0368,
            C{c2s_direct_tls_ports}) on a port of its own.
        @param tlsTickets: issue TLS session tickets and resume sessions
            (C{no_ticket = false}); Prosody's default resumes none.
        """
        super().__init__(baseDir, autoPorts=port is None)
        self.domain = domain
        self.host = host
        self.port = port if port is not None else freeTCPPort(host)
        self.ca = ca if ca is not None else TestCA(os.path.join(self.baseDir, "ca"))
        self.caFile = self.ca.caFile
        self.passwordHash = passwordHash
        self.tlsProtocol = tlsProtocol
        self.untrusted = untrusted
        self.httpsPort = freeTCPPort(host) if bosh else None
        self.directTLSPort = freeTCPPort(host) if directTLS else None
        self.certHostnames = list(certHostnames or ([domain, host] if bosh else [domain]))
        self.logLevel = logLevel
        self.streamManagement = streamManagement
        self.tlsTickets = tlsTickets
        self.template = template or etcPath("prosody.cfg.lua.in")
        self.configFile = os.path.join(self.baseDir, "prosody.cfg.lua")
        self.dataDir = os.path.join(self.baseDir, "data")
        self.certDir = os.path.join(self.baseDir, "certs")
        self.logFile = os.path.join(self.baseDir, "prosody.log")
        self.pidFile = os.path.join(self.baseDir, "prosody.pid")
        self.users: dict[str, str] = {}
        self._pendingUsers = dict(users or {})
        self._rosters: dict[str, dict[str, tuple[str, str | None, tuple[str, ...]]]] = {}
        self.certificate: ServerCertificate | None = None
        self.prosodyBinary = findBinary("prosody")
        self.prosodyctlBinary = findBinary("prosodyctl")

    # -- ServerProcess ----------------------------------------------------

    def prepare(self) -> None:
        for d in (self.dataDir, self.certDir):
            os.makedirs(d, exist_ok=True)
        if self.certificate is None:
            issuer = self.ca
            if self.untrusted:
                issuer = TestCA(os.path.join(self.baseDir, "untrusted-ca"), "sipxmpp UNTRUSTED CA")
            self.certificate = issuer.issue(self.certHostnames, self.certDir, self.domain)
        writeFromTemplate(
            self.template,
            self.configFile,
            {
                "CONFIG_FILE": self.configFile,
                "PID_FILE": self.pidFile,
                "DATA_DIR": self.dataDir,
                "CERT_DIR": self.certDir,
                "HOST": self.host,
                "C2S_PORT": self.port,
                "LOG_LEVEL": self.logLevel,
                "PASSWORD_HASH": self.passwordHash,
                "TLS_PROTOCOL": self.tlsProtocol,
                "LOG_FILE": self.logFile,
                "DOMAIN": self.domain,
                "CERT_FILE": self.certificate.certFile,
                "KEY_FILE": self.certificate.keyFile,
                "HTTPS_PORTS": self.httpsPort or "",
                "C2S_DIRECT_TLS_PORTS": self.directTLSPort or "",
                "BOSH_MODULE": '"bosh";' if self.httpsPort else "",
                "SMACKS_MODULE": '"smacks";' if self.streamManagement else "",
                "TLS_OPTIONS": "options = { no_ticket = false };" if self.tlsTickets else "",
            },
        )
        # Accounts are plain files: create them before the server starts,
        # which saves a round trip per user once it runs.
        for user, password in self._pendingUsers.items():
            self.register(user, password)
        self._pendingUsers.clear()

    def command(self) -> list[str]:
        return [self.prosodyBinary, "-F", "--config", self.configFile]

    def isReady(self) -> bool:
        # The log line proves that Prosody itself bound the port.
        if self.httpsPort is not None and not self._logContains(
            f"Activated service 'https' on [{self.host}]:{self.httpsPort}"
        ):
            return False
        if self.directTLSPort is not None and not self._logContains(
            f"Activated service 'c2s_direct_tls' on [{self.host}]:{self.directTLSPort}"
        ):
            return False
        return tcpAccepting(self.host, self.port) and self._logContains(
            f"Activated service 'c2s' on [{self.host}]:{self.port}"
        )

    def _logContains(self, text: str) -> bool:
        try:
            with open(self.logFile, encoding="utf-8", errors="replace") as f:
                return text in f.read()
        except OSError:
            return False

    def listenPorts(self) -> list[tuple[str, str, int]]:
        https = [("tcp", self.host, self.httpsPort)] if self.httpsPort else []
        direct = [("tcp", self.host, self.directTLSPort)] if self.directTLSPort else []
        return [("tcp", self.host, self.port), *https, *direct]

    def choosePorts(self) -> None:
        self.port = freeTCPPort(self.host)
        if self.httpsPort is not None:
            self.httpsPort = freeTCPPort(self.host)
        if self.directTLSPort is not None:
            self.directTLSPort = freeTCPPort(self.host)

    @property
    def boshURL(self) -> str:
        """
        The BOSH service's URL (the server must have been made with C{bosh}).
        """
        assert self.httpsPort is not None, "Prosody without bosh=True"
        return f"https://{self.host}:{self.httpsPort}/http-bind"

    def logFiles(self) -> list[str]:
        return [self.consoleLog, self.logFile]

    # -- administration ---------------------------------------------------

    def jid(self, user: str) -> str:
        """
        Return the bare JID of C{user} on this server.
        """
        return f"{user}@{self.domain}"

    def prosodyctl(self, *args: str) -> str:
        """
        Run C{prosodyctl --config FILE ARGS} and return its output.

        @raise sipxmpp.testing.process.CommandError: if it fails.
        """
        return runCommand([self.prosodyctlBinary, "--config", self.configFile, *args]).stdout

    def register(self, user: str, password: str) -> None:
        """
        Create C{user} (or reset its password) with prosodyctl.  Works
        whether the server runs or not.
        """
        if not os.path.exists(self.configFile):
            # Before the first start: register once the config exists.
            self._pendingUsers[user] = password
            return
        self.prosodyctl("register", user, self.domain, password)
        if not self.userExists(user):
            raise RuntimeError(f"prosodyctl register did not create {self.jid(user)}")
        self.users[user] = password

    def writeAccount(self, user: str, salt: str, iterations: int, storedKey: bytes,
                     serverKey: bytes) -> None:
        """
        Create C{user} by writing its account file directly, as Prosody's
        C{internal_hashed} stores SCRAM credentials (RFC 5802 StoredKey and
        ServerKey, hex). For thousands of users: C{register} runs a
        prosodyctl per user (about a third of a second each). Call it
        before the server starts or before the user's first login.
        """
        path = self._dataFile("accounts", user)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                "return {\n"
                f'\t["iteration_count"] = {iterations};\n'
                f'\t["salt"] = {_luaString(salt)};\n'
                f'\t["stored_key"] = "{storedKey.hex()}";\n'
                f'\t["server_key"] = "{serverKey.hex()}";\n'
                "};\n"
            )

    def userExists(self, user: str) -> bool:
        """
        Tell whether Prosody has an account for C{user} (its account file).
        """
        return os.path.exists(self._dataFile("accounts", user))

    def addRosterItem(
        self,
        user: str,
        contact: str,
        subscription: str = "both",
        name: str | None = None,
        groups: Iterable[str] = (),
    ) -> None:
        """
        Put C{contact} (a bare JID) in C{user}'s roster.

        Writes Prosody's roster file directly (Prosody 0.12 has no command
        for it).  Prosody reads a roster when the user's first session
        starts and keeps it while the user is online, so call this before
        the user logs in.  The file is rewritten from what this launcher
        wrote, so rosters changed by clients are overwritten.
        """
        if subscription not in ("none", "to", "from", "both"):
            raise ValueError(f"bad subscription {subscription!r}")
        items = self._rosters.setdefault(user, {})
        items[contact] = (subscription, name, tuple(groups))
        self._writeRoster(user)

    def addRosterItems(self, user: str, contacts: Iterable[str], subscription: str = "both") -> None:
        """
        Put every bare JID of C{contacts} in C{user}'s roster (named by its
        user name), writing the file once: L{addRosterItem} rewrites it per
        item, too slow for a roster of thousands.
        """
        if subscription not in ("none", "to", "from", "both"):
            raise ValueError(f"bad subscription {subscription!r}")
        items = self._rosters.setdefault(user, {})
        for contact in contacts:
            items[contact] = (subscription, contact.split("@", 1)[0], ())
        self._writeRoster(user)

    def subscribe(self, userA: str, userB: str, group: str | None = None) -> None:
        """
        Make C{userA} and C{userB} (local users) mutual contacts
        (subscription "both" on each side), each named by its user name.
        """
        groups = (group,) if group else ()
        self.addRosterItem(userA, self.jid(userB), "both", userB, groups)
        self.addRosterItem(userB, self.jid(userA), "both", userA, groups)

    def subscribeAll(self, users: Iterable[str]) -> None:
        """
        Make every pair of C{users} mutual contacts.
        """
        users = list(users)
        for i, a in enumerate(users):
            for b in users[i + 1 :]:
                self.subscribe(a, b)

    def _dataFile(self, store: str, user: str) -> str:
        return os.path.join(self.dataDir, _encode(self.domain), store, _encode(user) + ".dat")

    def _writeRoster(self, user: str) -> None:
        lines = [
            "return {",
            # The roster's metadata entry: version and pending requests.
            '\t[false] = { ["version"] = 1; ["pending"] = {}; };',
        ]
        for jid, (subscription, name, groups) in sorted(self._rosters[user].items()):
            fields = [f'["subscription"] = {_luaString(subscription)};']
            if name is not None:
                fields.append(f'["name"] = {_luaString(name)};')
            groupTable = " ".join(f"[{_luaString(g)}] = true;" for g in groups)
            fields.append(f'["groups"] = {{ {groupTable} }};')
            lines.append(f"\t[{_luaString(jid)}] = {{ {' '.join(fields)} }};")
        lines.append("};")
        path = self._dataFile("roster", user)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        # Atomic, so a running Prosody never reads half a file.
        os.replace(tmp, path)
