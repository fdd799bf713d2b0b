"""
The per-account XMPP server in the store (L{tests.unit.test_store_xmppserver})
on a real PostgreSQL, started for these tests in a temporary folder on a
free loopback port and stopped by PID; each test gets a fresh database.
Without PostgreSQL's server these tests are skipped, except under
C{CI=true}, where they fail.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.testing.postgres import PostgresServer, requirePostgres
from sipxmpp.testing.process import SharedServer
from tests.unit.test_store_xmppserver import XMPPServerStoreMixin


class PostgreSQLXMPPServerStoreTests(XMPPServerStoreMixin, SynchronousTestCase):
    postgres = SharedServer(PostgresServer)

    def newStoreURL(self) -> str:
        requirePostgres()
        # Asked for once per test: each ask adds a cleanup that stops the
        # shared server after the class's last test, which must run after
        # every database of the test was dropped.
        server: PostgresServer | None = getattr(self, "_server", None)
        if server is None:
            server = self._server = self.postgres.get(self)
        url = server.createDatabase()
        self.addCleanup(server.dropDatabase, url)
        return url
