"""
C{etc/sipxmpp.service}: what it says, checked by systemd's own tools.

C{systemd-analyze verify} loads the unit as systemd would (unknown keys,
bad values, an ExecStart that is not executable); the copy checked here
runs this virtualenv's twistd, since C{/opt/sipxmpp} does not exist on a
test machine. C{systemd-analyze security --offline} scores its hardening;
the test keeps it at "OK" or better. Both skip without systemd-analyze, and
fail under C{CI=true}.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.testing.process import findBinary, requireBinaries

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(ROOT, "etc", "sipxmpp.service")
INSTALLED_TWISTD = "/opt/sipxmpp/bin/twistd"
# systemd-analyze security's exposure, times ten: 50 is "MEDIUM" and worse.
EXPOSURE_THRESHOLD = "50"


def readUnit() -> dict[str, list[str]]:
    """
    The unit's assignments, C{Section.Key -> [values]}.
    """
    values: dict[str, list[str]] = {}
    section = ""
    with open(UNIT, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            values.setdefault(f"{section}.{key}", []).append(value)
    return values


class UnitContentTests(SynchronousTestCase):
    def test_service(self) -> None:
        unit = readUnit()
        expected = {
            "Service.Type": ["simple"],
            "Service.User": ["sipxmpp"],
            "Service.ExecStart": [f"{INSTALLED_TWISTD} -n --pidfile= sipxmpp "
                                  "--config /etc/sipxmpp/sipxmpp.conf"],
            "Service.StateDirectory": ["sipxmpp"],
            "Service.NoNewPrivileges": ["yes"],
            "Service.ProtectSystem": ["strict"],
            "Service.PrivateTmp": ["yes"],
            "Service.CapabilityBoundingSet": ["CAP_NET_BIND_SERVICE"],
            "Service.AmbientCapabilities": ["CAP_NET_BIND_SERVICE"],
            "Service.LimitNOFILE": ["65536"],
            "Service.ExecReload": ["/bin/kill -HUP $MAINPID"],
            "Install.WantedBy": ["multi-user.target"],
        }
        for key, value in expected.items():
            self.assertEqual(unit.get(key), value, key)
        # Nothing but the state directory is made writable.
        self.assertNotIn("Service.ReadWritePaths", unit)


class SystemdAnalyzeTests(SynchronousTestCase):
    def setUp(self) -> None:
        requireBinaries("systemd-analyze")
        self.analyze = findBinary("systemd-analyze")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.access(twistd, os.X_OK):
            self.fail(f"no twistd beside {sys.executable}")
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        self.unit = os.path.join(directory, "sipxmpp.service")
        with open(UNIT, encoding="utf-8") as f:
            text = f.read()
        self.assertIn(INSTALLED_TWISTD, text)
        with open(self.unit, "w", encoding="utf-8") as f:
            f.write(text.replace(INSTALLED_TWISTD, twistd))

    def systemdAnalyze(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.analyze, *args], capture_output=True, text=True,
                              timeout=60, check=False)

    def test_verify(self) -> None:
        """
        systemd-analyze verify accepts the unit: exit status 0 and no
        warning about it (an unknown key is only a warning).
        """
        result = self.systemdAnalyze("verify", self.unit)
        self.assertEqual(result.returncode, 0, result.stderr)
        complaints = [line for line in result.stderr.splitlines() if "sipxmpp.service" in line]
        self.assertEqual(complaints, [], result.stderr)

    def test_verifyCatchesMistakes(self) -> None:
        """
        The check above would see a mistake: a misspelt key is reported.
        """
        with open(self.unit, encoding="utf-8") as f:
            text = f.read()
        with open(self.unit, "w", encoding="utf-8") as f:
            f.write(text.replace("ProtectSystem=strict", "ProtectSystm=strict"))
        result = self.systemdAnalyze("verify", self.unit)
        self.assertIn("Unknown key 'ProtectSystm'", result.stderr)

    def test_hardening(self) -> None:
        """
        systemd's exposure score for the unit stays below "MEDIUM".
        """
        result = self.systemdAnalyze("security", "--offline=true", f"--threshold={EXPOSURE_THRESHOLD}",
                          self.unit)
        self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr)
