"""
baresip as a real presence watcher (issue 18, item 6): Debian's baresip
with its C{contact} and C{presence} modules, registered as bob through the
gateway (C{[backpublish] mode = serve}), SUBSCRIBEs to alice's presence
(a contact with C{presence=p2p}) through it, and shows what the gateway's
NOTIFYs say as alice's XMPP client changes: baresip 1.0.0 prints each
change of a contact's status on its console ("<sip:alice@...> changed
status from Online to Busy"). Its reading of PIDF: basic open is Online,
RPID busy or on-the-phone Busy, RPID away Offline (baresip's choice, not
the gateway's: the document says open and away).
"""

from __future__ import annotations

import os
import re
import time

from sipxmpp.testing.process import SharedServer, requireBinaries
from tests.integration.test_backpublish import BackpublishStack
from tests.integration.test_baresip import BaresipPhone
from tests.integration.test_e2e import WAIT, E2ETestCase, aor
from tests.integration.test_xmpp_publisher import deferred, sleep


class PresenceWatcherPhone(BaresipPhone):
    """
    L{BaresipPhone} whose contacts are watched (C{presence=p2p}).
    """

    def __init__(self, user: str, outbound: str, watch: list[str]) -> None:
        super().__init__(user, outbound)
        self.watch = watch

    def prepare(self) -> None:
        super().prepare()
        path = os.path.join(self.baseDir, "config")
        with open(path, encoding="utf-8") as f:
            config = f.read()
        config = config.replace("module_app\t\tmenu.so\n",
                                "module_app\t\tmenu.so\nmodule_app\t\tcontact.so\n"
                                "module_app\t\tpresence.so\n")
        with open(path, "w", encoding="utf-8") as f:
            f.write(config)
        with open(os.path.join(self.baseDir, "contacts"), "w", encoding="utf-8") as f:
            for target in self.watch:
                f.write(f'"{target}" <{target}>;presence=p2p\n')

    def log(self) -> str:
        """
        The console log without its colours.
        """
        path = os.path.join(self.baseDir, f"{self.name}.console.log")
        with open(path, encoding="utf-8", errors="replace") as f:
            return re.sub(r"\x1b\[[0-9;]*m", "", f.read())


class BaresipWatcherTests(E2ETestCase):
    """
    alice (her phone a sipp registration, her desktop client on Prosody)
    watched by bob's baresip through the gateway.
    """

    timeout = 120
    shared = SharedServer(BackpublishStack)

    def setUp(self) -> None:
        requireBinaries("baresip")
        super().setUp()

    async def shown(self, phone: PresenceWatcherPhone, status: str, since: int) -> int:
        """
        Wait until baresip says alice's status changed to C{status} (after
        offset C{since} of its log); return the offset after that line.
        """
        line = re.compile(rf"<{re.escape(aor('alice'))}> changed status from (\w+) to "
                          rf"{status}\n")  # fmt: skip
        deadline = time.monotonic() + WAIT
        while True:
            found = line.search(phone.log(), since)
            if found:
                return found.end()
            if time.monotonic() > deadline:
                self.fail(f"baresip never showed alice {status}:\n{phone.logTail(80)}")
            await sleep(0.1)

    @deferred
    async def test_baresipWatches(self) -> None:
        """
        baresip subscribes through the gateway and follows alice: busy
        for dnd (RPID busy), offline for away (baresip's reading of RPID
        away), online once her client is gone and the gateway's own
        resource decides (basic open, no activity).
        """
        client = await self.startClient("alice", "psi")
        self.register("alice")
        await self.expectStatus("alice", "xmpp", lambda v: v == "connected", "logged in")
        phone = PresenceWatcherPhone("bob", self.gateway.address, [aor("alice")])
        self.addCleanup(phone.stop)
        phone.start()
        # Its first NOTIFY (alice at the desk) is answered, and is the
        # state the changes below start from.
        deadline = time.monotonic() + WAIT
        while "alice at the desk</note>" not in phone.log():
            if time.monotonic() > deadline:
                self.fail(f"baresip got no NOTIFY for alice:\n{phone.logTail(80)}")
            await sleep(0.1)
        mark = len(phone.log())
        client.send(op="presence", show="dnd", status="meeting", priority=5)
        mark = await self.shown(phone, "Busy", mark)
        client.send(op="presence", show="away", status="lunch", priority=5)
        mark = await self.shown(phone, "Offline", mark)
        client.send(op="quit")
        await self.shown(phone, "Online", mark)
