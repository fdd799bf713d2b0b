"""
A minimal, blocking XMPP client to prove that a test server works.

It is deliberately independent of the project's own XMPP stack (which it
helps to test): plain sockets, the standard library's C{ssl} and
C{ElementTree}, SCRAM-SHA-1 written out from RFC 5802.  It does what the
harness's own tests need -- stream features, STARTTLS with certificate
verification, SASL, resource binding, roster, presence -- and no more.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_ROSTER = "jabber:iq:roster"


class XMPPProbeError(Exception):
    """
    The server said no, or said something unexpected.
    """


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _scramAttributes(message: bytes) -> dict[str, str]:
    """
    Split a SCRAM message C{a=1,b=2} into its attributes.
    """
    attrs = {}
    for part in message.decode("utf-8").split(","):
        key, _, value = part.partition("=")
        attrs[key] = value
    return attrs


class _ScramSHA1:
    """
    The client side of SCRAM-SHA-1 (RFC 5802), without channel binding.
    """

    def __init__(self, user: str, password: str) -> None:
        self.password = password.encode("utf-8")
        self.nonce = base64.b64encode(os.urandom(18)).decode("ascii")
        name = user.replace("=", "=3D").replace(",", "=2C")
        self.clientFirstBare = f"n={name},r={self.nonce}"
        self.serverSignature = b""

    def first(self) -> bytes:
        return ("n,," + self.clientFirstBare).encode("utf-8")

    def final(self, serverFirst: bytes) -> bytes:
        text = serverFirst.decode("utf-8")
        attrs = _scramAttributes(serverFirst)
        if not attrs["r"].startswith(self.nonce):
            raise XMPPProbeError("SCRAM: server nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac(
            "sha1", self.password, base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        clientKey = hmac.digest(salted, b"Client Key", "sha1")
        storedKey = hashlib.sha1(clientKey).digest()
        withoutProof = "c=biws,r=" + attrs["r"]
        authMessage = ",".join([self.clientFirstBare, text, withoutProof]).encode()
        signature = hmac.digest(storedKey, authMessage, "sha1")
        proof = bytes(a ^ b for a, b in zip(clientKey, signature, strict=True))
        serverKey = hmac.digest(salted, b"Server Key", "sha1")
        self.serverSignature = hmac.digest(serverKey, authMessage, "sha1")
        return (withoutProof + ",p=" + base64.b64encode(proof).decode()).encode()

    def verify(self, serverFinal: bytes) -> None:
        attrs = _scramAttributes(serverFinal)
        if base64.b64decode(attrs.get("v", "")) != self.serverSignature:
            raise XMPPProbeError("SCRAM: the server's signature is wrong")


class XMPPProbe:
    """
    One client-to-server XMPP connection, driven step by step.

    @ivar features: the latest C{<stream:features/>} received.
    @ivar jid: the full JID once bound.
    @ivar peerCertificate: the server's certificate (DER) after STARTTLS.
    """

    def __init__(self, host: str, port: int, domain: str, timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.domain = domain
        self.timeout = timeout
        self.sock: socket.socket = socket.create_connection((host, port), timeout)
        self.features: ET.Element | None = None
        self.jid: str | None = None
        self.peerCertificate: bytes | None = None
        self._pending: list[ET.Element] = []
        self._counter = 0
        self._openStream()

    # -- stream plumbing --------------------------------------------------

    def _openStream(self) -> None:
        self._parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self.send(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
            f" xmlns:stream='{NS_STREAMS}' to={quoteattr(self.domain)}"
            " version='1.0' xml:lang='en'>"
        )
        self.features = self.next(lambda e: e.tag == _q(NS_STREAMS, "features"))

    def send(self, data: str) -> None:
        """
        Send raw XML text.
        """
        self.sock.sendall(data.encode("utf-8"))

    def _readElements(self, deadline: float) -> None:
        """
        Read from the socket until at least one top-level element is whole.
        """
        before = len(self._pending)
        while len(self._pending) == before:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise XMPPProbeError("timed out waiting for the server")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise XMPPProbeError("timed out waiting for the server") from None
            if not data:
                raise XMPPProbeError("the server closed the connection")
            self._parser.feed(data)
            for item in self._parser.read_events():
                # Only "start" and "end" were asked for: always elements.
                event, elem = item[0], item[-1]
                if not isinstance(elem, ET.Element):
                    continue
                if event == "start":
                    self._depth += 1
                    continue
                self._depth -= 1
                if self._depth == 1:
                    self._pending.append(elem)
                elif self._depth == 0:
                    raise XMPPProbeError("the server closed the stream")

    def next(
        self,
        match: Callable[[ET.Element], bool] = lambda e: True,
        timeout: float | None = None,
    ) -> ET.Element:
        """
        Return the next top-level element for which C{match} is true;
        elements received meanwhile that do not match are kept for later.

        @raise XMPPProbeError: on timeout, stream error or closed stream.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            for elem in self._pending:
                if elem.tag == _q(NS_STREAMS, "error"):
                    raise XMPPProbeError(f"stream error: {ET.tostring(elem).decode()}")
                if match(elem):
                    self._pending.remove(elem)
                    return elem
            self._readElements(deadline)

    # -- negotiation -----------------------------------------------------

    def mechanisms(self) -> list[str]:
        """
        Return the SASL mechanisms of the current stream features.
        """
        if self.features is None:
            return []
        return [m.text or "" for m in self.features.iter(_q(NS_SASL, "mechanism"))]

    def offersStartTLS(self) -> bool:
        """
        Tell whether the current features offer STARTTLS.
        """
        return self.features is not None and self.features.find(_q(NS_TLS, "starttls")) is not None

    def requiresStartTLS(self) -> bool:
        """
        Tell whether the current features offer STARTTLS as required.
        """
        if self.features is None:
            return False
        starttls = self.features.find(_q(NS_TLS, "starttls"))
        return starttls is not None and starttls.find(_q(NS_TLS, "required")) is not None

    def startTLS(self, caFile: str | None, serverName: str | None = None) -> None:
        """
        Upgrade to TLS, verifying the server against C{caFile} and
        C{serverName} (default: the domain).  With C{caFile=None}, nothing
        is verified (to inspect a server that would not pass).

        @raise ssl.SSLCertVerificationError: if verification fails.
        """
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        answer = self.next()
        if answer.tag != _q(NS_TLS, "proceed"):
            raise XMPPProbeError(f"STARTTLS refused: {answer.tag}")
        if caFile is None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=caFile)
        self.sock = context.wrap_socket(self.sock, server_hostname=serverName or self.domain)
        self.peerCertificate = self.sock.getpeercert(binary_form=True)
        self._openStream()

    def authenticate(self, user: str, password: str, mechanism: str = "SCRAM-SHA-1") -> None:
        """
        Log in with SASL C{mechanism} (SCRAM-SHA-1 or PLAIN) and restart
        the stream.

        @raise XMPPProbeError: if the server refuses.
        """
        if mechanism not in self.mechanisms():
            raise XMPPProbeError(f"{mechanism} not offered: {self.mechanisms()}")

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode("ascii") or "="

        if mechanism == "PLAIN":
            initial = f"\0{user}\0{password}".encode()
            self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{b64(initial)}</auth>")
            scram = None
        elif mechanism == "SCRAM-SHA-1":
            scram = _ScramSHA1(user, password)
            self.send(
                f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{b64(scram.first())}</auth>"
            )
        else:
            raise XMPPProbeError(f"this probe does not do {mechanism}")
        while True:
            answer = self.next()
            payload = base64.b64decode(answer.text or "")
            if answer.tag == _q(NS_SASL, "challenge") and scram is not None:
                self.send(f"<response xmlns='{NS_SASL}'>{b64(scram.final(payload))}</response>")
            elif answer.tag == _q(NS_SASL, "success"):
                if scram is not None:
                    scram.verify(payload)
                break
            else:
                raise XMPPProbeError(f"authentication failed: {ET.tostring(answer).decode()}")
        self._openStream()

    def bind(self, resource: str = "probe") -> str:
        """
        Bind C{resource} and return the full JID.
        """
        result = self.iq(
            "set",
            f"<bind xmlns='{NS_BIND}'><resource>{escape(resource)}</resource></bind>",
        )
        jid = result.findtext(f"{_q(NS_BIND, 'bind')}/{_q(NS_BIND, 'jid')}")
        if not jid:
            raise XMPPProbeError("no JID in the bind result")
        self.jid = jid
        return jid

    # -- stanzas ------------------------------------------------------------

    def iq(self, kind: str, payload: str, to: str | None = None) -> ET.Element:
        """
        Send an iq of type C{kind} with C{payload} and return the result.

        @raise XMPPProbeError: on an error reply.
        """
        self._counter += 1
        ident = f"probe{self._counter}"
        toAttr = f" to={quoteattr(to)}" if to else ""
        self.send(f"<iq type='{kind}' id='{ident}'{toAttr}>{payload}</iq>")
        reply = self.next(lambda e: e.tag == _q(NS_CLIENT, "iq") and e.get("id") == ident)
        if reply.get("type") != "result":
            raise XMPPProbeError(f"iq {kind} failed: {ET.tostring(reply).decode()}")
        return reply

    def roster(self) -> dict[str, str]:
        """
        Fetch the roster: bare JID -> subscription.
        """
        reply = self.iq("get", f"<query xmlns='{NS_ROSTER}'/>")
        return {
            item.get("jid", ""): item.get("subscription", "none")
            for item in reply.iter(_q(NS_ROSTER, "item"))
        }

    def sendPresence(self, show: str | None = None, priority: int = 0) -> None:
        """
        Send available presence.
        """
        showXML = f"<show>{escape(show)}</show>" if show else ""
        self.send(f"<presence>{showXML}<priority>{priority}</priority></presence>")

    def waitForPresence(self, fromBare: str, timeout: float | None = None) -> ET.Element:
        """
        Wait for an available presence from any resource of C{fromBare}.
        """

        def isIt(e: ET.Element) -> bool:
            return (
                e.tag == _q(NS_CLIENT, "presence")
                and e.get("type") in (None, "available")
                and (e.get("from") or "").split("/")[0] == fromBare
            )

        return self.next(isIt, timeout)

    def close(self) -> None:
        """
        Close the stream and the connection.
        """
        try:
            self.send("</stream:stream>")
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> XMPPProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def login(
    host: str,
    port: int,
    domain: str,
    user: str,
    password: str,
    caFile: str,
    resource: str = "probe",
    mechanism: str = "SCRAM-SHA-1",
) -> XMPPProbe:
    """
    Connect, STARTTLS (verified against C{caFile}), authenticate, bind.

    @return: the logged-in probe; close it when done.
    """
    probe = XMPPProbe(host, port, domain)
    try:
        probe.startTLS(caFile)
        probe.authenticate(user, password, mechanism)
        probe.bind(resource)
    except BaseException:
        probe.close()
        raise
    return probe
