"""
Tests for L{sipxmpp.sip.wire.dialoginfo}: RFC 4235 bodies as Kamailio and
the RFC write them, and hostile or malformed ones.

The C{KAMAILIO_*} bodies are what Kamailio 5.6's pua_dialoginfo publishes
(C{build_dialoginfo} in C{dialog_publish.c}, printed by libxml2's
C{xmlDocDumpFormatMemory}) for one call from alice to bob: version 0,
full state, one dialog whose id is its Call-ID, tags only while early,
C{Trying} capitalised. The C{BILLION_LAUGHS} and C{XXE} bodies are the
classic attacks; neither may expand.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.dialoginfo import Dialog, DialogInfo, parseDialogInfo
from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.xmlbody import XMLBodyError

CALL_ID = "2b5a1f4c-61e8-4a71-b0c2-3c1d2a0e9f17"

KAMAILIO_TRYING = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:alice@example.test">
  <dialog id="2b5a1f4c-61e8-4a71-b0c2-3c1d2a0e9f17" call-id="2b5a1f4c-61e8-4a71-b0c2-3c1d2a0e9f17" direction="initiator">
    <state>Trying</state>
    <remote>
      <identity>sip:bob@example.test</identity>
      <target uri="sip:bob@example.test"/>
    </remote>
    <local>
      <identity>sip:alice@example.test</identity>
      <target uri="sip:alice@127.0.0.1:5072"/>
    </local>
  </dialog>
</dialog-info>
"""

KAMAILIO_EARLY_CALLEE = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:bob@example.test">
  <dialog id="2b5a1f4c-61e8-4a71-b0c2-3c1d2a0e9f17" call-id="2b5a1f4c-61e8-4a71-b0c2-3c1d2a0e9f17" local-tag="7c4e2bd1" remote-tag="as6fa2c9b0" direction="recipient">
    <state>early</state>
    <remote>
      <identity>sip:alice@example.test</identity>
      <target uri="sip:alice@127.0.0.1:5072"/>
    </remote>
    <local>
      <identity>sip:bob@example.test</identity>
      <target uri="sip:bob@127.0.0.1:5074"/>
    </local>
  </dialog>
</dialog-info>
"""

KAMAILIO_CONFIRMED_CALLEE = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:bob@example.test">
  <dialog id="2b5a1f4c-61e8-4a71-b0c2-3c1d2a0e9f17" call-id="2b5a1f4c-61e8-4a71-b0c2-3c1d2a0e9f17" direction="recipient">
    <state>confirmed</state>
    <remote>
      <identity>sip:alice@example.test</identity>
      <target uri="sip:alice@127.0.0.1:5072"/>
    </remote>
    <local>
      <identity>sip:bob@example.test</identity>
      <target uri="sip:bob@example.test"/>
    </local>
  </dialog>
</dialog-info>
"""

KAMAILIO_TERMINATED_CALLEE = KAMAILIO_CONFIRMED_CALLEE.replace(
    b"<state>confirmed</state>", b"<state>terminated</state>"
)

# RFC 4235 §4.4, the sample notification body (it has no entity).
RFC4235_SAMPLE = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="urn:ietf:params:xml:ns:dialog-info"
  version="1" state="full">
  <dialog id="123456">
    <state>confirmed</state>
    <duration>274</duration>
    <local>
      <identity display="Alice">sip:alice@example.com</identity>
      <target uri="sip:alice@pc33.example.com"></target>
    </local>
    <remote>
      <identity display="Bob">sip:bob@example.org</identity>
      <target uri="sip:bobster@phone21.example.org"/>
    </remote>
  </dialog>
</dialog-info>
"""

# RFC 4235 §4.1: a partial update ending a dialog, with why.
RFC4235_REJECTED = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"
             version="4" state="partial" entity="sip:alice@example.com">
  <dialog id="as7d900as8" call-id="a84b4c76e66710" local-tag="1928301774"
          direction="initiator">
    <state event="rejected" code="486">terminated</state>
  </dialog>
</dialog-info>
"""

# A call on hold: the local target does not render the media.
HELD = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="7" state="full"
             entity="sip:alice@example.com">
  <dialog id="d1" call-id="c1" direction="recipient">
    <state>confirmed</state>
    <local>
      <target uri="sip:alice@pc33.example.com">
        <param pname="isfocus" pval="false"/>
        <param pname="+sip.rendering" pval="no"/>
      </target>
    </local>
    <remote>
      <target uri="sip:bob@example.org">
        <param pname="+sip.rendering" pval="yes"/>
      </target>
    </remote>
  </dialog>
</dialog-info>
"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full"
             entity="sip:alice@example.test">
  <dialog id="&lol9;"><state>confirmed</state></dialog>
</dialog-info>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE dialog-info [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full"
             entity="sip:alice@example.test">
  <dialog id="d1" call-id="&xxe;"><state>confirmed</state></dialog>
</dialog-info>
"""


def document(dialogs: str, attributes: str = 'version="0" state="full"') -> bytes:
    return (
        f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" {attributes}>'
        f"{dialogs}</dialog-info>"
    ).encode()


class KamailioTests(SynchronousTestCase):
    """
    What pua_dialoginfo publishes during one call.
    """

    def test_trying(self) -> None:
        info = parseDialogInfo(KAMAILIO_TRYING)
        self.assertEqual(info, DialogInfo(0, True, "sip:alice@example.test", (
            Dialog(CALL_ID, "trying", callID=CALL_ID, direction="initiator"),
        )))  # fmt: skip
        self.assertTrue(info.dialogs[0].early)
        self.assertTrue(info.dialogs[0].outgoing)

    def test_earlyCarriesTags(self) -> None:
        (dialog,) = parseDialogInfo(KAMAILIO_EARLY_CALLEE).dialogs
        self.assertEqual((dialog.state, dialog.localTag, dialog.remoteTag, dialog.direction),
                         ("early", "7c4e2bd1", "as6fa2c9b0", "recipient"))  # fmt: skip
        self.assertTrue(dialog.early)
        self.assertFalse(dialog.outgoing)

    def test_confirmedAndTerminatedWithoutTags(self) -> None:
        """
        The later reports name the dialog by id and Call-ID only, the same
        as the early one did.
        """
        early = parseDialogInfo(KAMAILIO_EARLY_CALLEE).dialogs[0]
        for body, state in ((KAMAILIO_CONFIRMED_CALLEE, "confirmed"),
                            (KAMAILIO_TERMINATED_CALLEE, "terminated")):
            (dialog,) = parseDialogInfo(body).dialogs
            self.assertEqual(dialog.state, state)
            self.assertEqual((dialog.localTag, dialog.remoteTag), (None, None))
            self.assertEqual((dialog.id, dialog.callID), (early.id, early.callID))
            self.assertFalse(dialog.early)
            self.assertIsNone(dialog.localRendering)

    def test_statesAnyCase(self) -> None:
        for spelled in ("CONFIRMED", "Confirmed", " confirmed\n  "):
            body = document(f'<dialog id="d"><state>{spelled}</state></dialog>')
            self.assertEqual(parseDialogInfo(body).dialogs[0].state, "confirmed")


class RFCTests(SynchronousTestCase):
    def test_sampleWithoutEntity(self) -> None:
        info = parseDialogInfo(RFC4235_SAMPLE)
        self.assertEqual((info.version, info.full, info.entity), (1, True, None))
        (dialog,) = info.dialogs
        self.assertEqual(dialog, Dialog("123456", "confirmed"))

    def test_partialWithEventAndCode(self) -> None:
        info = parseDialogInfo(RFC4235_REJECTED)
        self.assertFalse(info.full)
        self.assertEqual(info.version, 4)
        self.assertEqual(info.dialogs, (Dialog(
            "as7d900as8", "terminated", callID="a84b4c76e66710", localTag="1928301774",
            direction="initiator", event="rejected", code=486,
        ),))  # fmt: skip

    def test_heldByLocalRendering(self) -> None:
        """
        Only the local target's C{+sip.rendering} is read: the remote's
        "yes" does not hide the local "no".
        """
        (dialog,) = parseDialogInfo(HELD).dialogs
        self.assertIs(dialog.localRendering, False)

    def test_renderingValues(self) -> None:
        def rendering(pval: str) -> bool | None:
            body = document(
                '<dialog id="d"><state>confirmed</state><local><target uri="sip:a@b">'
                f'<param pname="+SIP.Rendering" pval="{pval}"/></target></local></dialog>'
            )
            return parseDialogInfo(body).dialogs[0].localRendering

        self.assertIs(rendering("no"), False)
        self.assertIs(rendering("false"), False)
        self.assertIs(rendering("YES"), True)
        self.assertIsNone(rendering("unknown"))

    def test_severalDialogsAndNone(self) -> None:
        info = parseDialogInfo(document(
            '<dialog id="a"><state>confirmed</state></dialog>'
            '<dialog id="b" direction="sideways"><state>proceeding</state></dialog>'
        ))  # fmt: skip
        self.assertEqual([(d.id, d.state, d.direction) for d in info.dialogs],
                         [("a", "confirmed", None), ("b", "proceeding", None)])  # fmt: skip
        self.assertEqual(parseDialogInfo(document("")).dialogs, ())


class HostileTests(SynchronousTestCase):
    """
    Attacks and garbage: one L{XMLBodyError} (a 400 L{SIPParseError}) each,
    nothing expanded or fetched.
    """

    def assertRefused(self, body: bytes, reason: str) -> XMLBodyError:
        error = self.assertRaises(XMLBodyError, parseDialogInfo, body)
        self.assertIsInstance(error, SIPParseError)
        self.assertEqual(error.code, 400)
        self.assertIn(reason, error.reason)
        self.assertNotIn("\n", error.reason)
        return error

    def test_billionLaughs(self) -> None:
        error = self.assertRefused(BILLION_LAUGHS, "a DTD is not allowed")
        self.assertNotIn("lollol", str(error))

    def test_xxe(self) -> None:
        error = self.assertRefused(XXE, "a DTD is not allowed")
        self.assertNotIn("root:", str(error))

    def test_malformed(self) -> None:
        self.assertRefused(b"<dialog-info", "malformed XML")
        self.assertRefused(b"", "malformed XML")
        self.assertRefused(KAMAILIO_TRYING[:-30], "malformed XML")
        self.assertRefused(b'<?xml version="1.0" encoding="x-no-such"?><a/>', "unreadable XML")

    def test_wrongRoot(self) -> None:
        self.assertRefused(b'<dialog-info version="0" state="full"/>', "root element")
        self.assertRefused(b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="a"/>',
                           "root element")  # fmt: skip
        error = self.assertRefused(
            b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info&#10;x" version="0"'
            b' state="full"/>',
            "root element",
        )
        self.assertNotIn("\n", str(error))

    def test_documentAttributes(self) -> None:
        self.assertRefused(document("", 'state="full"'), "without version")
        self.assertRefused(document("", 'version="-1" state="full"'), "not a number")
        self.assertRefused(document("", f'version="{"9" * 21}" state="full"'), "not a number")
        self.assertRefused(document("", 'version="0"'), "without state")
        self.assertRefused(document("", 'version="0" state="some"'), "neither full nor partial")

    def test_dialogs(self) -> None:
        self.assertRefused(document("<dialog><state>early</state></dialog>"), "without id")
        self.assertRefused(document('<dialog id="d"/>'), "0 states")
        self.assertRefused(document('<dialog id="d"><state>early</state><state>early</state>'
                                    "</dialog>"), "2 states")  # fmt: skip
        self.assertRefused(document('<dialog id="d"><state>ringing</state></dialog>'),
                           "unknown state 'ringing'")  # fmt: skip
        self.assertRefused(document('<dialog id="d"><state code="4860">terminated</state>'
                                    "</dialog>"), "bad code")  # fmt: skip
