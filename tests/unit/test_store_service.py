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

from sipxmpp.store.opening import StoreSettings, initialiseStore
from sipxmpp.store.records import AccountRecord
from sipxmpp.store.service import StoreService, makeStoreService
from sipxmpp.telephony.events import TelephonyState
from sipxmpp.telephony.state import TelephonyStateMachine

ALICE = "sip:alice@example.test"


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
