"""
A real softphone behind the gateway (issue 4): Debian's baresip 1.0.0,
headless, registers through sipxmpp to Kamailio and auto-answers a call
from sipp; the gateway shows its user online, on the phone during the
call, and offline once baresip de-registers at exit.

baresip runs with a private configuration folder (C{-f DIR}): it binds
127.0.0.1 only, sends everything through the gateway (C{outbound}), reads
its microphone from an 8 kHz WAV file (C{aufile}; without a working audio
source it answers 486) and plays to ALSA's C{null} device.
"""

from __future__ import annotations

import math
import os
import struct
import wave

from sipxmpp.testing.ports import LOOPBACK, freeSIPPortRange, isUDPPortFree
from sipxmpp.testing.process import ServerProcess, SharedServer, findBinary, requireBinaries
from tests.integration.test_proxy import (
    DOMAIN,
    ProxyTestCase,
    Stack,
    expectState,
    received,
)


def writeTone(path: str, seconds: float = 10.0, rate: int = 8000) -> None:
    """
    Write a mono 16-bit 440 Hz tone, C{rate} Hz, as a WAV file.
    """
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate)))
        for n in range(int(seconds * rate))
    )
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(frames)


class BaresipPhone(ServerProcess):
    """
    baresip as a phone of C{user@domain} registered through C{outbound}.
    """

    name = "baresip"
    stopTimeout = 10.0

    def __init__(self, user: str, outbound: str, domain: str = DOMAIN,
                 regint: int = 300) -> None:
        super().__init__()
        self.user = user
        self.outbound = outbound
        self.domain = domain
        self.regint = regint
        self.port = freeSIPPortRange(2)
        self.wavFile = os.path.join(self.baseDir, "microphone.wav")

    def choosePorts(self) -> None:
        # baresip also opens SIP over TLS, on TCP port + 1: both free.
        self.port = freeSIPPortRange(2)

    def listenPorts(self) -> list[tuple[str, str, int]]:
        return [("udp", LOOPBACK, self.port)]

    def prepare(self) -> None:
        if not os.path.exists(self.wavFile):
            writeTone(self.wavFile)
        config = f"""\
poll_method		epoll
sip_listen		{LOOPBACK}:{self.port}
net_interface		{LOOPBACK}
dns_server		{LOOPBACK}:53
call_local_timeout	120
call_max_calls		4
audio_source		aufile,{self.wavFile}
audio_player		alsa,null
audio_alert		alsa,null
ausrc_srate		8000
ausrc_channels		1
rtp_ports		20000-20999
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module			alsa.so
module_tmp		account.so
module_app		menu.so
"""
        with open(os.path.join(self.baseDir, "config"), "w", encoding="utf-8") as f:
            f.write(config)
        with open(os.path.join(self.baseDir, "accounts"), "w", encoding="utf-8") as f:
            f.write(f'<sip:{self.user}@{self.domain}>;outbound="sip:{self.outbound}";'
                    f"regint={self.regint};answermode=auto;audio_codecs=PCMU\n")

    def command(self) -> list[str]:
        # -s: SIP trace in the console log, for failures.
        return [findBinary("baresip"), "-f", self.baseDir, "-s"]

    def isReady(self) -> bool:
        return not isUDPPortFree(self.port, LOOPBACK)


class BaresipTests(ProxyTestCase):
    """
    baresip behind the gateway, Kamailio behind that.
    """

    shared = SharedServer(Stack)

    def setUp(self) -> None:
        requireBinaries("baresip")
        super().setUp()

    def test_registersAnswersAndDeregisters(self) -> None:
        gw = self.gateway
        phone = BaresipPhone("uma", gw.address)
        self.addCleanup(phone.stop)
        phone.start()
        try:
            expectState(gw, "uma", "online")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{phone.logTail(60)}") from None
        [stored] = self.registrar.contacts("uma")
        self.assertEqual(stored["Path"], f"<sip:{gw.address};lr>")
        self.assertTrue(stored["User-Agent"].startswith("baresip"), stored)

        call = self.sipp.start("uac", self.registrar.address, service="uma",
                               keys={"domain": DOMAIN, "caller": "outside9"},
                               extraArgs=["-d", "2000"], traceMessages=True, waitBound=False)
        try:
            expectState(gw, "uma", "on-the-phone")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{phone.logTail(60)}") from None
        result = call.wait()
        self.assertEqual((result.exitCode, result.successful, result.failed), (0, 1, 0),
                         result.describe() + phone.logTail(60))
        [ok] = [m for m in received(result, "SIP/2.0 200") if "INVITE" in m.values("CSeq")[0]]
        self.assertTrue(any(v.startswith("baresip") for v in ok.values("Server")), ok)
        self.assertIn("m=audio", ok.body)
        expectState(gw, "uma", "online")

        # At exit baresip de-registers (Expires 0) through the gateway.
        phone.stop()
        expectState(gw, "uma", "offline")
        self.assertEqual(self.registrar.contacts("uma"), [])
