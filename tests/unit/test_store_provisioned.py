"""
Tests for L{sipxmpp.store.provisioned.ProvisionedAoRs}: the in-memory set
of provisioned AoRs the SIP path asks, reloaded from a real SQLite store on
a L{Clock}.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.store.opening import StoreSettings, initialiseStore
from sipxmpp.store.provisioned import ProvisionedAoRs
from sipxmpp.store.records import AccountRecord

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"


class ProvisionedAoRsTests(SynchronousTestCase):
    def setUp(self) -> None:
        folder = self.mktemp()
        os.makedirs(folder)
        settings = StoreSettings(f"sqlite:///{folder}/db.sqlite", f"{folder}/key")
        self.store = initialiseStore(settings, owner="gw")
        self.addCleanup(self.store.close)
        self.clock = Clock()
        self.provisioned = ProvisionedAoRs(self.store.accounts, self.clock, interval=5)

    def add(self, aor: str, jid: str) -> None:
        self.successResultOf(self.store.accounts.addAccount(AccountRecord(aor, jid), "pw"))

    def test_loadedAtStartAndReloaded(self) -> None:
        """
        Nothing counts before the service starts; at start the enabled
        accounts do; a change in the store counts after one interval.
        """
        self.add(ALICE, "alice@example.test")
        self.assertFalse(self.provisioned.isProvisioned(ALICE))
        self.provisioned.startService()
        self.addCleanup(self.provisioned.stopService)
        self.assertTrue(self.provisioned.isProvisioned(ALICE))
        self.assertFalse(self.provisioned.isProvisioned(BOB))
        self.add(BOB, "bob@example.test")
        self.successResultOf(self.store.accounts.setEnabled(ALICE, False))
        self.clock.advance(4.9)
        self.assertEqual((ALICE in self.provisioned, BOB in self.provisioned), (True, False))
        self.clock.advance(0.1)
        self.assertEqual((ALICE in self.provisioned, BOB in self.provisioned), (False, True))

    def test_failedReloadKeepsTheLastSet(self) -> None:
        self.add(ALICE, "alice@example.test")
        self.provisioned.startService()
        self.addCleanup(self.provisioned.stopService)
        self.store.close()
        self.clock.advance(5)
        self.assertTrue(self.provisioned.isProvisioned(ALICE))
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_stopStopsReloading(self) -> None:
        self.provisioned.startService()
        self.provisioned.stopService()
        self.add(ALICE, "alice@example.test")
        self.clock.advance(60)
        self.assertFalse(self.provisioned.isProvisioned(ALICE))

    def test_listenersToldTheDifference(self) -> None:
        """
        A listener hears the AoRs added and removed by each load that
        changed the set, and at once those already loaded.
        """
        heard: list[tuple[frozenset[str], frozenset[str]]] = []
        self.provisioned.addListener(lambda added, removed: heard.append((added, removed)))
        self.add(ALICE, "alice@example.test")
        self.provisioned.startService()
        self.addCleanup(self.provisioned.stopService)
        self.assertEqual(heard, [(frozenset({ALICE}), frozenset())])
        self.clock.advance(5)
        self.assertEqual(len(heard), 1)
        self.add(BOB, "bob@example.test")
        self.successResultOf(self.store.accounts.setEnabled(ALICE, False))
        self.clock.advance(5)
        self.assertEqual(heard[1], (frozenset({BOB}), frozenset({ALICE})))
        self.assertEqual(self.provisioned.aors, frozenset({BOB}))
        late: list[tuple[frozenset[str], frozenset[str]]] = []
        self.provisioned.addListener(lambda added, removed: late.append((added, removed)))
        self.assertEqual(late, [(frozenset({BOB}), frozenset())])

    def test_failingListener(self) -> None:
        """
        A listener that raises is logged; the set is loaded all the same.
        """

        def broken(added: frozenset[str], removed: frozenset[str]) -> None:
            raise RuntimeError("boom")

        self.provisioned.addListener(broken)
        self.add(ALICE, "alice@example.test")
        self.provisioned.startService()
        self.addCleanup(self.provisioned.stopService)
        self.assertTrue(self.provisioned.isProvisioned(ALICE))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
