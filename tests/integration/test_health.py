"""
C{/healthz/ready} of a running gateway (twistd) whose upstream is a small
UDP responder here: the gateway's OPTIONS keepalives reach it; while it
answers the gateway is ready, once it stops the upstream check fails (503,
named, with the reason) within the documented 25 to 35 seconds, and the
next answer makes it ready again. C{/healthz/live} stays 200 throughout.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from twisted.trial.unittest import TestCase

from sipxmpp.ops.health import UPSTREAM_INTERVAL, UPSTREAM_MISSES, UPSTREAM_TIMEOUT
from sipxmpp.testing.gateway import GatewayServer, waitFor
from sipxmpp.testing.ports import LOOPBACK
from sipxmpp.testing.process import startForTest


class Upstream:
    """
    A UDP "registrar" that answers OPTIONS with 200 while C{answering}.
    """

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((LOOPBACK, 0))
        self.socket.settimeout(0.2)
        self.port: int = self.socket.getsockname()[1]
        self.answering = True
        self.received: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, source = self.socket.recvfrom(65536)
            except TimeoutError:
                continue
            text = data.decode("utf-8", "replace")
            self.received.append(text.split("\r\n", 1)[0])
            if not (self.answering and text.startswith("OPTIONS ")):
                continue
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
            copied = [line for line in head
                      if line.split(":", 1)[0].strip().lower() in ("via", "from", "to",
                                                                   "call-id", "cseq")]
            answer = "\r\n".join(["SIP/2.0 200 OK", *copied, "Content-Length: 0", "", ""])
            self.socket.sendto(answer.encode("utf-8"), source)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.socket.close()


class UpstreamHealthTests(TestCase):
    timeout = 180

    def get(self, gateway: GatewayServer, path: str) -> tuple[int, dict[str, Any]]:
        url = f"http://{LOOPBACK}:{gateway.httpPort}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def test_keepalive(self) -> None:
        upstream = Upstream()
        self.addCleanup(upstream.close)
        gateway = startForTest(self, GatewayServer(upstreamPort=upstream.port))
        waitFor("an answered keepalive", lambda: "answered" in self.get(
            gateway, "/healthz/ready")[1]["details"]["upstream"])
        self.assertTrue(upstream.received[0].startswith(f"OPTIONS sip:{LOOPBACK}:{upstream.port} "),
                        upstream.received)
        code, ready = self.get(gateway, "/healthz/ready")
        self.assertEqual((code, ready["failing"]), (200, []), ready)
        self.assertEqual(sorted(ready["checks"]),
                         ["fds", "reactor", "running", "store", "upstream", "xmpp"])

        upstream.answering = False
        stopped = time.monotonic()
        bound = UPSTREAM_MISSES * UPSTREAM_INTERVAL + UPSTREAM_TIMEOUT
        waitFor("the upstream check failing",
                lambda: self.get(gateway, "/healthz")[0] == 503, timeout=bound + 10)
        self.assertLessEqual(time.monotonic() - stopped, bound + 2)
        code, ready = self.get(gateway, "/healthz/ready")
        self.assertEqual((code, ready["failing"]), (503, ["upstream"]), ready)
        self.assertIn(f"{UPSTREAM_MISSES} keepalives in a row unanswered",
                      ready["details"]["upstream"])
        self.assertEqual(self.get(gateway, "/healthz/live")[0], 200)

        upstream.answering = True
        waitFor("ready again", lambda: self.get(gateway, "/healthz/ready")[0] == 200,
                timeout=UPSTREAM_INTERVAL + UPSTREAM_TIMEOUT + 5)
