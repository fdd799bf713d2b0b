"""
linphone as a test phone: Debian's C{linphonec} (C{linphone-cli}), the
headless console front end of liblinphone, as a device of one user.

Each L{LinphonePhone} runs in a folder of its own (its configuration, its
database, its log), binds a free loopback port, registers through the
given proxy with its own C{+sip.instance}, so a registrar with GRUU support
(Kamailio's registrar, by default) grants it a public GRUU
C{sip:USER@DOMAIN;gr=urn:uuid:INSTANCE}, which linphone then uses as its
Contact in calls. It is driven through linphonec's command line on stdin
(C{call URI}, C{terminate}, C{quit}) and observed through its log
(C{-d 6}: every SIP message it sends or receives).

linphonec runs without a sound card: it logs that none is found and still
places and takes calls (no audio flows).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid as uuidModule

from sipxmpp.testing.ports import LOOPBACK, freeSIPPort
from sipxmpp.testing.process import (
    ServerStartError,
    findBinary,
    logTail,
    requireBinaries,
    terminate,
)

BINARY = "linphonec"

# mediastreamer's camera that sends a still picture: no device needed.
STATIC_CAMERA = "StaticImage: Static picture"


def requireLinphone() -> None:
    """
    Skip the calling test without linphonec, or fail it under C{CI=true}.
    """
    requireBinaries(BINARY)


class LinphonePhone:
    """
    One linphone device of C{user@domain}, registered through C{proxy}.

    @ivar instance: the device's instance UUID (its C{+sip.instance}).
    @ivar port: the SIP port it binds on loopback.
    """

    def __init__(self, user: str, proxy: str, workDir: str, domain: str = "example.test",
                 transport: str = "udp", instance: str | None = None,
                 expires: int = 300, video: bool = False,
                 autoAnswer: bool = False) -> None:
        """
        @param proxy: C{HOST:PORT} of the gateway (all requests go there).
        @param transport: C{"udp"} or C{"tcp"}.
        @param video: capture video (C{-C}, no display): mediastreamer's
            static picture as the camera, video offered in each call and
            accepted in each incoming one, with linphone's default video
            codecs; its INVITE then carries an audio and a video stream
            (1,391 bytes from linphonec 5.1.65 on loopback).
        @param autoAnswer: answer every incoming call (C{-a}).
        """
        self.user = user
        self.proxy = proxy
        self.domain = domain
        self.transport = transport
        self.instance = instance or str(uuidModule.uuid4())
        self.expires = expires
        self.video = video
        self.autoAnswer = autoAnswer
        self.workDir = os.path.abspath(workDir)
        self.port = freeSIPPort()
        self.configFile = os.path.join(self.workDir, "linphonerc")
        self.logFile = os.path.join(self.workDir, "linphone.log")
        self.consoleFile = os.path.join(self.workDir, "console.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def gruu(self) -> str:
        """
        The public GRUU a registrar grants this device (Kamailio's form).
        """
        return f"sip:{self.user}@{self.domain};gr=urn:uuid:{self.instance}"

    def _configuration(self) -> str:
        udp, tcp = (self.port, -1) if self.transport == "udp" else (-1, self.port)
        return "\n".join([
            "[sip]",
            f"sip_port={udp}",
            f"sip_udp_port={udp}",
            f"sip_tcp_port={tcp}",
            "sip_tls_port=-1",
            f"contact=sip:{self.user}@{LOOPBACK}",
            "default_proxy=0",
            "register_only_when_network_is_up=0",
            "guess_hostname=0",
            "ipv6_enabled=0",
            f"uuid=urn:uuid:{self.instance}",
            "[net]",
            "firewall_policy=0",
            "[rtp]",
            f"audio_rtp_port={freeSIPPort()}",
            f"video_rtp_port={freeSIPPort()}",
            "[misc]",
            f"uuid={self.instance}",
            "[proxy_0]",
            f"reg_proxy=<sip:{self.proxy};transport={self.transport}>",
            f"reg_route=<sip:{self.proxy};transport={self.transport};lr>",
            f"reg_identity=sip:{self.user}@{self.domain}",
            f"reg_expires={self.expires}",
            "reg_sendregister=1",
            "publish=0",
            *(self._videoConfiguration() if self.video else []),
            "",
        ])

    def _videoConfiguration(self) -> list[str]:
        return [
            "[video]",
            "capture=1",
            "display=0",
            "show_local=0",
            "self_view=0",
            "automatically_initiate=1",
            "automatically_accept=1",
            f"device={STATIC_CAMERA}",
            "size=qvga",
        ]

    def start(self, timeout: float = 15.0) -> None:
        """
        Start linphonec and wait until it is registered.

        @raise ServerStartError: if it exits or does not register in time.
        """
        os.makedirs(os.path.join(self.workDir, ".local", "share", "linphone"), exist_ok=True)
        with open(self.configFile, "w") as f:
            f.write(self._configuration())
        env = {**os.environ, "HOME": self.workDir, "XDG_DATA_HOME":
               os.path.join(self.workDir, ".local", "share"),
               "XDG_CONFIG_HOME": self.workDir}
        with open(self.consoleFile, "ab") as console:
            self.process = subprocess.Popen(
                [findBinary(BINARY), "-c", self.configFile, "-d", "6", "-l", self.logFile,
                 *(["-C"] if self.video else []), *(["-a"] if self.autoAnswer else [])],
                stdin=subprocess.PIPE, stdout=console, stderr=subprocess.STDOUT,
                cwd=self.workDir, env=env, start_new_session=True, close_fds=True,
            )
        try:
            self.waitForLog(r"to \[LinphoneRegistrationOk\]", timeout)
        except AssertionError as error:
            self.stop()
            raise ServerStartError(f"linphonec did not register: {error}") from None

    def command(self, line: str) -> None:
        """
        Type C{line} at linphonec's prompt.
        """
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line.encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def call(self, uri: str) -> None:
        """
        Place a call to C{uri}.
        """
        self.command(f"call {uri}")

    def log(self) -> str:
        """
        Everything linphone logged so far.
        """
        try:
            with open(self.logFile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def waitForLog(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list[str]:
        """
        Wait until C{pattern} (a regular expression) matched C{count} times
        in the log; return the matches.

        @raise AssertionError: if it does not in time, or linphonec exited.
        """
        deadline = time.monotonic() + timeout
        expression = re.compile(pattern)
        while True:
            found = expression.findall(self.log())
            if len(found) >= count:
                return found
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"linphonec exited; log:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} seen {len(found)} of {count} times in {timeout} s;"
                    f" log:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 40) -> str:
        return logTail([self.consoleFile, self.logFile], lines)

    def stop(self) -> None:
        """
        Quit (linphone de-registers), then make sure the process is gone.
        """
        process, self.process = self.process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.write(b"quit\n")
            process.stdin.close()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        terminate(process)
