"""
Robustness of the SIP message layer on hostile input.

L{exercise} parses one input as a datagram and through the stream framer,
reads every lazy accessor, serializes, mutates and re-parses, and fails on
any exception other than L{SIPParseError}.  The hypothesis tests here feed
it bounded numbers of mutated messages; the long-run harness
C{fuzz/fuzz_message.py} feeds it millions of coverage-guided ones.

The linear-time tests do not time anything.  They count work
deterministically: Python line events (C{sys.settrace}) for the parser and
the accessors, and the framer's own count of scanned octets.  A quadratic
construct shows up as a line count that grows 64 times when the input
grows 8 times.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.framing import StreamFramer
from sipxmpp.sip.wire.message import SIPMessage, SIPRequest
from sipxmpp.sip.wire.parser import DEFAULT_LIMITS, Limits, parseMessage
from sipxmpp.sip.wire.responses import errorResponse

#: Every status code the layer may ask a server to answer with.
ALLOWED_CODES = {None, 400, 413, 416, 505, 513}

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP p1.example.com:5061;branch=z9hG4bKp1, SIP/2.0/UDP [2001:db8::9];branch=z9hG4bKv6\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob \\"B\\"" <sip:bob@biloxi.example.com>\r\n'
    b"f: Alice <sip:alice@atlanta.example.com;transport=tcp>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Route: <sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr>\r\n"
    b"Record-Route: <sip:rr.example.com;lr>\r\n"
    b'm: <sip:alice@pc33.atlanta.example.com>;expires=60;q=0.5;+sip.instance="<urn:uuid:1>"\r\n'
    b"Require: timer\r\nProxy-Require: foo, bar\r\nSupported: path, gruu\r\n"
    b"x: 1800;refresher=uac\r\nExpires: 120\r\n"
    b"c: application/sdp\r\n"
    b"l: 10\r\n"
    b"\r\n"
    b"v=0\r\ns=-\r\n"
)

RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa;received=192.0.2.9;rport=5066\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKb\r\n"
    b"Path: <sip:edge.example.com;lr>\r\n"
    b"To: <sip:bob@example.com>;tag=abc\r\n"
    b"From: <sip:bob@example.com>;tag=def\r\n"
    b"i: reg-1@192.0.2.1\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"Contact: <sip:bob@192.0.2.1:5060>;expires=3600, <sip:bob@198.51.100.1>;expires=60\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

SEEDS = (INVITE, RESPONSE)

# Lazy accessors and read-only properties that may raise SIPParseError.
ACCESSORS = (
    "topVia", "vias", "fromAddr", "toAddr", "fromTag", "toTag", "callID", "cseq",
    "maxForwards", "contentLength", "contentType", "expires", "sessionExpires",
    "require", "proxyRequire", "supported", "routes", "recordRoutes", "paths",
    "contacts", "body",
)  # fmt: skip
_VIA_PROPERTIES = ("branch", "received", "hasRport", "rport", "maddr", "sentBy", "params")
_ADDRESS_PROPERTIES = ("uri", "tag", "expires", "q", "params", "isWildcard", "displayName")


def _allowed(call: Callable[[], object]) -> object:
    try:
        return call()
    except SIPParseError as error:
        checkError(error)
        return None


def checkError(error: SIPParseError) -> None:
    """
    Check that a parse error is well formed and that the error response
    built from it, if any, is a sane message.
    """
    assert isinstance(error.reason, str) and error.reason, error
    assert error.code in ALLOWED_CODES, error
    response = errorResponse(error)
    if response is None:
        return
    assert error.code is not None and error.isRequest
    assert response.startswith(b"SIP/2.0 %d " % error.code), response
    assert response.endswith(b"\r\nContent-Length: 0\r\n\r\n"), response
    assert response.count(b"\r\n\r\n") == 1, response
    # What it copied may itself be malformed: then it must not parse, but
    # it must not crash the parser either.
    _allowed(lambda: parseMessage(response))


def _readEverything(message: SIPMessage) -> None:
    for name in ACCESSORS:
        value = _allowed(lambda name=name: getattr(message, name))  # type: ignore[misc]
        items: list[Any] = value if isinstance(value, list) else [value]
        for item in items:
            properties = _VIA_PROPERTIES if hasattr(item, "sentBy") else _ADDRESS_PROPERTIES
            if hasattr(item, "uriText") or hasattr(item, "sentBy"):
                for prop in properties:
                    _allowed(lambda item=item, prop=prop: getattr(item, prop))  # type: ignore[misc]
    for key in {key for key, _ in message.headers()}:
        message.getHeader(key)
        message.getHeaders(key)
        _allowed(lambda key=key: message.getHeaderValues(key))  # type: ignore[misc]
    if isinstance(message, SIPRequest):
        uri = _allowed(lambda: message.uri)
        if uri is not None:
            str(uri)
    repr(message)


def _mutateAndCheck(message: SIPMessage, wire: bytes) -> None:
    # Push and pop a Via: the message must serialize to the very same bytes.
    copy = message.copy()
    copy.prependVia("SIP/2.0/UDP fuzz.example.com;branch=z9hG4bKfuzz")
    try:
        again = parseMessage(copy.toBytes())
    except SIPParseError as error:
        checkError(error)  # e.g. over a limit now
    else:
        assert again.topVia.branch == "z9hG4bKfuzz"
    popped = copy.popVia()
    assert popped is not None and popped.branch == "z9hG4bKfuzz"
    assert copy.toBytes() == wire, (copy.toBytes(), wire)
    # What a proxy does to a request or a response it forwards.
    copy = message.copy()
    _allowed(copy.popVia)
    _allowed(copy.popRoute)
    copy.addRecordRoute("<sip:edge.example.com;lr>")
    copy.addPath("<sip:edge.example.com;lr>")
    try:
        maxForwards = copy.maxForwards
    except SIPParseError:
        maxForwards = 0
    if maxForwards != 0:
        copy.decrementMaxForwards()
    copy.setContacts(["<sip:gw@192.0.2.7>"])
    _allowed(lambda: copy.setTopViaReceived("192.0.2.99", 5099))
    if isinstance(copy, SIPRequest):
        copy.setURI("sip:next@example.net")
    copy.ensureContentLength()
    out = copy.toBytes()
    _allowed(lambda: parseMessage(out, Limits(2**20, 2**20, 2**20, 2**20)))
    assert message.toBytes() == wire, "the original changed with its copy"


def exerciseMessage(message: SIPMessage, source: bytes) -> None:
    """
    Read, serialize, mutate and re-parse a message parsed from C{source}.
    """
    wire = message.toBytes()
    # An unmodified message serializes to a slice of its source (only the
    # liberal "no empty line" datagram form gets one added).
    assert wire in source or wire[:-2] in source, (wire, source)
    reparsed = parseMessage(wire, Limits(2**20, 2**20, 2**20, 2**20))
    assert reparsed.toBytes() == wire
    _readEverything(message)
    _mutateAndCheck(message, wire)


def _chunks(data: bytes) -> Iterator[bytes]:
    # Deterministic, uneven chunking derived from the data itself.
    position = 0
    step = 1 + (data[0] if data else 0) % 7
    while position < len(data):
        yield data[position : position + step]
        position += step
        step = step * 3 % 17 + 1


def exercise(data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """
    Run C{data} through everything; only L{SIPParseError} may escape the
    layer, and this function lets none escape.
    """
    try:
        message = parseMessage(data, limits)
    except SIPParseError as error:
        checkError(error)
    else:
        exerciseMessage(message, data)
    framer = StreamFramer(limits)
    try:
        for chunk in _chunks(data):
            for raw in framer.feed(chunk):
                try:
                    framed = parseMessage(raw, limits, datagram=False)
                except SIPParseError as error:
                    checkError(error)
                else:
                    exerciseMessage(framed, raw)
    except SIPParseError as error:
        checkError(error)


# -- mutation strategies ------------------------------------------------------

_SEPARATORS = [b"\r\n", b"\r", b"\n", b"\x00", b'"', b"\\", b"<", b">", b",", b";", b":", b"=",
               b" ", b"\t", b"\r\n ", b"\r\n\r\n", b"%", b"%00", b"[", b"]", b"@", b"?", b"\xff"]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """
    A seed message with a few random edits.
    """
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        # Truncation (2) is drawn rarely: it mostly yields "no empty line".
        kind = draw(st.sampled_from([1, 0, 3, 4, 5, 6, 1, 0, 3, 2]))
        # Edit the header section mostly: that is where the parsing is.
        at = draw(st.integers(0, data.find(b"\r\n\r\n") + 2 if b"\r\n\r\n" in data else len(data)))
        if kind == 0 and data:  # flip a byte
            at = min(at, len(data) - 1)
            data[at] = draw(st.integers(0, 255))
        elif kind == 1:  # insert a separator
            data[at:at] = draw(st.sampled_from(_SEPARATORS))
        elif kind == 2:  # truncate
            del data[at:]
        elif kind == 3:  # duplicate a line
            start = data.rfind(b"\r\n", 0, at) + 2
            end = data.find(b"\r\n", at)
            if 2 <= start < end:
                data[end:end] = b"\r\n" + data[start:end]
        elif kind == 4:  # a huge value
            data[at:at] = draw(st.sampled_from([b"a", b",", b";", b'"', b"<", b" "])) * draw(
                st.integers(1, 70000)
            )
        elif kind == 5:  # delete a span
            del data[at : at + draw(st.integers(1, 40))]
        else:  # random bytes
            data[at:at] = draw(st.binary(min_size=1, max_size=20))
    return bytes(data)


class FuzzTests(SynchronousTestCase):
    """
    Bounded property-based fuzzing: only L{SIPParseError} escapes.
    """

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated())
    def test_mutatedMessages(self, data: bytes) -> None:
        """
        Mutated messages parse or raise L{SIPParseError}, as datagrams and
        through the stream framer; what parses can be read, serialized,
        changed and parsed again.
        """
        exercise(data)

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.binary(max_size=400))
    def test_randomBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes never crash the layer.
        """
        exercise(data)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(mutated())
    def test_tightLimits(self, data: bytes) -> None:
        """
        With small limits every over-limit case is a L{SIPParseError}.
        """
        exercise(data, Limits(maxMessageSize=600, maxHeaderCount=8, maxHeaderLineLength=80, maxBodySize=5))

    def test_seedsParse(self) -> None:
        """
        The seeds themselves are valid, so the mutations start from
        messages that exercise every accessor.
        """
        for seed in SEEDS:
            message = parseMessage(seed)
            self.assertEqual(message.toBytes(), seed)
            exerciseMessage(message, seed)
            self.assertEqual(len(message.vias), 3 if message.isRequest else 2)


# -- linear time ------------------------------------------------------------------


def countLines(call: Callable[[], object]) -> int:
    """
    How many Python lines run during C{call()}, in any function: a
    deterministic measure of interpreted work.
    """
    count = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        call()
    except SIPParseError:
        pass
    finally:
        sys.settrace(previous)
    return count


def _request(headers: bytes) -> bytes:
    return (
        b"OPTIONS sip:a@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n" + headers + b"Content-Length: 0\r\n\r\n"
    )


_BIG = Limits(maxMessageSize=2**22, maxHeaderCount=2**16, maxHeaderLineLength=2**22, maxBodySize=2**22)


def _readAll(data: bytes) -> Callable[[], None]:
    def run() -> None:
        message = parseMessage(data, _BIG)
        _readEverything(message)
        message.toBytes()

    return run


class LinearTimeTests(SynchronousTestCase):
    """
    Work grows linearly with pathological inputs (counted, not timed).
    """

    # Growing the input 8 times may grow the work at most this much; a
    # quadratic construct would grow it about 64 times.
    bound = 8 * 1.5

    def assertLinear(self, build: Callable[[int], bytes], n: int = 500) -> None:
        small = countLines(_readAll(build(n)))
        large = countLines(_readAll(build(8 * n)))
        self.assertGreater(small, 0)
        self.assertLessEqual(large, small * self.bound + 200, (small, large))

    def test_countLinesSeesQuadraticWork(self) -> None:
        """
        The measure itself can fail: a quadratic loop exceeds the bound.
        """

        def quadratic(n: int) -> Callable[[], None]:
            def run() -> None:
                for i in range(n):
                    for _j in range(i):
                        pass

            return run

        self.assertGreater(countLines(quadratic(400)), countLines(quadratic(50)) * self.bound)

    def test_manyCommas(self) -> None:
        """
        Contact and Via lists with thousands of elements.
        """
        self.assertLinear(lambda n: _request(b"Contact: " + b", ".join([b"<sip:x@h>"] * n) + b"\r\n"))
        self.assertLinear(
            lambda n: _request(b"Route: " + b",".join([b"<sip:r.example.com;lr>"] * n) + b"\r\n")
        )
        self.assertLinear(lambda n: _request(b"Supported: " + b"," * (10 * n) + b"\r\n"))

    def test_manyHeaders(self) -> None:
        """
        Thousands of header fields, folded or not.
        """
        self.assertLinear(lambda n: _request(b"X-A: b\r\n" * n))
        self.assertLinear(lambda n: _request(b"X-A: b\r\n" + b" c\r\n" * n))
        self.assertLinear(lambda n: _request(b"Via: SIP/2.0/UDP h;branch=z9hG4bKx\r\n" * n))

    def test_longQuotedStrings(self) -> None:
        """
        Long quoted strings, with and without escapes, and unterminated.
        """
        self.assertLinear(lambda n: _request(b'Contact: "' + b"a" * (50 * n) + b'" <sip:x@h>\r\n'))
        self.assertLinear(lambda n: _request(b'Contact: "' + b'\\"' * (20 * n) + b'" <sip:x@h>\r\n'))
        self.assertLinear(lambda n: _request(b'Contact: "' + b"a," * (20 * n) + b"\r\n"))
        self.assertLinear(lambda n: _request(b'Contact: <sip:x@h>;p="' + b"a;" * (20 * n) + b'"\r\n'))

    def test_manyParameters(self) -> None:
        """
        Thousands of parameters in a Via, an address and a URI.
        """
        self.assertLinear(
            lambda n: _request(b"Via: SIP/2.0/UDP h;branch=z9hG4bK2" + b";a=b" * n + b"\r\n")
        )
        self.assertLinear(lambda n: _request(b"Contact: <sip:x@h" + b";p" * n + b">;q=1" + b";e" * n + b"\r\n"))
        self.assertLinear(lambda n: _request(b"Contact: <sip:x@h>" + b";;" * n + b"\r\n"))

    def test_angleBrackets(self) -> None:
        """
        Many C{<} and C{>}, balanced or not.
        """
        self.assertLinear(lambda n: _request(b"Contact: " + b"<" * (10 * n) + b"\r\n"))
        self.assertLinear(lambda n: _request(b"Contact: " + b"<a>," * (5 * n) + b"\r\n"))

    def test_pathologicalInputsAtTheSizeLimit(self) -> None:
        """
        Inputs built to make a backtracking matcher or a rescanning loop blow
        up, each close to the default 64 KiB limit, go through everything.
        The line counter above cannot see inside C code such as the regular
        expressions of the fast paths; a quadratic one would not finish here.
        """
        size = DEFAULT_LIMITS.maxMessageSize - 400
        cases = [
            b"Contact: " + b"," * size,
            b"Contact: " + b"<sip:x@h>," * (size // 10),
            b'Contact: "' + b"a" * size + b'" <sip:x@h>',
            b'Contact: "' + b"a" * size,
            b'Contact: "' + b'\\"' * (size // 2) + b'" <sip:x@h>',
            b"Contact: <sip:x@h>" + b";a=b" * (size // 4) + b" junk",
            b"Contact: <sip:x@h>" + b";tag" * (size // 4) + b"=x",
            b"Contact: " + b"tok " * (size // 4) + b"<sip:x@h>;",
            b"Contact: sip:x@h" + b";p" * (size // 2) + b'"',
            b"Contact: " + b"<" * size,
            b"Route: " + b"a" * size,
            b"Via: SIP/2.0/UDP h" + b";a=b" * (size // 4) + b" x",
            b"Via: SIP/2.0/UDP h" + b";branch" * (size // 7) + b"=1",
            b"Via: SIP/2.0/UDP " + b"a" * size + b":",
            b"X-A: b\r\n" * (size // 8),
            b"X-A: b" + b"\r\n c" * (size // 4),
        ]
        for header in cases:
            data = _request(header.rstrip(b"\r\n") + b"\r\n")
            self.assertLessEqual(len(data), DEFAULT_LIMITS.maxMessageSize)
            exercise(data, Limits(maxMessageSize=DEFAULT_LIMITS.maxMessageSize, maxHeaderCount=2**16,
                                  maxHeaderLineLength=2**16, maxBodySize=2**16))  # fmt: skip
            exercise(data)

    def test_framerScansEachOctetBoundedTimes(self) -> None:
        """
        Fed one octet at a time, the framer examines each octet of the
        header section a bounded number of times, not once per chunk.
        """
        message = _request(b"X-A: b\r\n" * 2000)
        framer = StreamFramer(_BIG)
        out: list[bytes] = []
        for i in range(len(message)):
            out.extend(framer.feed(message[i : i + 1]))
        self.assertEqual(out, [message])
        self.assertLessEqual(framer.scannedBytes, 4 * len(message))
        self.assertGreaterEqual(framer.scannedBytes, len(message) - 4)

    def test_framerManyKeepAlives(self) -> None:
        """
        A flood of CRLFs between messages is consumed as it arrives.
        """
        framer = StreamFramer()
        for _ in range(5000):
            self.assertEqual(framer.feed(b"\r\n\r\n"), [])
        self.assertEqual(framer.keepAlives, 5000)
        self.assertEqual(framer.buffered, 0)
