"""
SASL for the gateway's XMPP sessions: SCRAM-SHA-256 and SCRAM-SHA-1 (via
C{scramp}), PLAIN only over TLS, never DIGEST-MD5.

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
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from base64 import b64decode, b64encode
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import scramp  # type: ignore[import-untyped]
from twisted.internet.interfaces import ISSLTransport
from twisted.words.protocols.jabber import sasl, sasl_mechanisms, xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

# Strongest first. The -PLUS variants need channel binding, which the
# OpenSSL-backed TLS transport does not expose to us; plain SCRAM is still
# safe over a verified TLS connection.
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")


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

    def keys(self, hashName: str, password: bytes, salt: bytes,
             iterations: int) -> tuple[bytes, bytes]:
        """
        Return C{(ClientKey, ServerKey)} for C{password} (already
        SASLprepped and UTF-8 encoded), deriving them on a miss.
        """
        tag = hmac.new(self._secret, password, "sha256").digest()
        key = (hashName, tag, salt, iterations)
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


@implementer(sasl_mechanisms.ISASLMechanism)
class ScramMechanism:
    """
    The client side of SCRAM (RFC 5802, RFC 7677) without channel binding.

    @ivar verified: whether the server proved it knows the credentials
        (its signature in the server-final message was checked).
    """

    def __init__(self, name: str, username: str, password: str,
                 cache: ScramKeyCache | None = None) -> None:
        if name not in SCRAM_MECHANISMS:
            raise ValueError(f"unsupported SCRAM mechanism {name!r}")
        self.name = name
        self.verified = False
        self._client = scramp.ScramClient([name], username, password)
        self._cache = KEY_CACHE if cache is None else cache
        self._serverSignature = b""
        self._stage = 0

    def getInitialResponse(self) -> bytes:
        first: str = self._client.get_client_first()
        return first.encode("utf-8")

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
                self._stage = 1
                self._client.set_server_first(text)
                return self._clientFinal().encode("utf-8")
            self.verifyServerFinal(challenge)
            return b""
        except scramp.ScramException as e:
            raise SASLFailure(f"{self.name}: {e}") from None

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
        hashName = _HASHES[self.name]
        clientKey, serverKey = self._cache.keys(
            hashName, bytes(client.password), bytes(client.salt), int(client.iterations)
        )
        storedKey = hashlib.new(hashName, clientKey).digest()
        cbind = b64encode(client.gs2_header.make_cbind_input(client.cb)).decode("ascii")
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
    offered: Sequence[str], jid: JID, password: str, overTLS: bool
) -> sasl_mechanisms.ISASLMechanism:
    """
    Pick the mechanism to log in with from those the server offers.

    @param overTLS: whether the stream is encrypted; PLAIN sends the
        password itself and is refused without TLS.
    @raise NoAcceptableMechanism: when nothing acceptable is offered.
    """
    if jid.user is None:
        raise NoAcceptableMechanism("the JID has no user part")
    for name in SCRAM_MECHANISMS:
        if name in offered:
            return ScramMechanism(name, jid.user, password)
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

    def setMechanism(self) -> None:
        authenticator = self.xmlstream.authenticator
        self.mechanism = chooseMechanism(
            sasl.get_mechanisms(self.xmlstream),
            authenticator.jid,
            authenticator.password,
            ISSLTransport.providedBy(self.xmlstream.transport),
        )

    def onChallenge(self, element: domish.Element) -> None:
        # The base class lets an exception from the mechanism escape into
        # the stream's observer dispatch, where it is logged and the login
        # then hangs forever; fail the initializer instead.
        try:
            challenge = sasl.fromBase64(str(element))
            response = self.mechanism.getResponse(challenge)
        except sasl.SASLIncorrectEncodingError:
            self._fail(SASLFailure("the server's challenge is not valid base64"))
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


def replaceSASLInitializer(xs: xmlstream.XmlStream) -> None:
    """
    Swap twisted.words' SASL initializer in C{xs.initializers} for ours,
    keeping its place and requiredness.
    """
    initializers: list[Any] = xs.initializers
    for index, initializer in enumerate(initializers):
        if isinstance(initializer, sasl.SASLInitiatingInitializer):
            initializers[index] = SASLInitializer(xs, required=True)
            return
    raise RuntimeError("the stream has no SASL initializer to replace")
