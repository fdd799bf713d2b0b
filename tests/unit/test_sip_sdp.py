"""
Tests for L{sipxmpp.sip.wire.sdp.isHold}.
"""

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.sdp import isHold

HEAD = b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"
AUDIO = b"m=audio 6000 RTP/AVP 0\r\n"
VIDEO = b"m=video 6002 RTP/AVP 96\r\n"
C = b"c=IN IP4 127.0.0.1\r\n"


class IsHoldTests(SynchronousTestCase):
    def test_activeByDefault(self) -> None:
        self.assertIs(isHold(HEAD + C + AUDIO), False)
        self.assertIs(isHold(HEAD + C + AUDIO + b"a=sendrecv\r\n"), False)
        self.assertIs(isHold(HEAD + C + AUDIO + b"a=recvonly\r\n"), False)

    def test_mediaLevelHold(self) -> None:
        self.assertIs(isHold(HEAD + C + AUDIO + b"a=sendonly\r\n"), True)
        self.assertIs(isHold(HEAD + C + AUDIO + b"a=inactive\r\n"), True)

    def test_sessionLevelAppliesUnlessOverridden(self) -> None:
        self.assertIs(isHold(HEAD + C + b"a=sendonly\r\n" + AUDIO), True)
        self.assertIs(isHold(HEAD + C + b"a=inactive\r\n" + AUDIO + b"a=sendrecv\r\n"), False)

    def test_allStreamsMustBeHeld(self) -> None:
        body = HEAD + C + AUDIO + b"a=sendonly\r\n" + VIDEO + b"a=sendrecv\r\n"
        self.assertIs(isHold(body), False)
        body = HEAD + C + AUDIO + b"a=sendonly\r\n" + b"m=video 0 RTP/AVP 96\r\n"
        self.assertIs(isHold(body), True)

    def test_rfc2543ZeroAddress(self) -> None:
        self.assertIs(isHold(HEAD + b"c=IN IP4 0.0.0.0\r\n" + AUDIO), True)
        self.assertIs(isHold(HEAD + C + AUDIO + b"c=IN IP4 0.0.0.0\r\n"), True)

    def test_notSDP(self) -> None:
        self.assertIsNone(isHold(b""))
        self.assertIsNone(isHold(b"hello\r\nworld"))
        self.assertIsNone(isHold(HEAD + b"m=audio 0 RTP/AVP 0\r\n"))
        self.assertIsNone(isHold(HEAD + b"m=audio\r\n"))

    def test_bareLF(self) -> None:
        self.assertIs(isHold((HEAD + C + AUDIO + b"a=inactive\r\n").replace(b"\r\n", b"\n")), True)
