"""
Tests for L{sipxmpp.xmpp.sasl}: SCRAM against a server-side C{scramp}
exchange, the choice of mechanism, and the initializer on a stream stub.
"""

from __future__ import annotations

import base64

import scramp  # type: ignore[import-untyped]
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber import sasl_mechanisms, xmlstream
from twisted.words.protocols.jabber.client import XMPPAuthenticator
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from sipxmpp.xmpp.sasl import (
    NoAcceptableMechanism,
    SASLFailure,
    SASLInitializer,
    ScramKeyCache,
    ScramMechanism,
    chooseMechanism,
    replaceSASLInitializer,
)

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
PASSWORD = "pencil-Ä-secret"


def scramServer(name: str, password: str = PASSWORD) -> scramp.ScramServer:
    mechanism = scramp.ScramMechanism(name)
    info = mechanism.make_auth_info(password, iteration_count=4096)
    return mechanism.make_server(lambda username: info)


class ScramMechanismTests(SynchronousTestCase):
    def exchange(self, name: str, serverPassword: str = PASSWORD) -> ScramMechanism:
        client = ScramMechanism(name, "alice", PASSWORD)
        server = scramServer(name, serverPassword)
        server.set_client_first(client.getInitialResponse().decode())
        final = client.getResponse(server.get_server_first().encode())
        server.set_client_final(final.decode())
        client.verifyServerFinal(server.get_server_final().encode())
        return client

    def test_sha256(self) -> None:
        self.assertTrue(self.exchange("SCRAM-SHA-256").verified)

    def test_sha1(self) -> None:
        self.assertTrue(self.exchange("SCRAM-SHA-1").verified)

    def test_wrongPassword(self) -> None:
        """
        The server refuses a proof made with another password.
        """
        self.assertRaises(scramp.ScramException, self.exchange, "SCRAM-SHA-256", "other")

    def test_forgedServerSignature(self) -> None:
        """
        A server that does not know the credentials cannot sign.
        """
        client = ScramMechanism("SCRAM-SHA-1", "alice", PASSWORD)
        server = scramServer("SCRAM-SHA-1")
        server.set_client_first(client.getInitialResponse().decode())
        client.getResponse(server.get_server_first().encode())
        forged = "v=" + base64.b64encode(b"x" * 20).decode()
        error = self.assertRaises(SASLFailure, client.verifyServerFinal, forged.encode())
        self.assertNotIn(PASSWORD, str(error))
        self.assertFalse(client.verified)

    def test_serverFinalAsChallenge(self) -> None:
        """
        A server-final message sent as a challenge is checked and answered
        with an empty response.
        """
        client = ScramMechanism("SCRAM-SHA-256", "alice", PASSWORD)
        server = scramServer("SCRAM-SHA-256")
        server.set_client_first(client.getInitialResponse().decode())
        final = client.getResponse(server.get_server_first().encode())
        server.set_client_final(final.decode())
        self.assertEqual(client.getResponse(server.get_server_final().encode()), b"")
        self.assertTrue(client.verified)


class KeyCacheTests(SynchronousTestCase):
    """
    L{ScramKeyCache}: a cached exchange still proves the password; another
    salt, iteration count or password misses; the cache is bounded.
    """

    def login(self, cache: ScramKeyCache, server: scramp.ScramServer,
              password: str = PASSWORD, name: str = "SCRAM-SHA-256") -> ScramMechanism:
        client = ScramMechanism(name, "alice", password, cache=cache)
        server.set_client_first(client.getInitialResponse().decode())
        final = client.getResponse(server.get_server_first().encode())
        server.set_client_final(final.decode())
        client.verifyServerFinal(server.get_server_final().encode())
        return client

    def serverFor(self, info: tuple[bytes, bytes, bytes, int],
                  name: str = "SCRAM-SHA-256") -> scramp.ScramServer:
        return scramp.ScramMechanism(name).make_server(lambda username: info)

    def info(self, password: str = PASSWORD, salt: bytes = b"s" * 16,
             iterations: int = 4096, name: str = "SCRAM-SHA-256"
             ) -> tuple[bytes, bytes, bytes, int]:
        return scramp.ScramMechanism(name).make_auth_info(  # type: ignore[no-any-return]
            password, iteration_count=iterations, salt=salt)

    def test_cachedLoginProves(self) -> None:
        """
        The second login with the same password, salt and count hits the
        cache and its proof is still accepted, with the server verified.
        """
        cache = ScramKeyCache(10)
        info = self.info()
        for name in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
            info = self.info(name=name)
            self.assertTrue(self.login(cache, self.serverFor(info, name), name=name).verified)
            self.assertTrue(self.login(cache, self.serverFor(info, name), name=name).verified)
        self.assertEqual((cache.hits, cache.misses, len(cache)), (2, 2, 2))

    def test_sameProofAsWithoutCache(self) -> None:
        """
        With the same nonces, the client-final message is the one scramp
        computes itself.
        """
        cache = ScramKeyCache(10)
        info = self.info()
        for _ in range(2):
            server = self.serverFor(info)
            ours = ScramMechanism("SCRAM-SHA-256", "alice", PASSWORD, cache=cache)
            ours._client.c_nonce = scramp.core.Nonce("fixednonce")
            reference = scramp.ScramClient(["SCRAM-SHA-256"], "alice", PASSWORD,
                                           c_nonce="fixednonce")
            server.set_client_first(ours.getInitialResponse().decode())
            first = server.get_server_first()
            reference.get_client_first()
            reference.set_server_first(first)
            self.assertEqual(ours.getResponse(first.encode()).decode(),
                             reference.get_client_final())
        self.assertEqual(cache.hits, 1)

    def test_changedSaltCountOrPasswordMisses(self) -> None:
        """
        Another salt, another iteration count or another password is a
        miss; a changed password's old keys are never used for the new one.
        """
        cache = ScramKeyCache(10)
        self.login(cache, self.serverFor(self.info()))
        self.login(cache, self.serverFor(self.info(salt=b"t" * 16)))
        self.login(cache, self.serverFor(self.info(iterations=4097)))
        self.login(cache, self.serverFor(self.info("new password")), password="new password")
        self.assertEqual((cache.hits, cache.misses), (0, 4))
        # The server changed the password: the cached keys of the old one
        # (same salt and count) do not log in.
        server = self.serverFor(self.info("new password"))
        self.assertRaises(scramp.ScramException, self.login, cache, server)

    def test_bounded(self) -> None:
        """
        The least recently used entry goes first when the cache is full; a
        size of 0 caches nothing.
        """
        cache = ScramKeyCache(2)
        salts = [bytes([65 + i]) * 16 for i in range(3)]
        cache.keys("sha256", b"pw", salts[0], 1)
        cache.keys("sha256", b"pw", salts[1], 1)
        cache.keys("sha256", b"pw", salts[0], 1)  # now most recent
        cache.keys("sha256", b"pw", salts[2], 1)  # evicts salts[1]
        self.assertEqual(len(cache), 2)
        cache.keys("sha256", b"pw", salts[0], 1)
        cache.keys("sha256", b"pw", salts[1], 1)
        self.assertEqual((cache.hits, cache.misses), (2, 4))
        none = ScramKeyCache(0)
        none.keys("sha256", b"pw", salts[0], 1)
        none.keys("sha256", b"pw", salts[0], 1)
        self.assertEqual((len(none), none.hits), (0, 0))

    def test_reprHidesKeys(self) -> None:
        """
        The cache's repr says its size only, never a password or a key.
        """
        cache = ScramKeyCache(3)
        client, server = cache.keys("sha256", PASSWORD.encode(), b"s" * 16, 1)
        self.assertEqual(repr(cache), "<ScramKeyCache 1/3>")


class ChooseMechanismTests(SynchronousTestCase):
    jid = JID("alice@example.test/sipxmpp")

    def choose(self, offered: list[str], overTLS: bool = True) -> str:
        return str(chooseMechanism(offered, self.jid, PASSWORD, overTLS).name)

    def test_prefersScramSHA256(self) -> None:
        offered = ["PLAIN", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        self.assertEqual(self.choose(offered), "SCRAM-SHA-256")

    def test_scramSHA1(self) -> None:
        self.assertEqual(self.choose(["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"]), "SCRAM-SHA-1")

    def test_plainOnlyOverTLS(self) -> None:
        self.assertEqual(self.choose(["PLAIN"]), "PLAIN")
        self.assertRaises(NoAcceptableMechanism, self.choose, ["PLAIN"], False)

    def test_neverDigestMD5(self) -> None:
        error = self.assertRaises(NoAcceptableMechanism, self.choose, ["DIGEST-MD5", "ANONYMOUS"])
        self.assertIn("DIGEST-MD5", str(error))


class InitializerTests(SynchronousTestCase):
    """
    L{SASLInitializer} on a stream stub: the server side is C{scramp}.
    """

    def setUp(self) -> None:
        authenticator = XMPPAuthenticator(JID("alice@example.test/sipxmpp"), PASSWORD)
        self.xs = xmlstream.XmlStream(authenticator)
        self.sent: list[domish.Element] = []
        self.xs.send = self.sent.append
        self.xs.transport = StringTransport()
        replaceSASLInitializer(self.xs)
        [self.init] = [i for i in self.xs.initializers if isinstance(i, SASLInitializer)]
        self.xs.features = {}

    def offer(self, *mechanisms: str) -> None:
        features = domish.Element((NS_SASL, "mechanisms"))
        for m in mechanisms:
            features.addElement("mechanism", content=m)
        self.xs.features = {(NS_SASL, "mechanisms"): features}

    def serverSays(self, name: str, data: bytes | None = None, child: str | None = None) -> None:
        element = domish.Element((NS_SASL, name))
        if data is not None:
            element.addContent(base64.b64encode(data).decode())
        if child is not None:
            element.addElement(child)
        self.xs.dispatch(element)

    def lastPayload(self) -> bytes:
        return base64.b64decode(str(self.sent[-1]))

    def test_scramLogin(self) -> None:
        self.offer("PLAIN", "SCRAM-SHA-1")
        self.xs.sendHeader = lambda: None
        self.xs.reset = lambda: None
        d = self.init.start()
        self.assertEqual(self.sent[-1]["mechanism"], "SCRAM-SHA-1")
        server = scramServer("SCRAM-SHA-1")
        server.set_client_first(self.lastPayload().decode())
        self.serverSays("challenge", server.get_server_first().encode())
        server.set_client_final(self.lastPayload().decode())
        self.serverSays("success", server.get_server_final().encode())
        self.assertIs(self.successResultOf(d), xmlstream.Reset)

    def test_successWithoutSignature(self) -> None:
        """
        C{<success/>} without the server's signature is not trusted.
        """
        self.offer("SCRAM-SHA-256")
        d = self.init.start()
        server = scramServer("SCRAM-SHA-256")
        server.set_client_first(self.lastPayload().decode())
        self.serverSays("challenge", server.get_server_first().encode())
        self.serverSays("success")
        failure = self.failureResultOf(d, SASLFailure)
        self.assertIn("did not sign", str(failure.value))

    def test_refused(self) -> None:
        """
        The server's failure condition is in the error; the password never.
        """
        self.offer("SCRAM-SHA-256")
        d = self.init.start()
        self.serverSays("failure", child="not-authorized")
        failure = self.failureResultOf(d, SASLFailure)
        self.assertEqual(str(failure.value), "the server refused SCRAM-SHA-256: not-authorized")
        self.assertNotIn(PASSWORD, str(failure.value))

    def test_badChallenge(self) -> None:
        self.offer("SCRAM-SHA-256")
        d = self.init.start()
        self.serverSays("challenge", b"r=not-our-nonce,s=QSXCR+Q6sek8bf92,i=4096")
        self.failureResultOf(d, SASLFailure)

    def test_plainNotWithoutTLS(self) -> None:
        self.offer("PLAIN", "DIGEST-MD5")
        self.assertRaises(NoAcceptableMechanism, self.init.start)
        self.assertEqual(self.sent, [])

    def test_replacesTwistedInitializer(self) -> None:
        from twisted.words.protocols.jabber import sasl

        self.assertEqual(
            [type(i) for i in self.xs.initializers if isinstance(i, sasl.SASLInitiatingInitializer)],
            [SASLInitializer],
        )
        self.assertIsInstance(chooseMechanism(["PLAIN"], JID("a@b"), "x", True), sasl_mechanisms.Plain)
