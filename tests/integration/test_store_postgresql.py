"""
The store behaviour suite on a real PostgreSQL, started for these tests in
a temporary folder on a free loopback port and stopped by PID. Each test
gets a fresh database. Without PostgreSQL's server these tests are
skipped, except under C{CI=true}, where they fail.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase

from sipxmpp.store.errors import StoreUnavailable
from sipxmpp.store.opening import StoreSettings, openStore
from sipxmpp.testing.ports import freeTCPPort
from sipxmpp.testing.postgres import PostgresServer, requirePostgres
from sipxmpp.testing.process import SharedServer
from tests.unit.test_store_behaviour import StoreBehaviourMixin


class PostgreSQLStoreBehaviourTests(StoreBehaviourMixin, SynchronousTestCase):
    """
    The behaviour suite on PostgreSQL.
    """

    postgres = SharedServer(PostgresServer)

    def newStoreURL(self) -> str:
        requirePostgres()
        server = self.postgres.get(self)
        url = server.createDatabase()
        self.addCleanup(server.dropDatabase, url)
        return url

    def test_passwordNotInMessages(self) -> None:
        """
        A password in the URL never appears in an error message.
        """
        port = freeTCPPort()
        url = f"postgresql://someone:hunter2-url-password@127.0.0.1:{port}/db?connect_timeout=2"
        e = self.assertRaises(
            StoreUnavailable, openStore, StoreSettings(url, self.keyFile)
        )
        self.assertIn(f"postgresql://someone@127.0.0.1:{port}/db", str(e))
        self.assertIn("cannot connect", str(e))
        self.assertNotIn("hunter2", str(e))

    def test_reconnects(self) -> None:
        """
        After the server dropped the connection, the next query reconnects.
        """
        self.store.accounts.listAccounts()
        server = self.postgres.get(self)
        import psycopg

        with psycopg.connect(server.url("postgres"), autocommit=True) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'sipxmpp' AND datname = %s",
                (self.url.rsplit("/", 1)[1],),
            )
        self.failureResultOf(self.store.accounts.listAccounts(), StoreUnavailable)
        self.assertEqual(self.successResultOf(self.store.accounts.listAccounts()), [])


class RequirePostgresTests(SynchronousTestCase):
    """
    Without PostgreSQL's server the tests skip, except under CI=true.
    """

    def setUp(self) -> None:
        from sipxmpp.testing import postgres

        def missing() -> tuple[str, str]:
            raise postgres.MissingBinary("PostgreSQL's server is not installed (test)")

        self.patch(postgres, "findPostgresBinaries", missing)

    def test_skipLocally(self) -> None:
        self.patch(os, "environ", {"CI": "false"})
        e = self.assertRaises(SkipTest, requirePostgres)
        self.assertIn("PostgreSQL's server is not installed", str(e))

    def test_failUnderCI(self) -> None:
        self.patch(os, "environ", {"CI": "true"})
        e = self.assertRaises(FailTest, requirePostgres)
        self.assertIn("CI=true", str(e))
