"""
Tests for L{sipxmpp.ops.logs}: the log file and its reopening on SIGUSR1.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.logger import LogLevel, formatEventAsClassicLogText, formatTime
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.logs import (
    formatClassicLine,
    openLogFile,
    reopenOnSignal,
    secondCachedTimeFormatter,
)


class ReopenTests(SynchronousTestCase):
    def test_logrotate(self) -> None:
        """
        logrotate moves the file away and sends SIGUSR1: the gateway goes on
        writing to a new file under the old name.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "sipxmpp.log")
        stream = openLogFile(path)
        self.addCleanup(stream.close)
        calls: list[Callable[[], Any]] = []
        self.addCleanup(reopenOnSignal(stream, calls.append))
        stream.write("before\n")
        stream.flush()
        os.rename(path, path + ".1")
        os.kill(os.getpid(), signal.SIGUSR1)
        # The handler only asks the reactor thread to reopen.
        self.assertEqual(len(calls), 1)
        calls[0]()
        stream.write("after\n")
        stream.flush()
        with open(path + ".1") as f:
            self.assertEqual(f.read(), "before\n")
        with open(path) as f:
            self.assertEqual(f.read(), "after\n")

    def test_restore(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        stream = openLogFile(os.path.join(directory, "x.log"))
        self.addCleanup(stream.close)
        before = signal.getsignal(signal.SIGUSR1)
        restore = reopenOnSignal(stream, lambda f: None)
        self.assertNotEqual(signal.getsignal(signal.SIGUSR1), before)
        restore()
        self.assertEqual(signal.getsignal(signal.SIGUSR1), before)

    def test_noRotationOfItsOwn(self) -> None:
        """
        The file grows past twisted's default 1 MB without being rotated:
        logrotate does that.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "x.log")
        stream = openLogFile(path)
        self.addCleanup(stream.close)
        for _ in range(1100):
            stream.write("x" * 1000 + "\n")
        stream.flush()
        self.assertEqual(os.listdir(directory), ["x.log"])

    def test_stdout(self) -> None:
        """
        Standard output (the journal under systemd) is not reopened, and
        the signal does not end the process.
        """
        self.assertIs(openLogFile(None), sys.stdout)
        calls: list[object] = []
        restore = reopenOnSignal(sys.stdout, calls.append)
        self.addCleanup(restore)
        os.kill(os.getpid(), signal.SIGUSR1)
        self.assertEqual(calls, [])


class TimeFormatterTests(SynchronousTestCase):
    def test_sameAsTwisted(self) -> None:
        """
        L{secondCachedTimeFormatter} formats as L{formatTime}, across
        seconds, within one, back in time and with no time.
        """
        format = secondCachedTimeFormatter()
        for when in (1700000000.0, 1700000000.25, 1700000000.999, 1700000001.0,
                     1700000000.5, 1600000000.75, 0.5, None):  # fmt: skip
            self.assertEqual(format(when), formatTime(when), when)


class ClassicLineTests(SynchronousTestCase):
    def test_sameAsTwisted(self) -> None:
        """
        L{formatClassicLine} writes what L{formatEventAsClassicLogText}
        writes, for plain events and for those it leaves to twisted.
        """
        failure = Failure(ZeroDivisionError("boom"))

        class Thing:
            name = "thing"

            def __repr__(self) -> str:
                return "<Thing>"

        base = {"log_time": 1700000000.5, "log_namespace": "sipxmpp.x.Y",
                "log_level": LogLevel.info}  # fmt: skip
        events: list[dict[str, Any]] = [
            {"log_format": "{aor}: showing {text!r}", "aor": "sip:a@b", "text": "on the phone"},
            {"log_format": "{n:5d} {f:.2f} {{braces}} {t.name} {l[1]}", "n": 3, "f": 1.5,
             "t": Thing(), "l": [1, 2]},
            {"log_format": "two\nlines {x}", "x": "and\nthree"},
            {"log_format": "{thing} {thing!s} {thing!a}", "thing": Thing()},
            {"log_format": "{missing}"},
            {"log_format": "{} {0}"},
            {"log_format": "{call()}", "call": lambda: "called"},
            {"log_format": ""},
            {"log_format": None},
            {"log_format": b"bytes {x}", "x": 1},
            {"log_format": "legacy", "log_system": "-"},
            {"log_format": "legacy", "log_system": 7},
            {"log_format": "failed {x}", "x": 1, "log_failure": failure},
            {"log_format": "no level", "log_level": None},
            {"log_format": "no namespace", "log_namespace": None},
            {"log_format": "no time", "log_time": None},
            {"log_format": "{x:{width}}", "x": "pad", "width": 6},
        ]
        format = secondCachedTimeFormatter()
        for extra in events:
            event = {**base, **extra}
            if "log_namespace" in extra and extra["log_namespace"] is None:
                del event["log_namespace"]
            expected = formatEventAsClassicLogText(event, formatTime=formatTime)
            self.assertEqual(formatClassicLine(event, format), expected, extra)
