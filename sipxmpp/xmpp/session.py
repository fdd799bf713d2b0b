"""
One XMPP client-to-server session per user, as the user's JID with the
gateway's resource.

Built on L{ClientService} (reconnection with backoff and jitter on an
injected clock) and twisted.words' L{client.XMPPClientFactory} with explicit
TLS options (wokkel's C{XMPPClient} uses the global reactor and the system
trust store, and retries silently forever on an untrusted certificate).
wokkel's L{subprotocols.StreamManager} dispatches to handlers: the
publisher's handler, an XEP-0199 keepalive, a ping responder and a fallback
that answers unknown iqs with an error.

Logins queue (L{sipxmpp.xmpp.logins.LoginPacer}, one per gateway): at
most C{loginConcurrency} in flight, started at most C{loginRate} per
second, first come first served, held while the server refuses
connections. A login that is not done C{loginTimeout} seconds after it
left the queue (a stalled TCP connect, a server that never answers) is
dropped and retried with backoff.

A login that fails for a reason retrying will not fix soon (wrong password,
refused certificate) marks the session I{failed} with that reason, logs it
once per attempt -- never with the secret -- and retries only after
C{failedRetryDelay}, so one broken account costs the server almost nothing
and never affects the sessions of other users.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from twisted.application.internet import ClientService
from twisted.internet import defer
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost, DNSLookupError
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorFromThreads,
    IReactorTCP,
    IReactorTime,
    ISSLTransport,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import client, error, xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.protocols.jabber.sasl import SASLError
from twisted.words.xish import domish
from zope.interface import Attribute, Interface, implementer

from sipxmpp.xmpp import initializers, sasl
from sipxmpp.xmpp.bosh import isBOSHURL
from sipxmpp.xmpp.endpoints import makeEndpoint
from sipxmpp.xmpp.jids import withResource
from sipxmpp.xmpp.logins import LoginPacer
from sipxmpp.xmpp.quickack import ackEachRead
from sipxmpp.xmpp.streammgmt import ManagedXmlStream, ResumableStreamManager, StreamManagement
from sipxmpp.xmpp.tls import (
    ResumingTLSOptions,
    clientTLSOptions,
    describeCertificateFailure,
    loadTrustRoot,
)
from sipxmpp.xmpp.wokkelcompat import generic, ping, subprotocols

NS_PING = "urn:xmpp:ping"
NS_CSI = "urn:xmpp:csi:0"


class NotConnected(Exception):
    """
    The session has no initialized stream right now.
    """


@dataclass(frozen=True)
class SessionSettings:
    """
    What every session needs from C{[xmpp]}.

    @ivar resource: the gateway's resource.
    @ivar server: C{HOST:PORT} (STARTTLS) or C{tls:HOST:PORT} (Direct TLS)
        to connect to instead of DNS SRV, or empty.
    @ivar requireTLS: refuse to log in without STARTTLS.
    @ivar pingInterval: seconds between XEP-0199 pings to the server.
    @ivar pingTimeout: seconds without an answer before the link is dead.
    @ivar reconnectMaxDelay: upper bound of the reconnection backoff.
    @ivar failedRetryDelay: seconds before retrying a failed login.
    @ivar loginConcurrency: logins in flight at once, gateway-wide.
    @ivar loginRate: logins started per second, gateway-wide (0: no bound).
    @ivar loginTimeout: seconds from leaving the queue (before the TCP
        connect) to logged in, after which the attempt is dropped.
    @ivar clientStateInactive: tell a server that offers XEP-0352 that the
        session is C{inactive}, so that it may hold back contacts'
        presence (it may hold back the user's own clients' too).
    @ivar streamManagement: XEP-0198 acks and resumption where the server
        offers them: a network blip resumes the stream instead of logging
        in afresh.
    @ivar channelBinding: C{"auto"}: SCRAM-*-PLUS where the server offers
        it and the TLS connection gives binding data; C{"off"}: never.
    """

    resource: str = "sipxmpp"
    server: str = ""
    requireTLS: bool = True
    pingInterval: float = 60.0
    pingTimeout: float = 20.0
    reconnectMaxDelay: float = 60.0
    failedRetryDelay: float = 600.0
    loginConcurrency: int = 100
    loginRate: float = 200.0
    loginTimeout: float = 60.0
    clientStateInactive: bool = False
    streamManagement: bool = True
    channelBinding: str = "auto"


class IXMPPSession(Interface):
    """
    A client-to-server session as one user: what the publisher uses.
    """

    jid = Attribute("The full JID (user@domain/resource) the session logs in as.")
    state = Attribute(
        "One line for operators: 'stopped', 'connecting', 'connected', "
        "'reconnecting: ...' or 'failed: ...'."
    )
    ready = Attribute("Whether the stream is authenticated and bound right now.")
    onStateChanged = Attribute("Called with the new state on every change of C{state}.")

    def addHandler(handler: Any) -> None:
        """
        Add a wokkel L{subprotocols.XMPPHandler}: it sees every stream.
        """

    def send(element: domish.Element) -> bool:
        """
        Send C{element} if the stream is ready; return whether it was sent.
        Nothing is queued for later: a stale presence must not go out after
        a reconnection (the publisher re-sends its latest state instead).
        While a lost stream is being resumed (XEP-0198), the session is
        still ready and C{element} goes out once it is: the handlers see
        one stream, and a stream that is not resumed drops it.
        """

    def sendRequest(element: domish.Element, timeout: float | None = None) -> Deferred[domish.Element]:
        """
        Send the iq C{element} (a unique id is added when it has none) and
        return its result element; fail with L{error.StanzaError} on an
        error reply, L{xmlstream.TimeoutError} after C{timeout} seconds,
        L{NotConnected} if the stream is not ready, or with the reason the
        connection was lost if it goes away meanwhile.
        """

    def start() -> None:
        """
        Connect, and stay connected until L{stop}.
        """

    def stop() -> Deferred[None]:
        """
        Log out gracefully (unavailable presence, closing the stream) and
        stop reconnecting.
        """


class IXMPPReport(Interface):
    """
    What the XMPP package tells operations of, per user (the AoR): counted
    as C{sipxmpp_xmpp_*} metrics and listed as the user's last events on
    the status page. An interface of this package, provided by
    L{sipxmpp.ops.xmppreport.XMPPReport}, which C{tap.py} hands in; every
    method returns at once and never raises.
    """

    def sessionStateChanged(aor: str, state: str, reason: str | None) -> None:
        """
        C{aor}'s session is now in C{state} (L{IXMPPSession.state}); for a
        failed login, C{reason} is its kind (L{XMPPSession.failureReason}).
        """

    def telephonyChanged(aor: str, state: str) -> None:
        """
        The publisher learnt C{aor}'s new telephony state.
        """

    def commandSent(aor: str, command: str, target: str) -> None:
        """
        A remote-control C{command} (C{"set-status"} or C{"restore"}) went
        to the client C{target} (a full JID).
        """

    def commandResult(aor: str, command: str, result: str) -> None:
        """
        The client's answer to C{command}: C{"answered"}, C{"refused"} (an
        error answer), C{"timeout"} or C{"lost"} (the stream went away).
        """

    def fallback(aor: str) -> None:
        """
        A call of a user in remote-control mode is shown on the gateway's
        own resource instead (no client offers remote control, or it
        failed).
        """

    def restored(aor: str, target: str) -> None:
        """
        The client C{target} got its status back after the call.
        """

    def presenceSent(aor: str, latency: float, via: str) -> None:
        """
        Presence now shows the latest telephony state, C{latency} seconds
        after the publisher learnt it; C{via} is C{"own-resource"} or
        C{"client"}.
        """


@implementer(IXMPPReport)
class NullReport:
    """
    An L{IXMPPReport} that forgets everything (the default).
    """

    def sessionStateChanged(self, aor: str, state: str, reason: str | None) -> None:
        pass

    def telephonyChanged(self, aor: str, state: str) -> None:
        pass

    def commandSent(self, aor: str, command: str, target: str) -> None:
        pass

    def commandResult(self, aor: str, command: str, result: str) -> None:
        pass

    def fallback(self, aor: str) -> None:
        pass

    def restored(self, aor: str, target: str) -> None:
        pass

    def presenceSent(self, aor: str, latency: float, via: str) -> None:
        pass


class ElementRequest(generic.Request):  # type: ignore[misc]
    """
    A wokkel request for an iq element built elsewhere, so that
    L{subprotocols.StreamManager} tracks its answer.
    """

    def __init__(self, element: domish.Element, timeout: float | None) -> None:
        super().__init__(stanzaType=element["type"])
        self.element = element
        self.stanzaID = element.getAttribute("id")
        self.timeout = timeout

    def toElement(self) -> domish.Element:
        return self.element


@implementer(IStreamClientEndpoint)
class _PacedEndpoint:
    """
    The endpoint L{ClientService} sees: every connect waits its turn in
    the session's L{LoginPacer} first.
    """

    def __init__(self, session: XMPPSession, inner: IStreamClientEndpoint) -> None:
        self._session = session
        self._inner = inner

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return self._session._connectPaced(self._inner, protocolFactory)


class KeepAlive(subprotocols.XMPPHandler):  # type: ignore[misc]
    """
    XEP-0199 client-to-server pings: a link that stops answering is
    aborted, so that L{ClientService} reconnects (TCP alone may take many
    minutes to notice a dead peer).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, domain: str, interval: float, timeout: float) -> None:
        super().__init__()
        self.clock = clock
        self.domain = domain
        self.interval = interval
        self.timeout = timeout
        self._loop: LoopingCall | None = None

    def connectionInitialized(self) -> None:
        self._loop = LoopingCall(self._ping)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)  # lets the old stream go
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _ping(self) -> Deferred[None]:
        if self.parent.xmlstream is None:
            return defer.succeed(None)  # a lost stream being resumed
        iq = domish.Element((None, "iq"))
        iq["type"] = "get"
        iq["to"] = self.domain
        iq.addElement((NS_PING, "ping"))
        stream = self.xmlstream
        d: Deferred[Any] = self.parent.request(ElementRequest(iq, self.timeout))

        def failed(reason: Failure) -> None:
            if reason.check(error.StanzaError):
                return  # an error answer still proves the link works
            if reason.check(xmlstream.TimeoutError) and stream is not None:
                self.log.warn(
                    "XMPP server {domain} did not answer a ping within {timeout} s; "
                    "reconnecting",
                    domain=self.domain,
                    timeout=self.timeout,
                )
                stream.transport.abortConnection()

        d.addCallbacks(lambda _: None, failed)
        return d.addCallback(lambda _: None)


@implementer(IXMPPSession)
class XMPPSession:
    """
    The real session: see the module docstring.

    @ivar failure: why the last login failed, or L{None}.
    @ivar failureReason: its kind, for metrics: C{"authentication"},
        C{"tls"}, C{"certificate"}, C{"refused"} or C{"other"}; or L{None}.
    @ivar tls: the session's TLS options, which resume its last TLS session
        on a reconnection (L{ResumingTLSOptions}).
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        jid: JID,
        password: str,
        settings: SessionSettings,
        tlsOptions: IOpenSSLClientConnectionCreator | None = None,
        caFile: str = "",
        endpoint: IStreamClientEndpoint | None = None,
        jitter: Callable[[], float] = random.random,
        pacer: LoginPacer | None = None,
        trustRoot: IOpenSSLTrustRoot | None = None,
        deriveKeys: sasl.Runner | None = None,
    ) -> None:
        """
        @param reactor: provides L{IReactorTime} and L{IReactorTCP}.
        @param jid: the user's bare JID; the resource comes from C{settings}.
        @param tlsOptions: TLS client options; by default, built for the
            JID's domain with the trust root of C{caFile} (the system store
            if empty). Share one trust root among sessions through
            L{SessionFactory}: loading it per session costs time.
        @param endpoint: where to connect (default: L{makeEndpoint}).
        @param trustRoot: the trust root of C{tlsOptions}, for BOSH (HTTPS
            checks the URL's host against it); by default C{caFile}'s when
            C{tlsOptions} is not given.
        @param jitter: returns a float in [0, 1); injected for tests.
        @param pacer: the gateway's login queue, shared by all sessions
            (L{SessionFactory} makes one); none: log in at once.
        @param deriveKeys: where SCRAM keys not cached are derived
            (L{sasl.KeyDerivation}); none: in the reactor's thread.
        """
        if not IReactorTCP.providedBy(reactor) and endpoint is None:
            raise TypeError("the reactor must provide IReactorTCP")
        self.reactor = reactor
        self.jid = withResource(jid, settings.resource)
        self.settings = settings
        self.state = "stopped"
        # Told of every state change (the store keeps it for operators).
        self.onStateChanged: Callable[[str], None] = lambda state: None
        self.failure: str | None = None
        self.failureReason: str | None = None
        self._jitter = jitter
        self._consecutiveFailures = 0
        self._stopping = False
        self._stream: xmlstream.XmlStream | None = None
        self._ready = False
        self._pacer = pacer
        self._deriveKeys = deriveKeys
        self._release: Callable[[], None] | None = None
        self._loginTimer: IDelayedCall | None = None
        self._connecting: Deferred[IProtocol] | None = None
        if tlsOptions is None:
            trustRoot = trustRoot or loadTrustRoot(caFile)
            tlsOptions = clientTLSOptions(self.jid.host, trustRoot)
        self.tls = ResumingTLSOptions(tlsOptions)
        self.factory = client.XMPPClientFactory(self.jid, password, configurationForTLS=self.tls)
        self.factory.protocol = ManagedXmlStream
        # No "Starting factory" line at info for every connection.
        self.factory.noisy = False
        # Not over BOSH: its rids already carry a request over a blip, and
        # Prosody 0.12's mod_smacks fails resuming a BOSH session.
        self.management = StreamManagement(reactor, self.jid.full(),
                                           settings.streamManagement and not isBOSHURL(settings.server))  # fmt: skip
        self.management.onExpired = self._resumeExpired
        self.management.onResumeFailed = self._resumeFailed
        # Bootstraps run in the order added: ours first, so that handlers see
        # a session whose state is already up to date.
        self.factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, self._connected)
        self.factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, self._authenticated)
        self.factory.addBootstrap(xmlstream.INIT_FAILED_EVENT, self._initFailed)
        self.factory.addBootstrap(xmlstream.STREAM_END_EVENT, self._ended)
        self.streamManager = ResumableStreamManager(self.factory, reactor, self.management)
        self.keepAlive = KeepAlive(reactor, self.jid.host, settings.pingInterval, settings.pingTimeout)
        self.keepAlive.setHandlerParent(self.streamManager)
        ping.PingHandler().setHandlerParent(self.streamManager)
        generic.FallbackHandler().setHandlerParent(self.streamManager)
        if endpoint is None:
            endpoint = makeEndpoint(reactor, settings.server, self.jid.host,
                                    tlsOptions=self.tls, trustRoot=trustRoot)  # fmt: skip
        self.service = ClientService(_PacedEndpoint(self, endpoint), self.factory,
                                     retryPolicy=self._retryDelay, clock=reactor)  # fmt: skip

    def __repr__(self) -> str:
        return f"<XMPPSession {self.jid.full()} {self.state}>"

    @property
    def ready(self) -> bool:
        return self._ready

    # -- IXMPPSession ------------------------------------------------------

    def addHandler(self, handler: Any) -> None:
        handler.setHandlerParent(self.streamManager)

    def send(self, element: domish.Element) -> bool:
        if self._ready and self.streamManager.holding:
            self.streamManager.send(element)
            return True
        if not self._ready or self._stream is None:
            return False
        self._stream.send(element)
        return True

    def sendRequest(self, element: domish.Element, timeout: float | None = None) -> Deferred[domish.Element]:
        if not self._ready:
            return defer.fail(NotConnected(f"{self.jid.full()} is {self.state}"))
        d: Deferred[domish.Element] = self.streamManager.request(ElementRequest(element, timeout))
        return d

    def start(self) -> None:
        self._stopping = False
        self._setState("connecting")
        self.service.startService()

    def stop(self) -> Deferred[None]:
        self._stopping = True
        self._loginOver()
        if self._ready and self._stream is not None:
            unavailable = domish.Element((None, "presence"))
            unavailable["type"] = "unavailable"
            self._stream.send(unavailable)
            self._stream.sendFooter()
        self._dropResumption()
        d: Deferred[None] = self.service.stopService()

        def stopped(result: object) -> None:
            self._setState("stopped")

        return d.addCallback(stopped)

    def updatePassword(self, password: str) -> None:
        """
        Log in with C{password} from now on (the administrator replaced
        it). A session whose login failed tries again at once instead of
        after C{failedRetryDelay}; a connected one keeps its stream.
        """
        self.factory.authenticator.password = password
        if self.failure is None or self._stopping or not self.service.running:
            return
        self.log.info("XMPP session {jid}: password replaced; logging in again now",
                      jid=self.jid.full())  # fmt: skip
        self.failure = None
        self.failureReason = None
        self._consecutiveFailures = 0
        self._setState("connecting")

        def restart(_: object) -> None:
            if not self._stopping and not self.service.running:
                self.service.startService()

        self.service.stopService().addBoth(restart)

    # -- the login queue and timeout ---------------------------------------

    def _connectPaced(self, inner: IStreamClientEndpoint, factory: IProtocolFactory) -> Deferred[IProtocol]:
        async def attempt() -> IProtocol:
            # Where the endpoint connects: with SRV, that depends on the domain.
            pacer, server = self._pacer, f"{self.settings.server} {self.jid.host}"
            if pacer is not None:
                self._release = await pacer.acquire(server)
            startedAt = self.reactor.seconds()
            self._loginTimer = self.reactor.callLater(self.settings.loginTimeout, self._loginTimedOut)
            self._connecting = inner.connect(factory)
            try:
                protocol = await self._connecting
            except BaseException as e:
                # Refused or unknown: the server is down or restarting, so
                # the others wait for a probe instead of failing in turn.
                if pacer is not None and isinstance(e, (ConnectError, DNSLookupError)):
                    pacer.serverDown(server, startedAt)
                self._loginOver()
                raise
            finally:
                self._connecting = None
            if pacer is not None:
                pacer.serverUp(server)
            return protocol

        return Deferred.fromCoroutine(attempt())

    def _loginOver(self) -> None:
        """
        The login attempt ended, one way or another: free its place.
        """
        timer, self._loginTimer = self._loginTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        release, self._release = self._release, None
        if release is not None:
            release()

    def _loginTimedOut(self) -> None:
        self._loginTimer = None
        self.log.warn("XMPP login as {jid} not done after {timeout} s ({state}); dropping it "
                      "and retrying", jid=self.jid.full(), timeout=self.settings.loginTimeout,
                      state=self.state)  # fmt: skip
        self._loginOver()
        if self._connecting is not None:
            self._connecting.cancel()
        elif self._stream is not None and self._stream.transport is not None:
            cast(ITCPTransport, self._stream.transport).abortConnection()

    # -- stream events -----------------------------------------------------

    def _setState(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.log.debug("XMPP session {jid}: {state}", jid=self.jid.full(), state=state)
            self.onStateChanged(state)

    def _connected(self, xs: xmlstream.XmlStream) -> None:
        self._stream = xs
        if not self.management.resuming:
            self._setState("authenticating")
        # Stanzas are small and latency matters (a call's presence): do not
        # let Nagle's algorithm hold one back waiting for a delayed ACK, on
        # our side or on the server's (quickack).
        transport = xs.transport
        while transport is not None and not ITCPTransport.providedBy(transport):
            transport = getattr(transport, "transport", None)
        if transport is not None:
            transport.setTcpNoDelay(True)
        ackEachRead(xs)
        sasl.replaceSASLInitializer(xs, self.settings.channelBinding, self._deriveKeys)
        initializers.replaceInitializers(xs)
        # A transport secured before the stream (Direct TLS, XEP-0368; BOSH
        # over HTTPS) needs no STARTTLS, which the server will not offer.
        if not self.settings.requireTLS or self._encrypted():
            for initializer in xs.initializers:
                if isinstance(initializer, xmlstream.TLSInitiatingInitializer):
                    initializer.required = False
        self.management.prepare(xs)

    def _authenticated(self, xs: xmlstream.XmlStream) -> None:
        self._loginOver()
        self.tls.remember(xs.transport)
        resumed = self.management.resumedOn(xs)
        if resumed:
            self.log.info("XMPP session {jid}: stream resumed after: {state}",
                          jid=self.jid.full(), state=self.state)  # fmt: skip
        elif self.settings.clientStateInactive and (NS_CSI, "csi") in xs.features:
            xs.send(domish.Element((NS_CSI, "inactive")))
        self._ready = True
        self._consecutiveFailures = 0
        if self.failure is not None:
            self.log.info("XMPP session {jid}: logged in again after: {failure}",
                          jid=self.jid.full(), failure=self.failure)  # fmt: skip
        self.failure = None
        self.failureReason = None
        self.jid = xs.authenticator.jid
        self._setState("connected")

    def _initFailed(self, reason: Failure) -> None:
        self._loginOver()
        if reason.check(ConnectionLost, ConnectionDone):
            # Gone mid-login (a server restart, our login timeout): that is
            # for the reconnection backoff (_ended), not a failed login
            # retried only after failedRetryDelay.
            return
        self._dropResumption()
        # Only the exception's message: a traceback's locals could hold the
        # password, and our SASL errors never include it.
        kind = "other"
        if reason.check(SASLError):
            why, kind = f"authentication: {reason.getErrorMessage()}", "authentication"
        elif reason.check(xmlstream.FeatureNotAdvertized) and not self._encrypted():
            why, kind = "TLS: the server does not offer STARTTLS (require_tls = yes)", "tls"
        elif reason.check(xmlstream.FeatureNotAdvertized):
            why = "login failed: the server did not offer SASL or resource binding"
        elif reason.check(xmlstream.TLSRequired, xmlstream.TLSFailed, xmlstream.TLSNotSupported):
            why = f"TLS: {type(reason.value).__name__} (the server did not give us STARTTLS)"
            kind = "tls"
        elif reason.check(error.StreamError, error.StanzaError):
            why = f"login refused: {getattr(reason.value, 'condition', None)}"
            kind = "refused"
        else:
            why = f"login failed: {type(reason.value).__name__}: {reason.getErrorMessage()}"
        self._fail(why, kind)
        if self._stream is not None:
            self._stream.sendFooter()
            if self._stream.transport is not None:
                self._stream.transport.loseConnection()

    def _encrypted(self) -> bool:
        stream = self._stream
        return stream is not None and ISSLTransport.providedBy(stream.transport)

    def _ended(self, reason: Failure) -> None:
        self._loginOver()
        stream, self._stream = self._stream, None
        if self._stopping:
            self._ready = False
            self.management.forget()
            return
        if self.failure is None and self.management.streamLost(stream):
            # The handlers are not told (ResumableStreamManager): still ready.
            self.streamManager.hold(reason)
            why = reason.getErrorMessage() if isinstance(reason, Failure) else "stream closed"
            self._setState(f"resuming: {why}" if self.state == "connected" else self.state)
            return
        self._ready = False
        certificate = describeCertificateFailure(reason) if isinstance(reason, Failure) else None
        if certificate is not None:
            self._fail(certificate, "certificate")
        elif self.failure is None:
            self._setState(f"reconnecting: {reason.getErrorMessage() if isinstance(reason, Failure) else 'stream closed'}")

    def _dropResumption(self) -> None:
        """
        No resumption now: the handlers learn that the held stream is lost.
        """
        if self.management.resuming or self.streamManager.holding:
            self._ready = False
        self.management.forget()
        self.streamManager.release()

    def _resumeFailed(self) -> None:
        # Before the fresh bind: the handlers' connectionLost must not send
        # on a stream not bound yet.
        self._ready = False
        self.streamManager.release("the server could not resume the stream "
                                   f"({self.management.failedCondition})")
        if self.state.startswith("resuming"):
            self._setState("authenticating")

    def _resumeExpired(self) -> None:
        self._ready = False
        self.streamManager.release(f"not resumed within {self.management.resumeMax:.0f} s")
        if self._stream is not None and self._stream.transport is not None:
            # An attempt to resume under way would now resume a stream the
            # handlers were told is lost: start over, fresh.
            cast(ITCPTransport, self._stream.transport).abortConnection()
        if not self._stopping and self.failure is None:
            self._setState("reconnecting: the stream was not resumed in time")

    def _fail(self, why: str, kind: str) -> None:
        self.failure = why
        self.failureReason = kind
        self._setState(f"failed: {why}")
        self.log.error(
            "XMPP login as {jid} failed: {why}; retrying in {delay:.0f} s",
            jid=self.jid.full(),
            why=why,
            delay=self.settings.failedRetryDelay,
        )

    def _retryDelay(self, attempt: int) -> float:
        # ClientService counts failed TCP connects only; a connection that is
        # made and then dropped (refused login, dead link) resets its count,
        # so the backoff keeps its own count, reset on a successful login.
        if self.failure is not None:
            base = self.settings.failedRetryDelay
        else:
            self._consecutiveFailures += 1
            base = min(self.settings.reconnectMaxDelay, 2.0 ** (self._consecutiveFailures - 1))
            if self.state.startswith(("authenticating", "connected")):
                self._setState("reconnecting")
        # "Equal jitter": at least half the delay, so that thousands of
        # sessions dropped together do not come back in one burst.
        return base / 2 + self._jitter() * base / 2


class SessionFactory:
    """
    Makes L{XMPPSession}s for accounts with the shared settings and one
    trust root loaded once.
    """

    def __init__(self, reactor: IReactorTime, settings: SessionSettings, caFile: str = "",
                 endpointFor: Callable[[JID], IStreamClientEndpoint] | None = None) -> None:  # fmt: skip
        self.reactor = reactor
        self.settings = settings
        self.trustRoot = loadTrustRoot(caFile)
        self._endpointFor = endpointFor
        self._options: dict[str, IOpenSSLClientConnectionCreator] = {}
        self.pacer = LoginPacer(reactor, settings.loginConcurrency, settings.loginRate)
        # First logins' PBKDF2 on another core, where there are threads.
        self.deriveKeys = (sasl.KeyDerivation(reactor)
                           if IReactorFromThreads.providedBy(reactor) else None)  # fmt: skip

    def __call__(self, jid: JID, password: str, server: str | None = None) -> IXMPPSession:
        """
        @param server: the account's own server (C{HOST:PORT},
            C{tls:HOST:PORT} or C{srv}), or L{None} for C{[xmpp] server}.
        """
        domain = jid.host
        if domain not in self._options:
            self._options[domain] = clientTLSOptions(domain, self.trustRoot)
        endpoint = self._endpointFor(jid) if self._endpointFor is not None else None
        settings = self.settings if server is None else replace(self.settings, server=server)
        return XMPPSession(self.reactor, jid, password, settings,
                           tlsOptions=self._options[domain], endpoint=endpoint,
                           pacer=self.pacer, trustRoot=self.trustRoot,
                           deriveKeys=self.deriveKeys)  # fmt: skip


__all__ = [
    "ElementRequest",
    "IXMPPReport",
    "IXMPPSession",
    "KeepAlive",
    "NotConnected",
    "NullReport",
    "SessionFactory",
    "SessionSettings",
    "XMPPSession",
]
