"""
Test-only: real servers on 127.0.0.1 for integration tests, the
benchmarks and the dev stack behind C{make run}. Never installed (setup.py
leaves it out) and imported by no module of the gateway: it runs from the
source tree.

Launchers (plain classes; C{start()} blocks until ready, C{stop()} leaves no
process behind):

  - L{sipxmpp.testing.prosody.ProsodyServer}: Prosody 0.12, STARTTLS with a
    test CA, users, pre-filled rosters;
  - L{sipxmpp.testing.ejabberd.EjabberdServer}: ejabberd 23.01, likewise;
  - L{sipxmpp.testing.kamailio.KamailioServer}: Kamailio 5.6 as registrar
    and proxy (Path, Record-Route, optional digest auth);
  - L{sipxmpp.testing.sipp.SippRunner}: sipp scenarios from
    C{tests/integration/scenarios/}, foreground or background.

In trial tests: C{requireBinaries(...)} in C{setUp} (skip locally, fail
under C{CI=true}), C{startForTest(self, server)} for a server per test, or
a class attribute C{SharedServer(factory)} for one per test class (all in
L{sipxmpp.testing.process}).  L{sipxmpp.testing.xmppprobe} is a minimal
blocking XMPP client to check servers.  C{python -m
sipxmpp.testing.devstack} runs the local stack behind C{make run}.
"""
