"""
SASL for the gateway's XMPP sessions: SCRAM-SHA-256 and SCRAM-SHA-1 (via
C{scramp}), with channel binding (SCRAM-*-PLUS) where the server offers
it, PLAIN only over TLS, never DIGEST-MD5.

twisted.words' L{SASLInitiatingInitializer} only knows PLAIN, DIGEST-MD5 and
ANONYMOUS and prefers DIGEST-MD5 (deprecated by RFC 6331). L{SASLInitializer}
keeps its element handling and replaces the choice of mechanism; the
mechanisms themselves are plain L{ISASLMechanism} providers, so they can be
tested against a server-side C{scramp} exchange without any stream.

The client proof needs C{SaltedPassword = PBKDF2(password, salt, i)}, by
far the costliest step of a login (Prosody uses 10,000 iterations). RFC
5802 (section 5.1) lets a client keep it for the same password, salt and
iteration count; L{ScramKeyCache} keeps the derived C{ClientKey} and
C{ServerKey}, in memory only, so a re-login or a reconnect skips PBKDF2.
A first login derives them in a thread of its own (L{KeyDerivation}):
C{hashlib} releases the GIL for PBKDF2, so another core does it while the
reactor serves the other sessions.

Channel binding (RFC 5802 section 6) ties the SCRAM proof to this TLS
connection, so that a man in the middle holding a certificate we trust
cannot relay the login. L{channelBindings} reads what the OpenSSL
connection can give (C{tls-exporter}, RFC 9266, on TLS 1.3;
C{tls-server-end-point}, RFC 5929; C{tls-unique}, RFC 5929, on TLS 1.2 and
below only); L{chooseMechanism} takes the strongest type the server also
supports (announced by XEP-0440, or C{tls-unique} by RFC 5802's default)
and says in the gs2 header whether we could have bound, so that a server
whose -PLUS offer was stripped on the way sees the downgrade.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from base64 import b64decode, b64encode
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import scramp  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.words.protocols.jabber import sasl, sasl_mechanisms, xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from sipxmpp.xmpp.tls import tlsConnection

# Strongest first. A -PLUS variant (channel binding) is preferred to any
# plain one when both sides can bind; plain SCRAM is still safe over a
# verified TLS connection.
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
SCRAM_PLUS_MECHANISMS = tuple(f"{name}-PLUS" for name in SCRAM_MECHANISMS)

#: Channel-binding types we can compute, strongest first.
CHANNEL_BINDINGS = ("tls-exporter", "tls-server-end-point", "tls-unique")

#: XEP-0440: the server's channel-binding types, a stream feature.
NS_SASL_CB = "urn:xmpp:sasl-cb:0"

#: Values of C{[xmpp] channel_binding}.
CHANNEL_BINDING_MODES = ("auto", "off")

log = Logger()


class SASLFailure(sasl.SASLError):
    """
    Authentication did not succeed; C{str()} says why, never with a secret.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class NoAcceptableMechanism(SASLFailure):
    """
    The server offers nothing we are willing to use.
    """


#: Entries the default key cache holds (about 300 bytes each).
KEY_CACHE_SIZE = 50_000

_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}


def channelBindings(transport: object) -> dict[str, bytes]:
    """
    Return the channel-binding data this TLS transport can give, by type
    (see L{CHANNEL_BINDINGS}); empty if it is not an OpenSSL connection
    whose handshake is done (a BOSH transport, a test stub).
    """
    connection = tlsConnection(transport)
    if connection is None:
        return {}
    bindings: dict[str, bytes] = {}
    try:
        version = connection.get_protocol_version_name()
        if version == "TLSv1.3":
            # RFC 9266 section 2: 32 bytes, no context.
            bindings["tls-exporter"] = connection.export_keying_material(
                b"EXPORTER-Channel-Binding", 32)
        elif version in ("TLSv1.2", "TLSv1.1", "TLSv1"):
            # The first Finished message of the handshake (RFC 5929 3.1):
            # ours, as the gateway resumes TLS 1.3 sessions only (in a
            # resumed one the server's would come first). Undefined for
            # TLS 1.3.
            finished = connection.get_finished()
            if finished:
                bindings["tls-unique"] = finished
        certificate = connection.get_peer_certificate(as_cryptography=True)
    except SSL.Error:
        return {}
    if certificate is not None:
        endPoint = serverEndPoint(certificate)
        if endPoint is not None:
            bindings["tls-server-end-point"] = endPoint
    return bindings


def serverEndPoint(certificate: x509.Certificate) -> bytes | None:
    """
    Return the C{tls-server-end-point} data of the server's certificate
    (RFC 5929 4.1): its DER hashed with its signature's hash, SHA-256 for
    MD5 or SHA-1; L{None} if the signature has no single hash (Ed25519).
    """
    try:
        algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    if algorithm is None:
        return None
    if isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate.public_bytes(Encoding.DER))
    return digest.finalize()


def advertisedBindings(features: dict[tuple[str, str], domish.Element]) -> list[str] | None:
    """
    Return the channel-binding types the server announces (XEP-0440), or
    L{None} if it does not announce any.
    """
    element = features.get((NS_SASL_CB, "sasl-channel-binding"))
    if element is None:
        return None
    return [str(child.getAttribute("type", "")) for child in element.elements(
        NS_SASL_CB, "channel-binding")]


class ScramKeyCache:
    """
    A bounded LRU cache of SCRAM C{(ClientKey, ServerKey)} by hash,
    password, salt and iteration count.

    The password is not kept: the key holds an HMAC of it under a random
    per-cache key, so a changed password (or salt, or count) misses. The
    keys derived are password equivalents for that server: they live only
    in this process's memory and are never logged (C{repr} shows the size).
    """

    def __init__(self, maxSize: int = KEY_CACHE_SIZE) -> None:
        if maxSize < 0:
            raise ValueError("the cache size must not be negative")
        self.maxSize = maxSize
        self.hits = 0
        self.misses = 0
        self._secret = os.urandom(32)
        self._entries: OrderedDict[tuple[str, bytes, bytes, int], tuple[bytes, bytes]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ScramKeyCache {len(self._entries)}/{self.maxSize}>"

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _key(self, hashName: str, password: bytes, salt: bytes,
             iterations: int) -> tuple[str, bytes, bytes, int]:
        tag = hmac.new(self._secret, password, "sha256").digest()
        return (hashName, tag, salt, iterations)

    def cached(self, hashName: str, password: bytes, salt: bytes,
               iterations: int) -> bool:
        """
        Whether L{keys} would answer without deriving (not counted).
        """
        key = self._key(hashName, password, salt, iterations)
        with self._lock:
            return key in self._entries

    def keys(self, hashName: str, password: bytes, salt: bytes,
             iterations: int) -> tuple[bytes, bytes]:
        """
        Return C{(ClientKey, ServerKey)} for C{password} (already
        SASLprepped and UTF-8 encoded), deriving them on a miss.
        """
        key = self._key(hashName, password, salt, iterations)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        salted = hashlib.pbkdf2_hmac(hashName, password, salt, iterations)
        derived = (
            hmac.new(salted, b"Client Key", hashName).digest(),
            hmac.new(salted, b"Server Key", hashName).digest(),
        )
        if self.maxSize:
            with self._lock:
                self._entries[key] = derived
                self._entries.move_to_end(key)
                while len(self._entries) > self.maxSize:
                    self._entries.popitem(last=False)
        return derived


#: The cache the gateway's sessions share.
KEY_CACHE = ScramKeyCache()

#: Runs a function somewhere (another thread) and reports when it is done.
Runner = Callable[[Callable[[], None]], "Deferred[None]"]


class KeyDerivation:
    """
    A L{Runner} for first logins' PBKDF2: a thread pool of its own, started
    at the first use and stopped with the reactor. Not the reactor's pool,
    where DNS look-ups would wait behind a storm's derivations.
    """

    def __init__(self, reactor: Any, threads: int = 1) -> None:
        """
        @param reactor: provides C{IReactorFromThreads} and C{IReactorCore}.
        """
        self.reactor = reactor
        self.threads = threads
        self._pool: ThreadPool | None = None

    def __call__(self, function: Callable[[], None]) -> Deferred[None]:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self.threads, name="sipxmpp-scram")
            self._pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        result: Deferred[None] = deferToThreadPool(self.reactor, self._pool, function)
        return result


@implementer(sasl_mechanisms.ISASLMechanism)
class ScramMechanism:
    """
    The client side of SCRAM (RFC 5802, RFC 7677), with channel binding for
    the -PLUS variants.

    C{scramp} makes the nonce, prepares the user name and password and
    parses the server's messages; the gs2 header and the channel-binding
    input are ours, as C{scramp} knows no C{tls-exporter}.

    @ivar verified: whether the server proved it knows the credentials
        (its signature in the server-final message was checked).
    @ivar channelBinding: the channel-binding type used, or L{None}.
    """

    def __init__(self, name: str, username: str, password: str,
                 cache: ScramKeyCache | None = None,
                 channelBinding: tuple[str, bytes] | None = None,
                 bindingSupported: bool = False) -> None:
        """
        @param name: a SCRAM mechanism, -PLUS or not.
        @param channelBinding: the type and data to bind to; required by a
            -PLUS mechanism, refused by the others.
        @param bindingSupported: for a mechanism without -PLUS, whether we
            could have bound (the gs2 flag C{y}: "the server seems not to
            support it") rather than not (C{n}).
        """
        base = name.removesuffix("-PLUS")
        if base not in SCRAM_MECHANISMS:
            raise ValueError(f"unsupported SCRAM mechanism {name!r}")
        if (channelBinding is not None) != (base != name):
            raise ValueError(f"{name} {'needs' if base != name else 'takes no'} channel binding")
        self.name = name
        self.verified = False
        self.channelBinding = channelBinding[0] if channelBinding is not None else None
        if channelBinding is not None:
            self._gs2Header = f"p={channelBinding[0]},,"
            self._cbindInput = self._gs2Header.encode("ascii") + channelBinding[1]
        else:
            self._gs2Header = "y,," if bindingSupported else "n,,"
            self._cbindInput = self._gs2Header.encode("ascii")
        self._hashName = _HASHES[base]
        self._client = scramp.ScramClient([base], username, password)
        self._cache = KEY_CACHE if cache is None else cache
        # The keys derived for this exchange by derivation()'s function.
        self._derived: tuple[bytes, bytes] | None = None
        self._serverFirstRead = False
        self._first: bytes | None = None
        self._serverSignature = b""
        self._stage = 0

    def getInitialResponse(self) -> bytes:
        if self._first is None:
            self._client.get_client_first()
            bare: str = self._client.client_first_bare
            self._first = (self._gs2Header + bare).encode("utf-8")
        return self._first

    def getResponse(self, challenge: bytes) -> bytes:
        """
        Answer the server-first message with our proof; a server that sends
        its server-final message as a challenge (instead of in C{<success/>})
        gets an empty response once its signature checks out.

        @raise SASLFailure: if the server's messages are malformed or its
            signature is wrong.
        """
        text = self._decode(challenge)
        try:
            if self._stage == 0:
                self._readServerFirst(text)
                self._stage = 1
                return self._clientFinal().encode("utf-8")
            self.verifyServerFinal(challenge)
            return b""
        except scramp.ScramException as e:
            raise SASLFailure(f"{self.name}: {e}") from None

    def derivation(self, challenge: bytes) -> Callable[[], None] | None:
        """
        Before L{getResponse} answers the server-first message C{challenge}:
        a function that derives the keys the answer needs (PBKDF2), for
        another thread to run first; L{None} if they are cached or
        C{challenge} is not the server-first message.

        @raise SASLFailure: if the server-first message is malformed.
        """
        if self._stage != 0:
            return None
        try:
            self._readServerFirst(self._decode(challenge))
        except scramp.ScramException as e:
            raise SASLFailure(f"{self.name}: {e}") from None
        arguments = self._keyArguments()
        if self._cache.cached(*arguments):
            return None

        def derive() -> None:
            self._derived = self._cache.keys(*arguments)

        return derive

    def _readServerFirst(self, text: str) -> None:
        if not self._serverFirstRead:
            self._client.set_server_first(text)
            self._serverFirstRead = True

    def _keyArguments(self) -> tuple[str, bytes, bytes, int]:
        client = self._client
        return (self._hashName, bytes(client.password), bytes(client.salt),
                int(client.iterations))  # fmt: skip

    def verifyServerFinal(self, data: bytes) -> None:
        """
        Check the server's signature (C{v=...}) in C{data}.

        @raise SASLFailure: if it is missing or wrong.
        """
        if self.verified:
            return
        if self._stage != 1:
            raise SASLFailure(f"{self.name}: server-final message before server-first")
        attributes = dict(
            part.split("=", 1) for part in self._decode(data).split(",") if "=" in part
        )
        if "e" in attributes:
            raise SASLFailure(f"{self.name}: the server returned an error: {attributes['e']}")
        try:
            signature = b64decode(attributes.get("v", ""), validate=True)
        except ValueError:
            raise SASLFailure(f"{self.name}: the server signature is not base64") from None
        if not signature or not hmac.compare_digest(signature, self._serverSignature):
            raise SASLFailure(f"{self.name}: the server signature doesn't match")
        self.verified = True

    def _clientFinal(self) -> str:
        # RFC 5802 section 3, as scramp computes it, with the keys from
        # the cache instead of a PBKDF2 per login.
        client = self._client
        hashName = self._hashName
        clientKey, serverKey = self._derived or self._cache.keys(*self._keyArguments())
        storedKey = hashlib.new(hashName, clientKey).digest()
        cbind = b64encode(self._cbindInput).decode("ascii")
        withoutProof = f"c={cbind},r={client.nonce}"
        authMessage = f"{client.client_first_bare},{client.server_first},{withoutProof}"
        message = authMessage.encode("utf-8")
        signature = hmac.new(storedKey, message, hashName).digest()
        proof = bytes(a ^ b for a, b in zip(clientKey, signature, strict=True))
        self._serverSignature = hmac.new(serverKey, message, hashName).digest()
        return f"{withoutProof},p={b64encode(proof).decode('ascii')}"

    def _decode(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise SASLFailure(f"{self.name}: the server sent non-UTF-8 data") from None


def chooseMechanism(
    offered: Sequence[str], jid: JID, password: str, overTLS: bool,
    bindings: Mapping[str, bytes] | None = None,
    serverBindings: Sequence[str] | None = None,
) -> sasl_mechanisms.ISASLMechanism:
    """
    Pick the mechanism to log in with from those the server offers.

    @param overTLS: whether the stream is encrypted; PLAIN sends the
        password itself and is refused without TLS.
    @param bindings: the channel-binding data of this connection by type
        (L{channelBindings}); none: we do not bind.
    @param serverBindings: the types the server announces (XEP-0440), or
        L{None} if it announces none: then it is assumed to support
        C{tls-unique} only, RFC 5802's default.
    @raise NoAcceptableMechanism: when nothing acceptable is offered.
    """
    if jid.user is None:
        raise NoAcceptableMechanism("the JID has no user part")
    bindings = bindings or {}
    accepted = ["tls-unique"] if serverBindings is None else list(serverBindings)
    common = [name for name in CHANNEL_BINDINGS if name in bindings and name in accepted]
    if common:
        for name in SCRAM_PLUS_MECHANISMS:
            if name in offered:
                return ScramMechanism(name, jid.user, password,
                                      channelBinding=(common[0], bindings[common[0]]))
    # We could bind but take a plain SCRAM: "y" when the server offers no
    # -PLUS at all (so that one whose offer was stripped refuses us); "n"
    # when it does but we share no channel-binding type.
    supported = bool(bindings) and not any(name in offered for name in SCRAM_PLUS_MECHANISMS)
    for name in SCRAM_MECHANISMS:
        if name in offered:
            return ScramMechanism(name, jid.user, password, bindingSupported=supported)
    if "PLAIN" in offered and overTLS:
        return sasl_mechanisms.Plain(None, jid.user, password)
    acceptable = [*SCRAM_MECHANISMS, "PLAIN (over TLS)"]
    raise NoAcceptableMechanism(
        f"the server offers {', '.join(offered) or 'no mechanism'}; "
        f"we accept {', '.join(acceptable)}"
    )


class SASLInitializer(sasl.SASLInitiatingInitializer):
    """
    twisted.words' SASL initializer with our choice of mechanism, errors
    that say what failed, and verification of the SCRAM server signature.
    """

    mechanism: sasl_mechanisms.ISASLMechanism  # type: ignore[assignment]

    def __init__(self, xs: xmlstream.XmlStream, required: bool = False,
                 channelBinding: str = "auto", deriveKeys: Runner | None = None) -> None:
        """
        @param channelBinding: C{"auto"}: bind to the TLS connection where
            the server offers -PLUS; C{"off"}: never (see
            L{CHANNEL_BINDING_MODES}).
        @param deriveKeys: where SCRAM keys not cached are derived
            (L{KeyDerivation}); none: in this thread.
        """
        super().__init__(xs, required)
        if channelBinding not in CHANNEL_BINDING_MODES:
            raise ValueError(f"channel_binding must be one of {', '.join(CHANNEL_BINDING_MODES)}")
        self.channelBinding = channelBinding
        self.deriveKeys = deriveKeys

    def setMechanism(self) -> None:
        xs = self.xmlstream
        authenticator = xs.authenticator
        overTLS = ISSLTransport.providedBy(xs.transport)
        bindings = (channelBindings(xs.transport)
                    if overTLS and self.channelBinding == "auto" else {})
        self.mechanism = chooseMechanism(
            sasl.get_mechanisms(xs),
            authenticator.jid,
            authenticator.password,
            overTLS,
            bindings,
            advertisedBindings(xs.features),
        )

    def onChallenge(self, element: domish.Element) -> None:
        # The base class lets an exception from the mechanism escape into
        # the stream's observer dispatch, where it is logged and the login
        # then hangs forever; fail the initializer instead.
        try:
            challenge = sasl.fromBase64(str(element))
            mechanism = self.mechanism
            derive = (mechanism.derivation(challenge)
                      if self.deriveKeys is not None and isinstance(mechanism, ScramMechanism)
                      else None)  # fmt: skip
        except sasl.SASLIncorrectEncodingError:
            self._fail(SASLFailure("the server's challenge is not valid base64"))
            return
        except SASLFailure as e:
            self._fail(e)
            return
        if derive is None or self.deriveKeys is None:
            self._respond(challenge)
            return

        def failed(reason: Failure) -> None:
            self._fail(SASLFailure(f"{mechanism.name}: deriving the keys failed: "
                                   f"{reason.getErrorMessage()}"))  # fmt: skip

        def derived(_: None) -> None:
            # Unless the connection was lost meanwhile (xish's stream is
            # then gone).
            if self.xmlstream.stream is not None:
                self._respond(challenge)

        self.deriveKeys(derive).addCallbacks(derived, failed)

    def _respond(self, challenge: bytes) -> None:
        try:
            response = self.mechanism.getResponse(challenge)
        except SASLFailure as e:
            self._fail(e)
        else:
            self.sendResponse(response)

    def onSuccess(self, success: domish.Element) -> None:
        if isinstance(self.mechanism, ScramMechanism) and not self.mechanism.verified:
            # The server-final message travels as additional data of
            # <success/> (RFC 6120 6.3.10). Without it the server never
            # proved it knows our credentials: do not trust it.
            try:
                data = sasl.fromBase64(str(success)) if str(success).strip() else b""
                if not data:
                    raise SASLFailure(f"{self.mechanism.name}: the server did not sign")
                self.mechanism.verifyServerFinal(data)
            except sasl.SASLIncorrectEncodingError:
                self._fail(SASLFailure("the server's success data is not valid base64"))
                return
            except SASLFailure as e:
                self._fail(e)
                return
        binding = getattr(self.mechanism, "channelBinding", None)
        # Which mechanism, for operators checking what their server allows;
        # never anything secret.
        log.info("XMPP login as {jid}: authenticated with {mechanism}{binding}",
                 jid=self.xmlstream.authenticator.jid.full(),
                 mechanism=self.mechanism.name,
                 binding=f" (channel binding {binding})" if binding else "")
        super().onSuccess(success)

    def onFailure(self, failure: domish.Element) -> None:
        self.xmlstream.removeObserver("/challenge", self.onChallenge)
        self.xmlstream.removeObserver("/success", self.onSuccess)
        condition = None
        text = None
        for child in failure.elements():
            if child.name == "text":
                text = str(child)
            elif condition is None:
                condition = child.name
        reason = f"the server refused {self.mechanism.name}: {condition or 'no reason given'}"
        if text:
            reason += f" ({text})"
        if self._deferred is not None:
            self._deferred.errback(SASLFailure(reason))

    def _fail(self, error: SASLFailure) -> None:
        self.xmlstream.removeObserver("/challenge", self.onChallenge)
        self.xmlstream.removeObserver("/success", self.onSuccess)
        self.xmlstream.removeObserver("/failure", self.onFailure)
        deferred = self._deferred
        if deferred is not None and not deferred.called:
            deferred.errback(error)


def replaceSASLInitializer(xs: xmlstream.XmlStream, channelBinding: str = "auto",
                           deriveKeys: Runner | None = None) -> None:
    """
    Swap twisted.words' SASL initializer in C{xs.initializers} for ours,
    keeping its place and requiredness.

    @param channelBinding: C{[xmpp] channel_binding} (L{SASLInitializer}).
    @param deriveKeys: where SCRAM keys are derived (L{SASLInitializer}).
    """
    initializers: list[Any] = xs.initializers
    for index, initializer in enumerate(initializers):
        if isinstance(initializer, sasl.SASLInitiatingInitializer):
            initializers[index] = SASLInitializer(xs, required=True, channelBinding=channelBinding,
                                                  deriveKeys=deriveKeys)  # fmt: skip
            return
    raise RuntimeError("the stream has no SASL initializer to replace")
