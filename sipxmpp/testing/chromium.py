"""
Debian's headless Chromium for tests of the pages the gateway serves.

Two ways to look at a page: L{dumpDOM} (C{chromium --dump-dom URL}: the DOM
once the page has loaded and its scripts ran) and L{Browser}, which drives
one tab through the DevTools protocol over a pipe (C{--remote-debugging-
pipe}: JSON messages ended by NUL on file descriptors 3 and 4), so no
WebSocket client, chromedriver or Playwright download is needed.

Chromium runs with a fresh empty profile, on loopback only: the flags keep
it from reaching for Google's services (the machine's network is closed,
and it would retry). L{requireChromium} skips a test without Chromium, or
fails it under C{CI=true} (L{sipxmpp.testing.process.requireBinaries}).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from sipxmpp.testing.process import findBinary, requireBinaries

# Run as `python -c _EXEC_ON_3_AND_4 READ WRITE PROGRAM ARGS...`: moves the
# two descriptors to 3 and 4 (through numbers above both, as either may be
# 3 or 4 already) and execs the program.
_EXEC_ON_3_AND_4 = (
    "import fcntl, os, sys\n"
    "a = fcntl.fcntl(int(sys.argv[1]), fcntl.F_DUPFD, 10)\n"
    "b = fcntl.fcntl(int(sys.argv[2]), fcntl.F_DUPFD, 10)\n"
    "os.dup2(a, 3)\n"
    "os.dup2(b, 4)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)

#: The program Debian's package C{chromium} installs.
CHROMIUM = "chromium"

#: Flags for a headless run that asks nothing of the network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
)


class BrowserError(RuntimeError):
    """
    Chromium failed, or answered a DevTools command with an error.
    """


def requireChromium() -> str:
    """
    Return Chromium's path; skip the test if it is missing (fail under CI).
    """
    requireBinaries(CHROMIUM)
    return findBinary(CHROMIUM)


def dumpDOM(url: str, timeout: float = 60.0) -> str:
    """
    Load C{url} in a fresh headless Chromium and return the serialized DOM
    once it has loaded.
    """
    binary = requireChromium()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        result = subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if result.returncode != 0 or not result.stdout.strip():
        raise BrowserError(f"chromium --dump-dom {url} exited {result.returncode}: "
                           f"{result.stderr[-2000:]}")
    return result.stdout


class Browser:
    """
    One headless Chromium with one tab, driven over the DevTools pipe.

    Use as a context manager; L{open} loads a page, L{evaluate} runs an
    expression in it and returns its value (by value: JSON-like).
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._binary = requireChromium()
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self._process: subprocess.Popen[bytes] | None = None
        self._nextId = 0
        self._buffer = b""
        self._session: str | None = None

    def __enter__(self) -> Browser:
        try:
            self.start()
        except BaseException:
            self.stop()  # no Chromium left behind when attaching fails
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """
        Start Chromium and attach to a new blank tab.
        """
        toBrowser, self._toBrowser = os.pipe()
        self._fromBrowser, fromBrowser = os.pipe()
        # Chromium reads commands on fd 3 and writes answers on fd 4: a
        # small Python puts the pipe ends there and execs it.
        self._process = subprocess.Popen(
            [sys.executable, "-c", _EXEC_ON_3_AND_4, str(toBrowser), str(fromBrowser),
             self._binary, *FLAGS, f"--user-data-dir={self._profile}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(toBrowser, fromBrowser),
        )
        os.close(toBrowser)
        os.close(fromBrowser)
        target = self.command("Target.createTarget", url="about:blank")["targetId"]
        attached = self.command("Target.attachToTarget", targetId=target, flatten=True)
        self._session = attached["sessionId"]
        self.command("Page.enable")
        self.command("Runtime.enable")

    def stop(self) -> None:
        """
        Close Chromium and remove its profile.
        """
        process, self._process = self._process, None
        self._session = None
        if process is not None:
            try:
                self._send({"id": self._id(), "method": "Browser.close"})
            except OSError:
                pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            os.close(self._toBrowser)
            os.close(self._fromBrowser)
        shutil.rmtree(self._profile, ignore_errors=True)

    def open(self, url: str) -> None:
        """
        Load C{url} in the tab and wait until its document has loaded.
        """
        self.command("Page.navigate", url=url)
        self.waitFor("document.readyState === 'complete' && location.href === "
                     + json.dumps(url))

    def evaluate(self, expression: str) -> Any:
        """
        Return the value of the JavaScript C{expression} in the page.
        """
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True,
                              awaitPromise=True)  # fmt: skip
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def waitFor(self, expression: str, timeout: float | None = None) -> Any:
        """
        Evaluate C{expression} until it is true; return its value.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None  # the page is between two documents
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression}")
            time.sleep(0.05)

    def command(self, method: str, **params: Any) -> dict[str, Any]:
        """
        Send one DevTools command (to the tab once attached) and return its
        result; events that come meanwhile are dropped.
        """
        number = self._id()
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") != number:
                continue
            if "error" in answer:
                raise BrowserError(f"{method}: {answer['error']}")
            result: dict[str, Any] = answer.get("result", {})
            return result

    def _id(self) -> int:
        self._nextId += 1
        return self._nextId

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode("utf-8") + b"\0"
        while data:
            data = data[os.write(self._toBrowser, data):]

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("no answer from Chromium")
            readable, _, _ = select.select([self._fromBrowser], [], [], left)
            if readable:
                chunk = os.read(self._fromBrowser, 65536)
                if not chunk:
                    raise BrowserError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        decoded: dict[str, Any] = json.loads(message)
        return decoded
