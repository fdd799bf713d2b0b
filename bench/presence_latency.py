"""
Presence latency of the XMPP publisher against a real Prosody on loopback.

Measures, for every call, the time from the moment an on-the-phone event
reaches L{Publisher.telephonyStateChanged} to the moment a watching contact
receives the user's dnd presence:

  - case b: the user's slixmpp desktop client (Psi-style XEP-0146, in a
    subprocess) is set to dnd by remote control and broadcasts it;
  - case a: the gateway's own resource shows dnd (a user without clients).

After each call the call ends and the bench waits until the contact has seen
the original presence again, so calls do not overlap, and then C{--gap} ms
(default 0: back to back). The watcher is a twisted.words session in this
process (one clock for both ends).

Back to back, case b's next command reaches Prosody a few ms after the
client's own presence of the restore; the client has not yet acknowledged
that (its delayed ACK), so Prosody's Nagle holds the command until it does,
about 40 ms (captured on lo). C{--gap 100} starts each call from a quiet
connection, as a user's calls do.

Usage: python bench/presence_latency.py [--calls 1000] [--timeout 600]
                                       [--prosody-nagle-off] [--gap MS]

Prints raw figures per case; the last line covers both cases together:
  presence latency p50 X ms p99 Y ms
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from sipxmpp.telephony.events import Event, StateChange, TelephonyState
from sipxmpp.testing.process import stopServersOnTerminate
from sipxmpp.testing.prosody import ProsodyServer
from sipxmpp.testing.templates import etcPath
from sipxmpp.xmpp.accounts import Account, MemoryAccountDirectory
from sipxmpp.xmpp.publisher import Publisher, PublisherSettings
from sipxmpp.xmpp.resources import parsePresence
from sipxmpp.xmpp.session import SessionFactory, SessionSettings
from sipxmpp.xmpp.wokkelcompat import subprotocols

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = os.path.join(ROOT, "tests", "integration", "xmppclients.py")
USERS = {"alice": "alice-pw", "carol": "carol-pw", "bob": "bob-pw"}
TEXT = "I am currently on the phone"


class Watcher(subprotocols.XMPPHandler):  # type: ignore[misc]
    """
    The contact: timestamps every presence it receives.
    """

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[tuple[Callable[[str, Any], bool], Deferred[float]]] = []
        self.ready: Deferred[None] = Deferred()

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/presence", self.onPresence)
        self.send(domish.Element((None, "presence")))
        self.ready.callback(None)

    def onPresence(self, element: domish.Element) -> None:
        now = time.perf_counter()
        sender = element.getAttribute("from", "")
        presence = parsePresence(element, sender)
        for entry in list(self.waiting):
            match, d = entry
            if match(sender, presence):
                self.waiting.remove(entry)
                d.callback(now)

    def waitFor(self, match: Callable[[str, Any], bool], timeout: float, reactor: Any) -> Deferred[float]:
        d: Deferred[float] = Deferred()
        self.waiting.append((match, d))
        d.addTimeout(timeout, reactor)
        return d


class Client(ProcessProtocol):
    def __init__(self) -> None:
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.buffer = b""

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if json.loads(line).get("event") == "ready" and not self.ready.called:
                self.ready.callback(None)

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(reason)
        self.ended.callback(None)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def describe(name: str, values: list[float]) -> str:
    return (
        f"{name}: n={len(values)} min={min(values):.2f} p50={percentile(values, 50):.2f} "
        f"p90={percentile(values, 90):.2f} p99={percentile(values, 99):.2f} "
        f"max={max(values):.2f} mean={statistics.fmean(values):.2f} ms"
    )


async def run(reactor: Any, calls: int, timeout: float, tuned: bool, gap: float) -> None:
    deadline = time.monotonic() + timeout
    template = None
    if tuned:
        # Prosody's epoll backend keeps Nagle's algorithm on by default: a
        # small stanza can wait for the peer's delayed ACK (~40 ms on Linux).
        with open(etcPath("prosody.cfg.lua.in"), encoding="utf-8") as f:
            text = f.read()
        text = text.replace(
            'VirtualHost "@DOMAIN@"',
            "network_settings = { nagle = false }\n\nVirtualHost \"@DOMAIN@\"",
            1,
        )
        template = os.path.join(tempfile.mkdtemp(prefix="sipxmpp-bench-"), "prosody.cfg.lua.in")
        with open(template, "w", encoding="utf-8") as f:
            f.write(text)
    server = ProsodyServer(users=USERS, template=template)
    server.subscribe("alice", "bob")
    server.subscribe("carol", "bob")
    server.start()
    client = Client()
    try:
        sessionSettings = SessionSettings(server=f"{server.host}:{server.port}")
        sessions = SessionFactory(reactor, sessionSettings, caFile=server.caFile)
        watcherSession = sessions(JID("bob@example.test"), USERS["bob"])
        watcher = Watcher()
        watcherSession.addHandler(watcher)
        watcherSession.start()
        await watcher.ready

        args = [sys.executable, CLIENTS, "--jid", "alice@example.test/psi",
                "--password", USERS["alice"], "--host", server.host, "--port", str(server.port),
                "--ca-file", server.caFile, "--priority", "5", "--status", "working", "--rc", "psi"]  # fmt: skip
        reactor.spawnProcess(client, sys.executable, args, env=dict(os.environ))
        await client.ready

        accounts = MemoryAccountDirectory([
            Account("sip:alice@example.test", JID("alice@example.test"), USERS["alice"]),
            Account("sip:carol@example.test", JID("carol@example.test"), USERS["carol"],
                    mode="resource"),
        ])  # fmt: skip
        publisher = Publisher(reactor, PublisherSettings(statusText=TEXT), accounts, sessions)
        publisher.startService()

        def say(user: str, state: TelephonyState) -> None:
            publisher.telephonyStateChanged(
                StateChange(f"sip:{user}@example.test", Event.ON_THE_PHONE, state,
                            TelephonyState.ONLINE, reactor.seconds())  # fmt: skip
            )

        results: dict[str, list[float]] = {}
        for case, user, busyFrom, idle in (
            ("case b (remote control of the user's client)", "alice", "alice@example.test/psi",
             lambda p: p.status == "working" and p.show is None),
            ("case a (the gateway's own resource)", "carol", "carol@example.test/sipxmpp",
             lambda p: p.show is None and p.priority < 0),
        ):  # fmt: skip
            ready = watcher.waitFor(lambda s, p, u=user: s == f"{u}@example.test/sipxmpp", 30, reactor)
            say(user, TelephonyState.ONLINE)
            await ready
            await task.deferLater(reactor, 1.0, lambda: None)  # discovery, settle
            userPublisher = publisher.users[f"sip:{user}@example.test"]
            latencies: list[float] = []
            for _ in range(calls):
                if time.monotonic() > deadline:
                    raise SystemExit(f"bench: over the {timeout:g} s bound; stopping")
                busy = watcher.waitFor(
                    lambda s, p, f=busyFrom: s == f and p.show == "dnd" and p.status == TEXT, 10, reactor
                )
                start = time.perf_counter()
                say(user, TelephonyState.ON_THE_PHONE)
                seen = await busy
                latencies.append((seen - start) * 1000)
                back = watcher.waitFor(lambda s, p, f=busyFrom, i=idle: s == f and i(p), 10, reactor)
                say(user, TelephonyState.ONLINE)
                await back
                await userPublisher.whenIdle()
                if gap:
                    await task.deferLater(reactor, gap / 1000, lambda: None)
            results[case] = latencies
            print(describe(case, latencies), flush=True)

        combined = [v for values in results.values() for v in values]
        print(f"gap between calls: {gap:g} ms", flush=True)
        print(describe("both cases", combined), flush=True)
        print("the last line covers both cases together", flush=True)
        print(
            f"presence latency p50 {percentile(combined, 50):.2f} ms "
            f"p99 {percentile(combined, 99):.2f} ms",
            flush=True,
        )
        await publisher.stopService()
        await watcherSession.stop()
    finally:
        if client.transport is not None and not client.ended.called:
            client.transport.write(b'{"op": "quit"}\n')
            killer = reactor.callLater(5, lambda: client.ended.called or client.transport.signalProcess("KILL"))
            await client.ended
            if killer.active():
                killer.cancel()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per case (default 1000)")
    parser.add_argument("--timeout", type=float, default=600, help="bound on the whole run, seconds")
    parser.add_argument("--prosody-nagle-off", action="store_true",
                        help="run Prosody with network_settings = { nagle = false }")  # fmt: skip
    parser.add_argument("--gap", type=float, default=0,
                        help="ms to wait after a call is over before the next (default 0)")
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(
        run(reactor, args.calls, args.timeout, args.prosody_nagle_off, args.gap)
    ))  # fmt: skip


if __name__ == "__main__":
    stopServersOnTerminate()
    main()
