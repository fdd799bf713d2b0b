"""
The store off the reactor thread: L{StoreService} with a real thread pool
restores at start, answers queries from the pool's thread, and writes what
is pending at stop.
"""

from __future__ import annotations

import os
import threading

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from sipxmpp.store.opening import StoreSettings, defaultOwner, initialiseStore
from sipxmpp.store.records import AccountRecord
from sipxmpp.store.service import StoreService, makeStoreService
from sipxmpp.telephony.events import TelephonyState
from sipxmpp.telephony.state import TelephonyStateMachine

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"


class StoreServiceTests(TestCase):
    def setUp(self) -> None:
        folder = os.path.abspath(self.mktemp())
        self.settings = StoreSettings(f"sqlite:///{folder}/db.sqlite", f"{folder}/key")
        initialiseStore(self.settings).close()

    def service(self) -> tuple[StoreService, TelephonyStateMachine]:
        machine = TelephonyStateMachine(reactor)
        return makeStoreService(self.settings, reactor, machine, "gw", interval=60.0), machine

    async def test_startQueryStop(self) -> None:
        """
        Queries run in the pool's thread, not the reactor's; a change made
        just before stop is written by the stop (the 60 s interval is not
        waited for), and the next start restores it.
        """
        service, machine = self.service()
        service.startService()
        summary = await service.restored
        assert summary is not None
        self.assertEqual(summary.users, 0)

        threads: list[str] = []

        def where(tx: object) -> None:
            threads.append(threading.current_thread().name)

        await service.store.database.interact(where)
        self.assertNotEqual(threads[0], threading.current_thread().name)
        self.assertIn("sipxmpp-store", threads[0])

        await service.store.accounts.addAccount(AccountRecord(ALICE, "alice@example.test"), "pw")
        account = await service.store.accounts.lookup(ALICE)
        assert account is not None
        self.assertEqual(account.password, "pw")

        machine.bindingUpdated(ALICE, "desk", 3600)
        await service.stopService()
        self.assertFalse(service.pool.started)
        machine.allBindingsRemoved(ALICE)  # after stop: not written

        again, machine2 = self.service()
        again.startService()
        summary2 = await again.restored
        self.assertEqual(machine2.stateOf(ALICE), TelephonyState.ONLINE)
        assert summary2 is not None
        self.assertEqual((summary2.users, summary2.bindings), (1, 1))
        machine2.allBindingsRemoved(ALICE)
        await again.stopService()


class PreviousHostNameTests(TestCase):
    """
    A gateway named after its host (no C{[store] instance}) with an SQLite
    store finds its state again after the host name changed (a container
    started anew): the store is its own, so a state under one other name is
    its earlier one.
    """

    def setUp(self) -> None:
        folder = os.path.abspath(self.mktemp())
        self.settings = StoreSettings(f"sqlite:///{folder}/db.sqlite", f"{folder}/key")
        initialiseStore(self.settings).close()

    async def gateway(self, owner: str | None, *registered: str) -> tuple[StoreService, int]:
        """
        Start a gateway named C{owner} (L{None}: the host name), register
        C{registered} AoRs, stop it; return it and how many users it
        restored.
        """
        machine = TelephonyStateMachine(reactor)
        service = makeStoreService(self.settings, reactor, machine, owner, interval=60.0)
        service.startService()
        summary = await service.restored
        assert summary is not None
        for aor in registered:
            machine.bindingUpdated(aor, "desk", 3600)
        await service.stopService()
        for aor in (ALICE, BOB):  # after stop: not written
            machine.allBindingsRemoved(aor)
        return service, summary.users

    async def test_renamedHostRestores(self) -> None:
        await self.gateway("old-host", ALICE)
        service, users = await self.gateway(None)
        self.assertEqual(service.store.runtime.owner, defaultOwner())
        self.assertEqual(users, 1)
        # Under the new name now: it is restored again, and nothing is left
        # under the old one.
        _, again = await self.gateway(None)
        self.assertEqual(again, 1)
        _, old = await self.gateway("old-host")
        self.assertEqual(old, 0)

    async def test_ownStateWins(self) -> None:
        """
        State under this name already: another name's is left alone.
        """
        await self.gateway(None, ALICE)
        await self.gateway("old-host", BOB)
        _, users = await self.gateway(None)
        self.assertEqual(users, 1)
        _, old = await self.gateway("old-host")
        self.assertEqual(old, 1)

    async def test_severalOthersLeftAlone(self) -> None:
        """
        Two other names: which one was this gateway is not known.
        """
        await self.gateway("host-1", ALICE)
        await self.gateway("host-2", BOB)
        _, users = await self.gateway(None)
        self.assertEqual(users, 0)

    async def test_namedInstanceNeverAdopts(self) -> None:
        """
        An explicit C{[store] instance} is kept as it is: another name in
        the store may be a sibling on the same host.
        """
        await self.gateway("gw-a", ALICE)
        _, users = await self.gateway("gw-b")
        self.assertEqual(users, 0)
        _, users = await self.gateway("gw-a")
        self.assertEqual(users, 1)
