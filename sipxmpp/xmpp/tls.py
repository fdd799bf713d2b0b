"""
TLS for XMPP sessions: who we trust and how we say that a certificate was
refused.
"""

from __future__ import annotations

from OpenSSL import SSL
from OpenSSL._util import lib as _openssl
from service_identity import VerificationError
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

#: The ALPN protocol of client-to-server XMPP (XEP-0368).
ALPN_XMPP_CLIENT = b"xmpp-client"


def loadTrustRoot(caFile: str) -> IOpenSSLTrustRoot:
    """
    Return the trust root: every certificate of the PEM bundle C{caFile},
    or the system's trust store when C{caFile} is empty.

    @raise ValueError: if C{caFile} holds no certificate.
    @raise OSError: if it cannot be read.
    """
    if not caFile:
        system: IOpenSSLTrustRoot = ssl.platformTrust()
        return system
    with open(caFile, "rb") as f:
        data = f.read()
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + part for part in data.split(marker)[1:]]
    if not blocks:
        raise ValueError(f"{caFile} holds no PEM certificate")
    root: IOpenSSLTrustRoot = ssl.trustRootFromCertificates(
        [ssl.Certificate.loadPEM(b) for b in blocks]
    )
    return root


#: The key exchange groups offered: OpenSSL 3.5's default order, but a key
#: share sent for X25519 alone (C{*}). A server that prefers the hybrid
#: post-quantum X25519MLKEM768 asks for its share (HelloRetryRequest); one
#: that does not (Prosody 0.12, ejabberd on OpenSSL 3.0) no longer makes us
#: generate an ML-KEM key, which OpenSSL then keeps for the connection's
#: life: 11 KB per session (bench/RESULTS.rst).
KEY_EXCHANGE_GROUPS = (b"?X25519MLKEM768 / ?*X25519:?secp256r1 / ?X448:?secp384r1:?secp521r1"
                       b" / ?ffdhe2048:?ffdhe3072")  # fmt: skip


def clientTLSOptions(domain: str, trustRoot: IOpenSSLTrustRoot) -> IOpenSSLClientConnectionCreator:
    """
    Return TLS options verifying that the server holds a certificate for
    C{domain} (the JID's domain, whatever host we connect to: RFC 6120
    13.7.2.1) issued by C{trustRoot}, for STARTTLS and Direct TLS alike
    (XEP-0368: the same validation; SNI the domain; ALPN C{xmpp-client},
    which servers ignore on STARTTLS), offering L{KEY_EXCHANGE_GROUPS}.
    """
    options = ssl.optionsForClientTLS(domain, trustRoot=trustRoot,
                                      acceptableProtocols=[ALPN_XMPP_CLIENT])  # fmt: skip
    # Neither Twisted nor pyOpenSSL sets groups: the context of the
    # options' CertificateOptions, through OpenSSL's own call. An OpenSSL
    # before 3.5 refuses the list (and sends one key share anyway).
    certificateOptions = getattr(getattr(options, "_createConnection", None), "__self__", None)
    if isinstance(certificateOptions, ssl.CertificateOptions):
        context = certificateOptions.getContext()
        _openssl.SSL_CTX_set1_curves_list(context._context, KEY_EXCHANGE_GROUPS)
    return options


def tlsConnection(transport: object) -> SSL.Connection | None:
    """
    Return the OpenSSL connection of C{transport} (TCP after STARTTLS, or
    Direct TLS), or L{None} if it has none (plain TCP, BOSH, a test stub).
    """
    getHandle = getattr(transport, "getHandle", None)
    connection = getHandle() if callable(getHandle) else None
    return connection if isinstance(connection, SSL.Connection) else None


@implementer(IOpenSSLClientConnectionCreator)
class ResumingTLSOptions:
    """
    One session's TLS options: C{options} (shared by the sessions of a
    domain), offering the TLS 1.3 session of the session's last
    connection, so that a reconnection to the same server skips the key
    exchange's certificate and its verification.

    Only TLS 1.3 sessions are kept: resuming a TLS 1.2 one would change
    what C{tls-unique} binds to (L{sipxmpp.xmpp.sasl.channelBindings}).
    A server that cannot resume (restarted, its cache full) just makes a
    full handshake. The certificate was verified for the same domain when
    the session was made.

    @ivar session: the TLS session to offer, or L{None}.
    """

    def __init__(self, options: IOpenSSLClientConnectionCreator) -> None:
        self._options = options
        self.session: SSL.Session | None = None

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self.session is not None:
            connection.set_session(self.session)
        return connection

    def remember(self, transport: object) -> None:
        """
        Keep the TLS session of C{transport}'s connection (L{tlsConnection})
        for the next one; a transport without TLS changes nothing. Call it
        once a stanza has come after the handshake: a TLS 1.3 server sends
        its session ticket after the handshake.
        """
        connection = tlsConnection(transport)
        if connection is not None:
            session = None
            if connection.get_protocol_version_name() == "TLSv1.3":
                session = connection.get_session()
            self.session = session


def describeCertificateFailure(reason: Failure) -> str | None:
    """
    Say why the server's certificate was refused, if C{reason} (why a
    connection was lost) is a certificate failure; else L{None}.
    """
    if reason.check(VerificationError):
        return f"certificate does not match the domain ({reason.value})"
    if reason.check(SSL.Error):
        details = []
        args = reason.value.args if reason.value is not None else ()
        for item in args[0] if args and isinstance(args[0], list) else []:
            if isinstance(item, tuple) and len(item) == 3:
                details.append(str(item[2]))
        text = ", ".join(details) or str(reason.value)
        if "certificate" in text.lower():
            return f"certificate refused: {text}"
        return f"TLS failed: {text}"
    return None
