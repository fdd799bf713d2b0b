"""
Tests for L{sipxmpp.xmpp.jids}: JIDs without stringprep where it would only
lower-case them.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID, InvalidFormat

from sipxmpp.xmpp.jids import parseJID, withResource

# JID-like text: mostly the characters the fast path takes, some it leaves
# to stringprep (non-ASCII letters and spaces, marks nodeprep or nameprep
# refuse, control characters resourceprep refuses).
_JID_CHARS = st.sampled_from(
    list("abcXYZ019._+-@/ ~") + ["..", "-.", ".-", "&", "\u00c9", "\u00df", "\u0130", "\u200b",
                                 "\u00a0", "\x00", "\x7f", "\t", "\uff21"]
)


def _parts(jid: JID) -> tuple[str | None, str, str | None]:
    return (jid.user, jid.host, jid.resource)


def _parsed(parse: object, text: str) -> object:
    try:
        return _parts(parse(text))  # type: ignore[operator]
    except (InvalidFormat, UnicodeError, IndexError, RuntimeError) as e:
        # IndexError: twisted.words' nameprep on an empty label;
        # RuntimeError: its answer to an empty text.
        return type(e)


class ParseJIDTests(SynchronousTestCase):
    def test_plain(self) -> None:
        """
        A plain ASCII JID: node and domain lower-cased, the resource kept,
        and the result equal to twisted.words' (hash included).
        """
        jid = parseJID("Alice.B+x@Example.TEST/Sip XMPP-1/a@b")
        self.assertEqual(_parts(jid), ("alice.b+x", "example.test", "Sip XMPP-1/a@b"))
        self.assertEqual(jid, JID("Alice.B+x@Example.TEST/Sip XMPP-1/a@b"))
        self.assertEqual(hash(jid), hash(JID("alice.b+x@example.test/Sip XMPP-1/a@b")))
        self.assertEqual(jid.userhostJID(), JID("alice.b+x@example.test"))
        self.assertEqual(_parts(parseJID("bob@example.test")), ("bob", "example.test", None))

    def test_others(self) -> None:
        """
        Anything else goes through twisted.words: prepared, or refused.
        """
        self.assertEqual(_parts(parseJID("\u00c9lise@example.test/r")),
                         ("\u00e9lise", "example.test", "r"))  # fmt: skip
        self.assertEqual(_parts(parseJID("example.test/r")), (None, "example.test", "r"))
        self.assertRaises(InvalidFormat, parseJID, "a b@example.test")
        self.assertRaises(InvalidFormat, parseJID, "alice@example.test/\x00")

    @settings(max_examples=3000, deadline=None)
    @given(st.lists(_JID_CHARS, max_size=14).map("".join))
    def test_asStringprep(self, text: str) -> None:
        """
        The fast path answers exactly as twisted.words does, or fails
        exactly where it fails.
        """
        self.assertEqual(_parsed(parseJID, text), _parsed(JID, text), repr(text))


class WithResourceTests(SynchronousTestCase):
    def test_plain(self) -> None:
        bare = JID("alice@example.test")
        jid = withResource(bare, "SipXMPP gw/1")
        self.assertEqual(_parts(jid), ("alice", "example.test", "SipXMPP gw/1"))
        self.assertEqual(jid, JID(tuple=("alice", "example.test", "SipXMPP gw/1")))

    def test_prepared(self) -> None:
        """
        A resource outside printable ASCII is prepared by twisted.words
        (mapped, or refused).
        """
        bare = JID("alice@example.test")
        self.assertEqual(withResource(bare, "a\u00adb").resource, "ab")
        self.assertRaises(InvalidFormat, withResource, bare, "a\x01")

    @settings(max_examples=1000, deadline=None)
    @given(st.lists(_JID_CHARS, min_size=1, max_size=10).map("".join))
    def test_asStringprep(self, resource: str) -> None:
        bare = JID("alice@example.test")

        def expected(r: str) -> JID:
            return JID(tuple=(bare.user, bare.host, r))

        self.assertEqual(_parsed(lambda r: withResource(bare, r), resource),
                         _parsed(expected, resource), repr(resource))  # fmt: skip
