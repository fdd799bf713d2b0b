"""
Micro-benchmark: parse + serialize of typical SIP messages, sipxmpp's
sans-IO parser against Twisted's C{twisted.protocols.sip.MessagesParser}.

Run from the repository root::

    .venv/bin/python bench/parse.py [--seconds S]

Bounded in time: each (side, message) pair is timed in C{--rounds} rounds
of about C{--seconds} each (defaults: 3 rounds of 0.4 s, about 8 s in all),
and the best round is kept.  The last line of the output is always::

    parse speed ratio sipxmpp/twisted: R (sipxmpp N msg/s, twisted M msg/s)

where N and M are harmonic means over the three messages (a mixed stream
with one of each).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sipxmpp.sip.wire.headers import parseNameAddrBytes, parseViaBytes
from sipxmpp.sip.wire.parser import parseMessage


def _withLength(head: bytes, body: bytes) -> bytes:
    return head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)) + body


SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendrecv\r\n"
)

INVITE = _withLength(
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.101:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, UPDATE\r\n"
    b"Supported: replaces, timer\r\n"
    b"Session-Expires: 1800\r\n"
    b"User-Agent: ExamplePhone/1.2.3\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n",
    SDP,
)

REGISTER = (
    b"REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.55:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b'Contact: <sip:bob@192.0.2.55:5060>;expires=3600;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"\r\n'
    b"Expires: 3600\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY\r\n"
    b"User-Agent: ExamplePhone/1.2.3\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

OK = _withLength(
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK4b43c2ff8.1;received=203.0.113.7\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.101\r\n"
    b"Record-Route: <sip:203.0.113.7;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4:5060>\r\n"
    b"Supported: replaces, timer\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n",
    SDP.replace(b"alice", b"bob").replace(b"192.0.2.101", b"192.0.2.4"),
)

MESSAGES = (("INVITE+SDP", INVITE), ("REGISTER", REGISTER), ("200 OK+SDP", OK))


def sipxmppOnce(data: bytes) -> bytes:
    """
    Parse a datagram, read what a proxy reads for every message, serialize.
    """
    # As for a message seen the first time: the same bytes again and again
    # would otherwise find their From, To and Via in the parsers' memos.
    parseNameAddrBytes.cache_clear()
    parseViaBytes.cache_clear()
    message = parseMessage(data)
    via = message.topVia
    via.branch  # noqa: B018
    via.sentBy  # noqa: B018
    message.callID  # noqa: B018
    message.cseq  # noqa: B018
    message.fromTag  # noqa: B018
    message.toTag  # noqa: B018
    return message.toBytes()


def _twistedParser() -> Callable[[bytes], bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from twisted.protocols import sip

    received: list[sip.Message] = []
    parser = sip.MessagesParser(received.append)

    def twistedOnce(data: bytes) -> bytes:
        parser.dataReceived(data)
        parser.dataDone()
        message = received.pop()
        return message.toString().encode("utf-8")  # type: ignore[no-any-return]

    return twistedOnce


def _twistedWithFields() -> Callable[[bytes], bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from twisted.protocols import sip

    received: list[sip.Message] = []
    parser = sip.MessagesParser(received.append)

    def twistedFieldsOnce(data: bytes) -> bytes:
        parser.dataReceived(data)
        parser.dataDone()
        message = received.pop()
        headers = message.headers
        via = sip.parseViaHeader(headers["via"][0])
        via.branch  # noqa: B018
        headers["call-id"][0]
        headers["cseq"][0].split()
        sip.parseAddress(headers["from"][0])[2].get("tag")
        sip.parseAddress(headers["to"][0])[2].get("tag")
        return message.toString().encode("utf-8")  # type: ignore[no-any-return]

    return twistedFieldsOnce


def rate(function: Callable[[bytes], bytes], data: bytes, seconds: float, rounds: int) -> float:
    """
    Best messages per second of C{function(data)} over C{rounds} rounds.
    """
    count = 1
    while True:  # calibrate: how many calls take about a tenth of a round
        start = time.perf_counter()
        for _ in range(count):
            function(data)
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 10:
            break
        count *= 2
    count = max(1, int(count * seconds / elapsed))
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            function(data)
        best = max(best, count / (time.perf_counter() - start))
    return best


def harmonic(values: list[float]) -> float:
    """
    Rate of a mixed stream with one message of each kind.
    """
    return len(values) / sum(1 / v for v in values)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--seconds", type=float, default=0.4, help="length of one round")
    options.add_argument("--rounds", type=int, default=3, help="rounds per measurement")
    args = options.parse_args()

    twistedOnce = _twistedParser()
    twistedFields = _twistedWithFields()
    for name, data in MESSAGES:
        # Both sides must handle every message, and ours must round-trip it.
        assert sipxmppOnce(data) == data, name
        twistedOnce(data)
        twistedFields(data)

    print("sipxmpp: parseMessage(datagram) + top Via branch/sent-by, Call-ID, CSeq,")
    print("         From/To tags (Via, From, To, Call-ID, CSeq, Max-Forwards validated) + toBytes()")
    print("twisted: MessagesParser.dataReceived + dataDone (headers split into a dict,")
    print("         Request-URI parsed) + Message.toString().encode()")
    print("twisted+fields: the same plus parseViaHeader and parseAddress for the same fields")
    print(f"{'message':<12} {'bytes':>6} {'sipxmpp/s':>11} {'twisted/s':>11} {'tw+fields/s':>12} {'ratio':>6}")
    ours: list[float] = []
    theirs: list[float] = []
    for name, data in MESSAGES:
        a = rate(sipxmppOnce, data, args.seconds, args.rounds)
        b = rate(twistedOnce, data, args.seconds, args.rounds)
        c = rate(twistedFields, data, args.seconds, args.rounds)
        ours.append(a)
        theirs.append(b)
        print(f"{name:<12} {len(data):>6} {a:>11.0f} {b:>11.0f} {c:>12.0f} {a / b:>6.2f}")
    n, m = harmonic(ours), harmonic(theirs)
    print(f"parse speed ratio sipxmpp/twisted: {n / m:.2f} (sipxmpp {n:.0f} msg/s, twisted {m:.0f} msg/s)")


if __name__ == "__main__":
    main()
