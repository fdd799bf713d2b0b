"""
Tests for L{sipxmpp.xmpp.sasl}: SCRAM against a server-side C{scramp}
exchange, the choice of mechanism, and the initializer on a stream stub.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import threading
from collections.abc import Callable

import scramp  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber import sasl_mechanisms, xmlstream
from twisted.words.protocols.jabber.client import XMPPAuthenticator
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from sipxmpp.xmpp.sasl import (
    KEY_CACHE,
    NS_SASL_CB,
    KeyDerivation,
    NoAcceptableMechanism,
    SASLFailure,
    SASLInitializer,
    ScramKeyCache,
    ScramMechanism,
    advertisedBindings,
    channelBindings,
    chooseMechanism,
    replaceSASLInitializer,
    serverEndPoint,
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


class KeyDerivationTests(SynchronousTestCase):
    """
    A first login's PBKDF2 runs where C{deriveKeys} says (another thread
    in the gateway), and the answer to the challenge waits for it.
    """

    def setUp(self) -> None:
        self.runs: list[tuple[Callable[[], None], Deferred[None]]] = []

        def deriveKeys(function: Callable[[], None]) -> Deferred[None]:
            d: Deferred[None] = Deferred()
            self.runs.append((function, d))
            return d

        authenticator = XMPPAuthenticator(JID("alice@example.test/sipxmpp"), PASSWORD)
        self.xs = xmlstream.XmlStream(authenticator)
        self.sent: list[domish.Element] = []
        self.xs.send = self.sent.append
        self.xs.transport = StringTransport()
        self.xs.stream = object()  # connected
        replaceSASLInitializer(self.xs, deriveKeys=deriveKeys)
        [self.init] = [i for i in self.xs.initializers if isinstance(i, SASLInitializer)]
        features = domish.Element((NS_SASL, "mechanisms"))
        features.addElement("mechanism", content="SCRAM-SHA-256")
        self.xs.features = {(NS_SASL, "mechanisms"): features}
        mechanism = scramp.ScramMechanism("SCRAM-SHA-256")
        self.info = mechanism.make_auth_info(PASSWORD, iteration_count=4096)
        self.server = self.makeServer()
        self.addCleanup(KEY_CACHE.clear)

    def makeServer(self) -> scramp.ScramServer:
        return scramp.ScramMechanism("SCRAM-SHA-256").make_server(lambda username: self.info)

    def serverSays(self, name: str, data: str) -> None:
        element = domish.Element((NS_SASL, name))
        element.addContent(base64.b64encode(data.encode()).decode())
        self.xs.dispatch(element)

    def lastPayload(self) -> str:
        return base64.b64decode(str(self.sent[-1])).decode()

    def test_derivedElsewhereFirst(self) -> None:
        """
        Keys not cached: the client-final message is sent once the
        derivation has run and reported; the login then succeeds.
        """
        d = self.init.start()
        self.server.set_client_first(self.lastPayload())
        self.serverSays("challenge", self.server.get_server_first())
        self.assertEqual(len(self.sent), 1)
        [(function, done)] = self.runs
        function()
        self.assertEqual(len(self.sent), 1)
        done.callback(None)
        self.assertEqual(len(self.sent), 2)
        self.server.set_client_final(self.lastPayload())
        self.xs.sendHeader = lambda: None
        self.xs.reset = lambda: None
        self.serverSays("success", self.server.get_server_final())
        self.assertIs(self.successResultOf(d), xmlstream.Reset)

    def test_cachedAtOnce(self) -> None:
        """
        Keys already cached (an earlier login, same salt and count):
        answered at once, nothing derived elsewhere.
        """
        earlier = ScramMechanism("SCRAM-SHA-256", "alice", PASSWORD)
        server = self.makeServer()
        server.set_client_first(earlier.getInitialResponse().decode())
        earlier.getResponse(server.get_server_first().encode())
        self.init.start()
        self.server.set_client_first(self.lastPayload())
        self.serverSays("challenge", self.server.get_server_first())
        self.assertEqual((self.runs, len(self.sent)), ([], 2))
        self.server.set_client_final(self.lastPayload())

    def test_lostMeanwhile(self) -> None:
        """
        A connection lost while the keys were derived gets no answer.
        """
        self.init.start()
        self.server.set_client_first(self.lastPayload())
        self.serverSays("challenge", self.server.get_server_first())
        [(function, done)] = self.runs
        function()
        self.xs.stream = None
        done.callback(None)
        self.assertEqual(len(self.sent), 1)

    def test_derivationFails(self) -> None:
        d = self.init.start()
        self.server.set_client_first(self.lastPayload())
        self.serverSays("challenge", self.server.get_server_first())
        [(function, done)] = self.runs
        done.errback(MemoryError("no memory"))
        failure = self.failureResultOf(d, SASLFailure)
        self.assertEqual(str(failure.value), "SCRAM-SHA-256: deriving the keys failed: no memory")


class KeyDerivationPoolTests(SynchronousTestCase):
    def test_inItsThread(self) -> None:
        """
        L{KeyDerivation} runs functions in a thread of its own, reports
        through the reactor, and stops its pool with the reactor.
        """
        calls: list[Callable[[], object]] = []
        triggers: list[tuple[str, str, Callable[[], object]]] = []

        class Reactor:
            def callFromThread(self, f: Callable[..., object], *a: object, **kw: object) -> None:
                calls.append(lambda: f(*a, **kw))

            def addSystemEventTrigger(self, phase: str, event: str,
                                      f: Callable[[], object]) -> None:  # fmt: skip
                triggers.append((phase, event, f))

        threads: list[str] = []
        derive = KeyDerivation(Reactor())
        d = derive(lambda: threads.append(threading.current_thread().name))
        [(phase, event, stop)] = triggers
        self.assertEqual((phase, event), ("during", "shutdown"))
        stop()  # joins the pool's threads
        for call in calls:
            call()
        self.successResultOf(d)
        self.assertEqual(len(threads), 1)
        self.assertNotEqual(threads[0], threading.current_thread().name)


# -- channel binding (SCRAM-*-PLUS) ----------------------------------------


def selfSigned(signWith: hashes.HashAlgorithm) -> tuple[ec.EllipticCurvePrivateKey,
                                                        x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, signWith)
    )
    return key, certificate


def tlsPair(maxVersion: int) -> tuple[SSL.Connection, SSL.Connection, x509.Certificate]:
    """
    A client and a server OpenSSL connection with their handshake done in
    memory (no socket), and the server's certificate (ECDSA P-384 signed
    with SHA-384, so that the end-point hash is not SHA-256 by accident).
    """
    key, certificate = selfSigned(hashes.SHA384())
    serverContext = SSL.Context(SSL.TLS_METHOD)
    serverContext.use_privatekey(crypto.PKey.from_cryptography_key(key))
    serverContext.use_certificate(crypto.X509.from_cryptography(certificate))
    serverContext.set_max_proto_version(maxVersion)
    server = SSL.Connection(serverContext, None)
    server.set_accept_state()
    client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    client.set_connect_state()
    done = {id(client): False, id(server): False}
    for _ in range(10):
        for this, other in ((client, server), (server, client)):
            try:
                this.do_handshake()
                done[id(this)] = True
            except SSL.WantReadError:
                pass
            try:
                other.bio_write(this.bio_read(65536))
            except SSL.WantReadError:
                pass
        if all(done.values()):
            return client, server, certificate
    raise AssertionError("the in-memory TLS handshake did not finish")


@implementer(ISSLTransport)
class TLSTransport(StringTransport):
    """
    A stream transport over TLS whose handle is an OpenSSL connection, as
    Twisted's TLS transports give.
    """

    def __init__(self, connection: SSL.Connection) -> None:
        super().__init__()
        self.connection = connection

    def getHandle(self) -> SSL.Connection:
        return self.connection

    def getPeerCertificate(self) -> object:
        return self.connection.get_peer_certificate()


def plusServer(name: str, binding: tuple[str, bytes] | None,
               password: str = PASSWORD) -> scramp.ScramServer:
    """
    A server-side C{scramp} exchange that supports channel binding with
    C{binding} (its own view of the connection); L{None}: it cannot bind.
    """
    mechanism = scramp.ScramMechanism(name)
    info = mechanism.make_auth_info(password, iteration_count=4096)
    return mechanism.make_server(lambda username: info, channel_binding=binding)


class ChannelBindingDataTests(SynchronousTestCase):
    """
    L{channelBindings} reads from the client's OpenSSL connection what the
    server computes from its own end.
    """

    def test_tls13(self) -> None:
        client, server, certificate = tlsPair(SSL.TLS1_3_VERSION)
        bindings = channelBindings(TLSTransport(client))
        self.assertEqual(sorted(bindings), ["tls-exporter", "tls-server-end-point"])
        self.assertEqual(bindings["tls-exporter"],
                         server.export_keying_material(b"EXPORTER-Channel-Binding", 32))
        self.assertEqual(len(bindings["tls-exporter"]), 32)
        # RFC 5929 4.1: the certificate's own signature hash (SHA-384).
        der = certificate.public_bytes(Encoding.DER)
        self.assertEqual(bindings["tls-server-end-point"], hashlib.sha384(der).digest())

    def test_tls12(self) -> None:
        """
        TLS 1.2: C{tls-unique} is the first Finished message, the client's
        (the server's C{get_peer_finished}); no C{tls-exporter}.
        """
        client, server, _ = tlsPair(SSL.TLS1_2_VERSION)
        bindings = channelBindings(TLSTransport(client))
        self.assertEqual(sorted(bindings), ["tls-server-end-point", "tls-unique"])
        self.assertEqual(bindings["tls-unique"], server.get_peer_finished())

    def test_sha1SignatureHashesWithSHA256(self) -> None:
        """
        RFC 5929 4.1: a certificate signed with MD5 or SHA-1 is hashed with
        SHA-256 (cryptography no longer signs with SHA-1: a stand-in).
        """
        _, real = selfSigned(hashes.SHA256())

        class SignedWithSHA1:
            signature_hash_algorithm = hashes.SHA1()
            public_bytes = real.public_bytes

        der = real.public_bytes(Encoding.DER)
        self.assertEqual(serverEndPoint(SignedWithSHA1()),  # type: ignore[arg-type]
                         hashlib.sha256(der).digest())
        self.assertEqual(serverEndPoint(real), hashlib.sha256(der).digest())

    def test_noOpenSSLConnection(self) -> None:
        self.assertEqual(channelBindings(StringTransport()), {})
        self.assertEqual(channelBindings(None), {})

    def test_advertisedBindings(self) -> None:
        feature = domish.Element((NS_SASL_CB, "sasl-channel-binding"))
        for name in ("tls-server-end-point", "tls-exporter"):
            feature.addElement("channel-binding")["type"] = name
        self.assertEqual(advertisedBindings({(NS_SASL_CB, "sasl-channel-binding"): feature}),
                         ["tls-server-end-point", "tls-exporter"])
        self.assertIsNone(advertisedBindings({}))


class ScramPlusTests(SynchronousTestCase):
    """
    SCRAM-*-PLUS against a server-side C{scramp} exchange with channel
    binding, and the gs2 flags that let a server detect a downgrade.
    """

    def exchange(self, client: ScramMechanism, server: scramp.ScramServer) -> ScramMechanism:
        server.set_client_first(client.getInitialResponse().decode())
        final = client.getResponse(server.get_server_first().encode())
        server.set_client_final(final.decode())
        client.verifyServerFinal(server.get_server_final().encode())
        return client

    def test_plusLogin(self) -> None:
        for kind in ("tls-unique", "tls-server-end-point"):
            for name in ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"):
                data = kind.encode() * 2
                client = ScramMechanism(name, "alice", PASSWORD, channelBinding=(kind, data))
                self.assertTrue(client.getInitialResponse().startswith(f"p={kind},,n=".encode()))
                self.assertTrue(self.exchange(client, plusServer(name, (kind, data))).verified)
                self.assertEqual(client.channelBinding, kind)

    def test_tlsExporter(self) -> None:
        """
        C{tls-exporter} (RFC 9266) is computed like the other types; this
        C{scramp} refuses the name only, so its server is told it is known.
        """
        self.patch(scramp.core.CbName, "SUPPORTED_TYPES",
                   scramp.core.CbName.SUPPORTED_TYPES | {"tls-exporter"})
        self.patch(scramp.core.CbName, "UNSUPPORTED_TYPES", frozenset())
        data = b"e" * 32
        client = ScramMechanism("SCRAM-SHA-256-PLUS", "alice", PASSWORD,
                                channelBinding=("tls-exporter", data))
        server = plusServer("SCRAM-SHA-256-PLUS", ("tls-exporter", data))
        self.assertTrue(self.exchange(client, server).verified)

    def test_otherConnectionRefused(self) -> None:
        """
        A proof bound to another TLS connection (a relay by a man in the
        middle) is refused.
        """
        client = ScramMechanism("SCRAM-SHA-256-PLUS", "alice", PASSWORD,
                                channelBinding=("tls-unique", b"client side"))
        server = plusServer("SCRAM-SHA-256-PLUS", ("tls-unique", b"relay side"))
        self.assertRaises(scramp.ScramException, self.exchange, client, server)

    def test_downgradeDetected(self) -> None:
        """
        A client that could bind says so ("y") when taking plain SCRAM; a
        server that supports binding (its -PLUS offer was stripped on the
        way) refuses it. One that cannot bind accepts it.
        """
        client = ScramMechanism("SCRAM-SHA-256", "alice", PASSWORD, bindingSupported=True)
        self.assertTrue(client.getInitialResponse().startswith(b"y,,n="))
        server = plusServer("SCRAM-SHA-256", ("tls-unique", b"x" * 12))
        self.assertRaises(scramp.ScramException, server.set_client_first,
                          client.getInitialResponse().decode())
        client = ScramMechanism("SCRAM-SHA-256", "alice", PASSWORD, bindingSupported=True)
        self.assertTrue(self.exchange(client, plusServer("SCRAM-SHA-256", None)).verified)

    def test_plusNeedsBinding(self) -> None:
        self.assertRaises(ValueError, ScramMechanism, "SCRAM-SHA-256-PLUS", "alice", PASSWORD)
        self.assertRaises(ValueError, ScramMechanism, "SCRAM-SHA-256", "alice", PASSWORD,
                          channelBinding=("tls-unique", b"x"))

    def test_keyCacheWithPlus(self) -> None:
        """
        The key cache serves -PLUS logins too: one PBKDF2 for the password,
        whether or not the login binds.
        """
        cache = ScramKeyCache(10)
        info = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
            PASSWORD, iteration_count=4096, salt=b"s" * 16)
        binding = ("tls-server-end-point", b"h" * 48)
        for name, cb in (("SCRAM-SHA-256-PLUS", binding), ("SCRAM-SHA-256", None),
                         ("SCRAM-SHA-256-PLUS", binding)):
            client = ScramMechanism(name, "alice", PASSWORD, cache=cache, channelBinding=cb)
            server = scramp.ScramMechanism(name).make_server(lambda username: info,
                                                             channel_binding=cb)
            self.assertTrue(self.exchange(client, server).verified)
        self.assertEqual((cache.misses, cache.hits), (1, 2))


class ChooseChannelBindingTests(SynchronousTestCase):
    jid = JID("alice@example.test/sipxmpp")
    tls13 = {"tls-exporter": b"e" * 32, "tls-server-end-point": b"h" * 32}
    tls12 = {"tls-unique": b"u" * 12, "tls-server-end-point": b"h" * 32}

    def choose(self, offered: list[str], bindings: dict[str, bytes],
               serverBindings: list[str] | None = None) -> ScramMechanism:
        mechanism = chooseMechanism(offered, self.jid, PASSWORD, True, bindings, serverBindings)
        assert isinstance(mechanism, ScramMechanism)
        return mechanism

    def first(self, mechanism: ScramMechanism) -> str:
        return mechanism.getInitialResponse().decode().split("n=", 1)[0]

    def test_strongestCommonType(self) -> None:
        offered = ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"]
        m = self.choose(offered, self.tls13, ["tls-unique", "tls-server-end-point", "tls-exporter"])
        self.assertEqual((m.name, self.first(m)), ("SCRAM-SHA-256-PLUS", "p=tls-exporter,,"))
        m = self.choose(offered, self.tls13, ["tls-server-end-point"])
        self.assertEqual(self.first(m), "p=tls-server-end-point,,")

    def test_plusPreferred(self) -> None:
        """
        A -PLUS mechanism is taken before any plain one.
        """
        m = self.choose(["SCRAM-SHA-256", "SCRAM-SHA-1-PLUS"], self.tls12)
        self.assertEqual((m.name, self.first(m)), ("SCRAM-SHA-1-PLUS", "p=tls-unique,,"))

    def test_noAnnouncementMeansTLSUnique(self) -> None:
        """
        Without XEP-0440 the server is taken to bind to C{tls-unique} only
        (RFC 5802's default), which TLS 1.3 does not define: there, plain
        SCRAM with "n" (the server offers -PLUS; nothing was stripped).
        """
        offered = ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]
        self.assertEqual(self.first(self.choose(offered, self.tls12)), "p=tls-unique,,")
        m = self.choose(offered, self.tls13)
        self.assertEqual((m.name, self.first(m)), ("SCRAM-SHA-256", "n,,"))

    def test_noPlusOffered(self) -> None:
        """
        Binding data but no -PLUS offered: "y", so that a server whose
        offer was stripped sees it; without binding data, "n".
        """
        self.assertEqual(self.first(self.choose(["SCRAM-SHA-1"], self.tls13)), "y,,")
        self.assertEqual(self.first(self.choose(["SCRAM-SHA-1"], {})), "n,,")

    def test_off(self) -> None:
        """
        C{channel_binding = off} gives no binding data: plain SCRAM, "n".
        """
        m = self.choose(["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], {})
        self.assertEqual((m.name, self.first(m)), ("SCRAM-SHA-256", "n,,"))

    def test_onlyPlusOfferedWithoutBinding(self) -> None:
        self.assertRaises(NoAcceptableMechanism, chooseMechanism,
                          ["SCRAM-SHA-256-PLUS"], self.jid, PASSWORD, True, {}, None)


class PlusInitializerTests(SynchronousTestCase):
    """
    L{SASLInitializer} over an in-memory TLS connection: it reads the
    server's XEP-0440 announcement and the connection's binding data, logs
    in with -PLUS against C{scramp}, and logs which mechanism it used.
    """

    def setUp(self) -> None:
        self.client, self.server, _ = tlsPair(SSL.TLS1_2_VERSION)
        authenticator = XMPPAuthenticator(JID("alice@example.test/sipxmpp"), PASSWORD)
        self.xs = xmlstream.XmlStream(authenticator)
        self.sent: list[domish.Element] = []
        self.xs.send = self.sent.append
        self.xs.transport = TLSTransport(self.client)
        self.xs.sendHeader = lambda: None
        self.xs.reset = lambda: None
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def login(self, channelBinding: str, announce: list[str]) -> str:
        replaceSASLInitializer(self.xs, channelBinding)
        [init] = [i for i in self.xs.initializers if isinstance(i, SASLInitializer)]
        mechanisms = domish.Element((NS_SASL, "mechanisms"))
        for m in ("SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"):
            mechanisms.addElement("mechanism", content=m)
        cb = domish.Element((NS_SASL_CB, "sasl-channel-binding"))
        for name in announce:
            cb.addElement("channel-binding")["type"] = name
        self.xs.features = {(NS_SASL, "mechanisms"): mechanisms,
                            (NS_SASL_CB, "sasl-channel-binding"): cb}
        d = init.start()
        name = self.sent[-1]["mechanism"]
        binding = None
        if name.endswith("-PLUS"):
            binding = ("tls-unique", self.server.get_peer_finished())
        server = plusServer(name, binding)
        server.set_client_first(base64.b64decode(str(self.sent[-1])).decode())
        element = domish.Element((NS_SASL, "challenge"))
        element.addContent(base64.b64encode(server.get_server_first().encode()).decode())
        self.xs.dispatch(element)
        server.set_client_final(base64.b64decode(str(self.sent[-1])).decode())
        element = domish.Element((NS_SASL, "success"))
        element.addContent(base64.b64encode(server.get_server_final().encode()).decode())
        self.xs.dispatch(element)
        self.assertIs(self.successResultOf(d), xmlstream.Reset)
        return str(name)

    def loggedLines(self) -> list[str]:
        return [formatEvent(e) for e in self.events if "authenticated with" in formatEvent(e)]

    def test_plusWithTLSUnique(self) -> None:
        self.assertEqual(self.login("auto", ["tls-unique"]), "SCRAM-SHA-256-PLUS")
        [line] = self.loggedLines()
        self.assertEqual(line, "XMPP login as alice@example.test/sipxmpp: authenticated with "
                               "SCRAM-SHA-256-PLUS (channel binding tls-unique)")
        self.assertNotIn(PASSWORD, line)

    def test_off(self) -> None:
        self.assertEqual(self.login("off", ["tls-unique"]), "SCRAM-SHA-256")
        self.assertEqual(self.loggedLines(), ["XMPP login as alice@example.test/sipxmpp: "
                                              "authenticated with SCRAM-SHA-256"])

    def test_badMode(self) -> None:
        self.assertRaises(ValueError, SASLInitializer, self.xs, True, "sometimes")
