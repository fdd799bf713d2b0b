"""
The publisher with a real mcabber (1.1.2, Debian's) as the user's client,
against Prosody: mcabber answers the command list in the commands
namespace and shows no message in its set-status form; the call must still
be shown on it by remote control, and its message put back after.

mcabber runs on a pseudo-terminal (L{sipxmpp.testing.mcabber}); a slixmpp
client (the same as in L{tests.integration.test_xmpp_publisher}) watches as
a contact. Everything listens on 127.0.0.1; waits are bounded.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.words.protocols.jabber.jid import JID

from sipxmpp.telephony.events import Event, StateChange, TelephonyState
from sipxmpp.testing.process import requireBinaries
from sipxmpp.xmpp.accounts import Account, MemoryAccountDirectory
from sipxmpp.xmpp.publisher import Publisher, PublisherSettings
from sipxmpp.xmpp.session import SessionFactory, SessionSettings
from tests.integration.test_xmpp_publisher import CLIENTS, DesktopClient, deferred, reactor

S = TelephonyState
USERS = {"frank": "frank-pw", "bob": "bob-pw"}
MESSAGE = "reading mail"


class McabberTests(TestCase):
    timeout = 90
    settings = PublisherSettings(commandTimeout=5, logoutGrace=300)

    def setUp(self) -> None:
        requireBinaries("prosody", "prosodyctl", "openssl", "mcabber")
        from sipxmpp.testing.prosody import ProsodyServer

        self.server = ProsodyServer(baseDir=self.mktemp(), users=USERS)
        self.server.subscribe("frank", "bob")
        self.server.start()
        self.addCleanup(self.server.stop)

    def startMcabber(self) -> Any:
        from sipxmpp.testing.mcabber import McabberClient

        server = self.server
        client = McabberClient(os.path.abspath(self.mktemp()), "frank", server.domain,
                               USERS["frank"], server.host, server.port, server.caFile,
                               priority=3, message=MESSAGE)  # fmt: skip
        client.start()
        self.addCleanup(client.stop)
        return client

    def startWatcher(self) -> Deferred[DesktopClient]:
        server = self.server
        client = DesktopClient("bob/watch")
        args = [
            sys.executable, CLIENTS, "--jid", f"bob@{server.domain}/watch",
            "--password", USERS["bob"], "--host", server.host, "--port", str(server.port),
            "--ca-file", server.caFile, "--priority", "0", "--status", "", "--rc", "none",
        ]  # fmt: skip
        reactor.spawnProcess(client, sys.executable, args, env=dict(os.environ))

        async def stop() -> None:
            if client.transport is not None and not client.ended.called:
                client.send(op="quit")
                killer = reactor.callLater(5, lambda: client.ended.called
                                           or client.transport.signalProcess("KILL"))  # fmt: skip
                await client.ended
                if killer.active():
                    killer.cancel()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return client.waitFor("ready", lambda e: e.get("event") in ("ready", "failed")).addCallback(
            lambda e: client if e["event"] == "ready" else self.fail(f"{client.name}: {e}")
        )

    def startPublisher(self) -> Publisher:
        server = self.server
        sessions = SessionFactory(
            reactor,
            SessionSettings(server=f"{server.host}:{server.port}", requireTLS=True,
                            pingInterval=30, pingTimeout=10, failedRetryDelay=600),
            caFile=server.caFile,
        )  # fmt: skip
        account = Account(f"sip:frank@{server.domain}", JID(server.jid("frank")), USERS["frank"])
        publisher = Publisher(reactor, self.settings, MemoryAccountDirectory([account]), sessions)
        publisher.startService()
        self.addCleanup(publisher.stopService)
        return publisher

    def say(self, publisher: Publisher, state: TelephonyState) -> None:
        publisher.telephonyStateChanged(StateChange(
            f"sip:frank@{self.server.domain}", Event.ONLINE, state, S.ONLINE, reactor.seconds()
        ))  # fmt: skip

    @deferred
    async def test_setDndAndRestored(self) -> None:
        """
        During the call contacts see mcabber dnd with the call's text; after
        it, mcabber is back online with the message it had (which its form
        never showed).
        """
        bob = await self.startWatcher()
        mcabber = self.startMcabber()
        full = f"frank@{self.server.domain}/mcabber"
        try:
            await bob.presenceFrom(full, status=MESSAGE)
        except Exception:
            self.fail(f"mcabber did not come online; trace:\n{mcabber.trace()[-3000:]}"
                      f"\nscreen:\n{mcabber.screen()[-1500:]}")  # fmt: skip
        publisher = self.startPublisher()
        self.say(publisher, S.ONLINE)
        gateway = f"frank@{self.server.domain}/sipxmpp"
        await bob.presenceFrom(gateway, priority=-1)

        mark = bob.mark()
        self.say(publisher, S.ON_THE_PHONE)
        try:
            await bob.presenceFrom(full, mark, show="dnd", status=self.settings.statusText)
        except Exception:
            self.fail(f"mcabber not set to dnd; trace:\n{mcabber.trace()[-4000:]}")
        user = publisher.users[f"sip:frank@{self.server.domain}"]
        await user.whenIdle()
        self.assertEqual(type(user.shown).__name__, "ShownOnClient")
        # mcabber's command list was read: the command went to it.
        trace = mcabber.trace()
        self.assertIn("rc#set-status", trace)
        # The quirk this is about: the command list came back in the
        # commands namespace.
        self.assertRegex(trace, r"<query [^>]*xmlns=[\"']http://jabber.org/protocol/commands[\"']")

        mark = bob.mark()
        self.say(publisher, S.ONLINE)
        back = await bob.presenceFrom(full, mark, status=MESSAGE)
        self.assertIsNone(back["show"])
        await user.whenIdle()
        self.assertIsNone(user.shown)
        # The gateway's own resource is idle (if it ever showed the call).
        seen = [e for e in bob.events if e.get("event") == "presence" and e.get("from") == gateway]
        self.assertEqual(seen[-1]["priority"], -1)
