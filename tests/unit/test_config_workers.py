"""
Tests for C{[sip] workers} and C{worker_ports} in L{sipxmpp.config}.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.config import ConfigError, Settings, loadSettings
from tests.unit.test_config import MINIMAL


class WorkersKeyTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def load(self, extra: str, ingest: str = "") -> Settings:
        return loadSettings(self.write(MINIMAL + extra + ingest))

    def test_defaultOne(self) -> None:
        """
        One process unless asked: the proxy stays in the main process.
        """
        self.assertEqual(self.load("").sip.workers, 1)

    def test_auto(self) -> None:
        """
        auto is the machine's cores.
        """
        self.assertEqual(self.load("workers = auto\n").sip.workers, os.cpu_count() or 1)

    def test_ports(self) -> None:
        """
        Worker i's own port is worker_ports + i, or after the highest
        listen port when 0.
        """
        sip = self.load("listen = udp:5062:interface=127.0.0.1 tcp:5064:interface=127.0.0.1\n"
                        "workers = 3\n").sip
        self.assertEqual([sip.workerPort(i) for i in range(3)], [5065, 5066, 5067])
        sip = self.load("workers = 2\nworker_ports = 6000\n").sip
        self.assertEqual(sip.workerPort(1), 6001)

    def test_refused(self) -> None:
        """
        What workers cannot do yet is refused at start, naming the key.
        """
        for extra in ("listen = udp:0:interface=127.0.0.1\n",
                      "listen = udp:5060:interface=127.0.0.1 "
                      "ssl:5061:interface=127.0.0.1:privateKey=k.pem\n",
                      "[ingest]\npublishers = 127.0.0.1/32\n"):
            with self.assertRaises(ConfigError) as caught:
                self.load("workers = 2\n" + extra)
            self.assertIn("workers", str(caught.exception))
        with self.assertRaises(ConfigError):
            self.load("workers = 0\n")
        with self.assertRaises(ConfigError):
            self.load("workers = 2\nworker_ports = 65535\n")
