"""
The installed package: ``pip install .`` into a fresh virtualenv gets the
twistd plugin, and twistd runs the gateway, rejects a broken configuration in
one line, and serves its health endpoint.

The fresh venv installs this tree and its pinned dependencies
(constraints.txt) from the package index, as an operator would; pip's cache
makes repeated runs quick.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_installed: tuple[str, str] | None = None

# The fresh venv must see only what was installed into it: trial's workers
# export PYTHONPATH with the source tree and this venv's site-packages.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def installedVenv() -> tuple[str, str]:
    """
    Build the fresh venv once per test process; return (workdir, venv).
    """
    global _installed
    if _installed is None:
        workdir = tempfile.mkdtemp(prefix="sipxmpp-plugin-")
        atexit.register(shutil.rmtree, workdir, True)
        venv = os.path.join(workdir, "venv")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        # Build from a copy: pip builds in the source's build/ folder, and
        # two trial workers installing the same tree at once collide there.
        source = os.path.join(workdir, "source")
        os.makedirs(source)
        for name in ("setup.py", "README.rst", "constraints.txt"):
            shutil.copy(os.path.join(ROOT, name), source)
        for name in ("sipxmpp", "twisted_plugins"):
            shutil.copytree(os.path.join(ROOT, name), os.path.join(source, name),
                            ignore=shutil.ignore_patterns("__pycache__"))
        result = subprocess.run(
            [os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
             "-c", os.path.join(ROOT, "constraints.txt"), source],
            cwd=workdir, capture_output=True, text=True, env=CLEAN_ENV,
        )
        if result.returncode != 0:
            raise RuntimeError("pip install . into a fresh venv failed:\n" + result.stderr)
        _installed = (workdir, venv)
    return _installed


TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


class InstalledPluginTests(SynchronousTestCase):
    """
    ``pip install .`` into a fresh venv yields a working ``twistd sipxmpp``.
    """

    def setUp(self) -> None:
        self.workdir, self.venv = installedVenv()
        self.python = os.path.join(self.venv, "bin", "python")

    def twistd(self, *args: str) -> subprocess.CompletedProcess[str]:
        # Run outside the source tree so the installed copy is what runs.
        return subprocess.run(
            [self.python, "-c", TWISTD, *args],
            cwd=self.workdir, capture_output=True, text=True, timeout=60, env=CLEAN_ENV,
        )

    def test_pluginInstalledWithoutInit(self) -> None:
        """
        The plugin is installed as twisted/plugins/sipxmpp_plugin.py next to
        Twisted's own plugins, whose __init__.py is Twisted's.
        """
        out = subprocess.run(
            [self.python, "-c",
             "import sipxmpp, twisted.plugins.sipxmpp_plugin as p; "
             "print(sipxmpp.__file__); print(p.__file__)"],
            cwd=self.workdir, capture_output=True, text=True, check=True, env=CLEAN_ENV,
        ).stdout.split()
        self.assertTrue(out[0].startswith(self.venv), out)
        self.assertTrue(out[1].startswith(self.venv), out)
        self.assertTrue(out[1].endswith(os.path.join("twisted", "plugins", "sipxmpp_plugin.py")))
        record = subprocess.run(
            [self.python, "-c",
             "import importlib.metadata as m; "
             "print('\\n'.join(str(f) for f in m.files('sipxmpp')))"],
            cwd=self.workdir, capture_output=True, text=True, check=True, env=CLEAN_ENV,
        ).stdout.split()
        self.assertIn("twisted/plugins/sipxmpp_plugin.py", record)
        self.assertEqual([f for f in record if f.startswith("twisted/") and
                          f.endswith("__init__.py")], [])

    def test_twistdListsPlugin(self) -> None:
        result = self.twistd("--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("sipxmpp", result.stdout)

    def test_pluginHelp(self) -> None:
        result = self.twistd("-n", "sipxmpp", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--config", result.stdout)

    def test_brokenConfig(self) -> None:
        """
        A broken file: one line naming the key, non-zero exit, no traceback.
        """
        path = os.path.join(self.workdir, "broken.conf")
        with open(path, "w") as f:
            f.write("[sip]\nupstream = sip:127.0.0.1:5070\ndomain = example.test\n"
                    "[xmpp]\npriority = 10\n")
        result = self.twistd("-n", "--pidfile=", "sipxmpp", "--config", path)
        self.assertNotEqual(result.returncode, 0)
        lines = (result.stdout + result.stderr).strip().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("[xmpp] priority = '10'", lines[0])
        self.assertNotIn("Traceback", result.stderr)

    def test_runsAndServesHealth(self) -> None:
        """
        twistd starts the gateway; /healthz answers; SIGTERM stops it.
        """
        port, sipPort = freePort(), freePort()
        path = os.path.join(self.workdir, "good.conf")
        with open(path, "w") as f:
            f.write("[sip]\ndomain = example.test\n"
                    f"listen = tcp:{sipPort}:interface=127.0.0.1\n"
                    "upstream = sip:127.0.0.1:5070;transport=tcp\n"
                    f"[http]\nlisten = tcp:{port}:interface=127.0.0.1\n"
                    f"[store]\nurl = sqlite:///{self.workdir}/store.sqlite\n"
                    f"key_file = {self.workdir}/secret.key\n"
                    "[xmpp]\nserver = 127.0.0.1:1\n"
                    "[log]\nformat = json\n")
        # The console script the package installs creates key and schema.
        if not os.path.exists(os.path.join(self.workdir, "secret.key")):
            init = subprocess.run(
                [os.path.join(self.venv, "bin", "sipxmpp-admin"), "--config", path, "init"],
                cwd=self.workdir, capture_output=True, text=True, env=CLEAN_ENV, check=False,
            )
            self.assertEqual(init.returncode, 0, init.stderr)
        process = subprocess.Popen(
            [self.python, "-c", TWISTD, "-n", "--pidfile=", "sipxmpp", "--config", path],
            cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=CLEAN_ENV,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        body = None
        deadline = time.monotonic() + 30
        while body is None and time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = r.read()
            except OSError:
                time.sleep(0.1)
        assert body is not None, "no answer from /healthz"
        health = json.loads(body)
        self.assertEqual((health["status"], health["failing"]), ("ok", []), health)
        self.assertEqual(sorted(health["checks"]),
                         ["fds", "reactor", "running", "store", "upstream", "xmpp"])
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        # twistd ends by re-raising the signal it stopped on.
        self.assertIn(process.returncode, (0, -signal.SIGTERM), output)
        # The [log] format applies: every line is a JSON object.
        records = [json.loads(line) for line in output.splitlines() if line.strip()]
        self.assertTrue(any("sipxmpp 0.1.0 starting" in r["message"] for r in records), output)
