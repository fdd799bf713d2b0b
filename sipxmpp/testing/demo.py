"""
The scripted call behind C{make demo}.

With the dev stack running (Prosody, Kamailio, the gateway with alice and
bob provisioned), carol watches her contacts over XMPP while sipp phones
register alice and bob through the gateway and alice calls bob for a few
seconds. What carol saw of alice and bob is printed as a timeline:
online, then dnd "I am currently on the phone", then back.
"""

from __future__ import annotations

import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from sipxmpp.testing.ports import LOOPBACK, freeSIPPort
from sipxmpp.testing.sipp import SippRunner
from sipxmpp.testing.xmppprobe import XMPPProbe, XMPPProbeError, login

NS_CLIENT = "jabber:client"


@dataclass(frozen=True)
class Sighting:
    """
    One presence carol received.
    """

    at: float
    jid: str
    available: bool
    show: str
    status: str
    priority: int

    def describe(self, start: float) -> str:
        what = "unavailable"
        if self.available:
            what = self.show or "available"
            if self.status:
                what += f" {self.status!r}"
        return f"  +{self.at - start:6.2f} s  {self.jid:<28} {what} (priority {self.priority})"


def _text(element: ET.Element, name: str) -> str:
    child = element.find(f"{{{NS_CLIENT}}}{name}")
    return (child.text or "") if child is not None else ""


class Watcher(threading.Thread):
    """
    Carol's client: records every presence from her contacts until stopped.
    """

    def __init__(self, probe: XMPPProbe) -> None:
        super().__init__(daemon=True)
        self.probe = probe
        self.sightings: list[Sighting] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                element = self.probe.next(lambda e: e.tag == f"{{{NS_CLIENT}}}presence", 0.2)
            except (XMPPProbeError, TimeoutError, OSError):
                continue
            priority = _text(element, "priority")
            self.sightings.append(Sighting(
                time.monotonic(), element.get("from", ""),
                element.get("type") != "unavailable", _text(element, "show"),
                _text(element, "status"), int(priority) if priority.lstrip("-").isdigit() else 0,
            ))

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def runDemo(domain: str, xmppPort: int, caFile: str, gatewayPort: int,
            watcherPassword: str, holdSeconds: float = 4.0) -> int:
    """
    Place the scripted call and print carol's timeline.

    @return: 0 if carol saw alice go dnd and come back, else 1.
    """
    probe = login(LOOPBACK, xmppPort, domain, "carol", watcherPassword, caFile, "demo")
    watcher = Watcher(probe)
    start = time.monotonic()
    probe.sendPresence()
    watcher.start()
    gateway = f"{LOOPBACK}:{gatewayPort}"
    sipp = SippRunner(tempfile.mkdtemp(prefix="sipxmpp-demo-"), LOOPBACK)
    try:
        print("demo: alice and bob register through the gateway", flush=True)
        alicePort, bobPort = freeSIPPort(), freeSIPPort()
        for user, port in (("alice", alicePort), ("bob", bobPort)):
            result = sipp.register(gateway, user, domain, localPort=port)
            if not result.ok:
                print(f"demo: REGISTER of {user} failed: {result.describe()}")
                return 1
        time.sleep(1.5)  # let the gateway log them in to XMPP
        print(f"demo: alice calls bob for {holdSeconds:g} s", flush=True)
        answerer = sipp.answer("bob", localPort=bobPort)
        call = sipp.call(gateway, "bob", domain, caller="alice", holdMs=int(holdSeconds * 1000),
                         timeout=holdSeconds + 20)
        answerer.stop()
        time.sleep(1.5)  # let the "back" presence arrive
        for user, port in (("alice", alicePort), ("bob", bobPort)):
            sipp.register(gateway, user, domain, expires=0, localPort=port)
        time.sleep(0.5)
    finally:
        watcher.stop()
        probe.close()
        sipp.stopAll()
    print(f"demo: the call {'completed' if call.ok else 'FAILED: ' + call.describe()}")
    print("demo: what carol (alice's and bob's contact) saw:")
    ours = [s for s in watcher.sightings if not s.jid.startswith("carol@")]
    for sighting in ours:
        print(sighting.describe(start))
    aliceShows = [s.show for s in ours if s.jid.startswith(f"alice@{domain}/")]
    dnd = "dnd" in aliceShows
    back = dnd and any(show != "dnd" for show in aliceShows[aliceShows.index("dnd"):])
    ok = call.ok and dnd and back
    print("demo: " + ("alice went dnd during the call and came back" if ok
                      else "FAILED: alice was not seen going dnd and back"))
    return 0 if ok else 1
