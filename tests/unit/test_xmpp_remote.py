"""
Tests for L{sipxmpp.xmpp.remote}: the XEP-0050/XEP-0146 client, against the
behaviours of real clients (Psi, Tkabber, mcabber, old Gajim).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID

from sipxmpp.xmpp.remote import (
    NODE_LEGACY_GAJIM,
    NODE_SET_STATUS,
    CommandFailed,
    CommandTimeout,
    NotOwnResource,
    RemoteControl,
    RemoteStatus,
)
from tests.unit.xmppstreams import (
    NS_COMMANDS,
    FakeSession,
    child,
    commandAnswer,
    formValues,
    itemsAnswer,
    rcForm,
)

PSI = JID("alice@example.test/psi")
MCABBER = JID("alice@example.test/mcabber")

# What mcabber 1.1.2 sends (as its xmpp_iq.c builds it): the command list
# in the commands namespace, ...
MCABBER_ITEMS = (
    "<query xmlns='http://jabber.org/protocol/commands' node='http://jabber.org/protocol/commands'>"
    "<item node='http://jabber.org/protocol/rc#set-status' name='Change client status'"
    " jid='alice@example.test/mcabber'/>"
    "<item node='http://jabber.org/protocol/rc#leave-groupchats' name='Leave groupchat(s)'"
    " jid='alice@example.test/mcabber'/></query>"
)
# ... a set-status form with no priority and no current message, ...
MCABBER_FORM = (
    "<command node='http://jabber.org/protocol/rc#set-status'"
    " xmlns='http://jabber.org/protocol/commands' sessionid='set-status-1' status='executing'>"
    "<x type='form' xmlns='jabber:x:data'><title>Change Status</title>"
    "<instructions>Choose the status and status message</instructions>"
    "<field type='hidden' var='FORM_TYPE'><value>http://jabber.org/protocol/rc</value></field>"
    "<field type='list-single' var='status' label='Status'><required/><value>{status}</value>"
    "<option label='Offline'><value>offline</value></option>"
    "<option label='Online'><value>online</value></option>"
    "<option label='Chat'><value>chat</value></option>"
    "<option label='Do not disturb'><value>dnd</value></option>"
    "<option label='Extended away'><value>xa</value></option>"
    "<option label='Away'><value>away</value></option></field>"
    "<field type='text-multi' var='status-message' label='Message'/></x></command>"
)
# ... and its answer to the submitted form.
MCABBER_DONE = (
    "<command node='http://jabber.org/protocol/rc#set-status'"
    " xmlns='http://jabber.org/protocol/commands' status='completed' sessionid='set-status-1'>"
    "<x type='result' xmlns='jabber:x:data'><field type='text-single' var='message'>"
    "<value>Status has been changed</value></field></x></command>"
)


class RemoteControlTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.session = FakeSession(self.clock)
        self.session.connect()
        self.remote = RemoteControl(self.session.jid, self.session.sendRequest, self.clock, 10)

    def executeSent(self, node: str = NODE_SET_STATUS) -> object:
        [iq] = self.session.iqs()
        self.assertEqual((iq["type"], iq["to"]), ("set", PSI.full()))
        command = child(iq, "command", NS_COMMANDS)
        assert command is not None
        self.assertEqual((command["node"], command.getAttribute("action")), (node, "execute"))
        return iq

    def test_commands(self) -> None:
        d = self.remote.commands(PSI)
        [iq] = self.session.iqs()
        self.assertEqual((iq["type"], iq["to"]), ("get", PSI.full()))
        query = child(iq, "query", "http://jabber.org/protocol/disco#items")
        assert query is not None
        self.assertEqual(query["node"], NS_COMMANDS)
        self.session.answer(iq, itemsAnswer(PSI.full(), [NODE_SET_STATUS, "other"]))
        self.assertEqual(self.successResultOf(d), frozenset([NODE_SET_STATUS, "other"]))

    def test_mcabberCommands(self) -> None:
        """
        mcabber 1.1.2 answers the command list in the commands namespace:
        read as the items it lists (the request went to the user's own
        resource only).
        """
        d = self.remote.commands(MCABBER)
        [iq] = self.session.iqs()
        self.session.answer(iq, MCABBER_ITEMS)
        self.assertEqual(self.successResultOf(d), frozenset([
            NODE_SET_STATUS, "http://jabber.org/protocol/rc#leave-groupchats"]))  # fmt: skip

    def test_mcabberSetAndRestore(self) -> None:
        """
        mcabber's form shows no message: the one from its last presence
        (C{current}) is what setStatus returns, and what restoring puts
        back.
        """
        d = self.remote.setStatus(MCABBER, NODE_SET_STATUS, "dnd", "On the phone",
                                  current=RemoteStatus("away", 0, "at lunch"))  # fmt: skip
        [iq] = self.session.iqs()
        self.session.answer(iq, MCABBER_FORM.format(status="away"))
        [submit] = self.session.iqs()
        command = child(submit, "command", NS_COMMANDS)
        assert command is not None
        self.assertEqual(command["sessionid"], "set-status-1")
        values = formValues(command)
        self.assertEqual((values["status"], values["status-message"]), (["dnd"], ["On the phone"]))
        self.session.answer(submit, MCABBER_DONE)
        saved = self.successResultOf(d)
        self.assertEqual(saved, RemoteStatus("away", 0, "at lunch"))

        d2 = self.remote.restoreStatus(MCABBER, NODE_SET_STATUS, saved)
        [iq] = self.session.iqs()
        self.session.answer(iq, MCABBER_FORM.format(status="dnd"))
        [submit] = self.session.iqs()
        command = child(submit, "command", NS_COMMANDS)
        assert command is not None
        values = formValues(command)
        self.assertEqual((values["status"], values["status-message"]), (["away"], ["at lunch"]))
        self.session.answer(submit, MCABBER_DONE)
        self.successResultOf(d2)

    def test_emptyMessageValueIsTheClients(self) -> None:
        """
        A form with an empty message value shows the client's message: it
        is empty, whatever its presence said before.
        """
        d = self.remote.setStatus(PSI, NODE_SET_STATUS, "dnd", "x",
                                  current=RemoteStatus("online", 5, "stale"))  # fmt: skip
        iq = self.executeSent()
        self.session.answer(iq, commandAnswer(NODE_SET_STATUS, "executing",
                                              body=rcForm(message="")))  # fmt: skip
        [submit] = self.session.iqs()
        self.session.answer(submit, commandAnswer(NODE_SET_STATUS, "completed"))
        self.assertEqual(self.successResultOf(d).message, "")

    def test_discoInfo(self) -> None:
        d = self.remote.discoInfo(PSI, "http://psi-plus.com#abc")
        [iq] = self.session.discoInfos()
        query = child(iq, "query", "http://jabber.org/protocol/disco#info")
        assert query is not None
        self.assertEqual((iq["type"], iq["to"], query["node"]),
                         ("get", PSI.full(), "http://psi-plus.com#abc"))  # fmt: skip
        self.session.answer(iq, "<query xmlns='http://jabber.org/protocol/disco#info'>"
                                "<feature var='x'/></query>")  # fmt: skip
        self.assertEqual(self.successResultOf(d).name, "query")
        self.failureResultOf(self.remote.discoInfo(JID("bob@example.test/psi"), None),
                             NotOwnResource)  # fmt: skip

    def test_commandsError(self) -> None:
        """
        A client that answers disco#items with an error offers no command.
        """
        d = self.remote.commands(PSI)
        [iq] = self.session.iqs()
        self.session.answer(
            iq,
            "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            kind="error",
        )
        self.assertEqual(self.successResultOf(d), frozenset())

    def test_psiStyle(self) -> None:
        """
        Psi answers C{executing} without a sessionid: the submitted form
        carries no sessionid, and always the current priority.
        """
        d = self.remote.setStatus(PSI, NODE_SET_STATUS, "dnd", "On the phone")
        iq = self.executeSent()
        self.session.answer(iq, commandAnswer(NODE_SET_STATUS, "executing", body=rcForm()))
        [submit] = self.session.iqs()
        command = child(submit, "command", NS_COMMANDS)
        assert command is not None
        self.assertIsNone(command.getAttribute("sessionid"))
        self.assertEqual(
            formValues(command),
            {
                "FORM_TYPE": ["http://jabber.org/protocol/rc"],
                "status": ["dnd"],
                "status-priority": ["5"],
                "status-message": ["On the phone"],
            },
        )
        self.assertNoResult(d)
        self.session.answer(submit, commandAnswer(NODE_SET_STATUS, "completed"))
        self.assertEqual(self.successResultOf(d), RemoteStatus("online", 5, "working"))

    def test_tkabberStyle(self) -> None:
        """
        A client that gives a sessionid gets it back with the form.
        """
        d = self.remote.setStatus(PSI, NODE_SET_STATUS, "dnd", "busy")
        iq = self.executeSent()
        self.session.answer(
            iq, commandAnswer(NODE_SET_STATUS, "executing", "s-42", rcForm("away", "-3", "lunch"))
        )
        [submit] = self.session.iqs()
        command = child(submit, "command", NS_COMMANDS)
        assert command is not None
        self.assertEqual(command.getAttribute("sessionid"), "s-42")
        self.assertEqual(formValues(command)["status-priority"], ["-3"])
        self.session.answer(submit, commandAnswer(NODE_SET_STATUS, "completed", "s-42"))
        self.assertEqual(self.successResultOf(d), RemoteStatus("away", -3, "lunch"))

    def test_noPriorityField(self) -> None:
        """
        mcabber's form has no priority: the one known from presence is sent.
        """
        d = self.remote.setStatus(
            PSI, NODE_SET_STATUS, "dnd", "busy", current=RemoteStatus("online", 7, "")
        )
        iq = self.executeSent()
        self.session.answer(iq, commandAnswer(NODE_SET_STATUS, "executing", "m1", rcForm(priority=None)))
        [submit] = self.session.iqs()
        command = child(submit, "command", NS_COMMANDS)
        assert command is not None
        self.assertEqual(formValues(command)["status-priority"], ["7"])
        self.session.answer(submit, commandAnswer(NODE_SET_STATUS, "completed", "m1"))
        self.assertEqual(self.successResultOf(d).priority, 7)

    def test_restore(self) -> None:
        d = self.remote.restoreStatus(PSI, NODE_SET_STATUS, RemoteStatus("away", 3, "lunch\nthen meeting"))
        iq = self.executeSent()
        self.session.answer(iq, commandAnswer(NODE_SET_STATUS, "executing", body=rcForm("dnd", "3", "x")))
        [submit] = self.session.iqs()
        command = child(submit, "command", NS_COMMANDS)
        assert command is not None
        values = formValues(command)
        self.assertEqual(values["status"], ["away"])
        self.assertEqual(values["status-priority"], ["3"])
        self.assertEqual(values["status-message"], ["lunch", "then meeting"])
        self.session.answer(submit, commandAnswer(NODE_SET_STATUS, "completed"))
        self.successResultOf(d)

    def test_legacyGajim(self) -> None:
        """
        Gajim's C{change-status} node takes C{presence-type} and
        C{presence-desc}; the current status comes from presence.
        """
        d = self.remote.setStatus(
            PSI, NODE_LEGACY_GAJIM, "dnd", "call", current=RemoteStatus("xa", 1, "gone")
        )
        iq = self.executeSent(NODE_LEGACY_GAJIM)
        form = (
            "<x xmlns='jabber:x:data' type='form'>"
            "<field var='presence-type' type='list-single'><value>online</value></field>"
            "<field var='presence-desc' type='text-multi'/></x>"
        )
        self.session.answer(iq, commandAnswer(NODE_LEGACY_GAJIM, "executing", "g1", form))
        [submit] = self.session.iqs()
        command = child(submit, "command", NS_COMMANDS)
        assert command is not None
        self.assertEqual(command["sessionid"], "g1")
        self.assertEqual(
            formValues(command), {"presence-type": ["dnd"], "presence-desc": ["call"]}
        )
        self.session.answer(submit, commandAnswer(NODE_LEGACY_GAJIM, "completed", "g1"))
        self.assertEqual(self.successResultOf(d), RemoteStatus("xa", 1, "gone"))

    def test_error(self) -> None:
        d = self.remote.setStatus(PSI, NODE_SET_STATUS, "dnd", "x")
        iq = self.executeSent()
        self.session.answer(
            iq,
            "<error type='cancel'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            kind="error",
        )
        failure = self.failureResultOf(d, CommandFailed)
        self.assertIn("forbidden", str(failure.value))

    def test_canceled(self) -> None:
        d = self.remote.setStatus(PSI, NODE_SET_STATUS, "dnd", "x")
        iq = self.executeSent()
        self.session.answer(iq, commandAnswer(NODE_SET_STATUS, "executing", "c1", rcForm()))
        [submit] = self.session.iqs()
        self.session.answer(submit, commandAnswer(NODE_SET_STATUS, "canceled", "c1"))
        self.assertIn("canceled", str(self.failureResultOf(d, CommandFailed).value))

    def test_completedWithoutForm(self) -> None:
        d = self.remote.setStatus(PSI, NODE_SET_STATUS, "dnd", "x")
        iq = self.executeSent()
        self.session.answer(iq, commandAnswer(NODE_SET_STATUS, "completed"))
        self.failureResultOf(d, CommandFailed)
        self.assertEqual(self.session.iqs(), [])

    def test_timeout(self) -> None:
        """
        No answer within the timeout fails the operation; a client that gave
        a sessionid is told to cancel it.
        """
        d = self.remote.setStatus(PSI, NODE_SET_STATUS, "dnd", "x")
        iq = self.executeSent()
        self.session.answer(iq, commandAnswer(NODE_SET_STATUS, "executing", "t1", rcForm()))
        self.session.iqs()  # the submit, never answered
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.failureResultOf(d, CommandTimeout)
        [cancel] = self.session.iqs()
        command = child(cancel, "command", NS_COMMANDS)
        assert command is not None
        self.assertEqual((command["action"], command["sessionid"]), ("cancel", "t1"))

    def test_timeoutFirstStep(self) -> None:
        d = self.remote.setStatus(PSI, NODE_SET_STATUS, "dnd", "x")
        iq = self.executeSent()
        self.clock.advance(11)
        self.failureResultOf(d, CommandTimeout)
        # A late answer changes nothing and raises nothing.
        self.session.answer(iq, commandAnswer(NODE_SET_STATUS, "executing", body=rcForm()))
        self.assertEqual(self.session.iqs(), [])

    def test_onlyOwnResources(self) -> None:
        """
        Commands go only to other resources of the user's own bare JID:
        another user, a bare JID, another domain or the gateway's own
        resource are refused before anything is sent.
        """
        for target in (
            "bob@example.test/psi",
            "alice@example.test",
            "alice@evil.test/psi",
            "alice@example.test/sipxmpp",
        ):
            self.failureResultOf(
                self.remote.setStatus(JID(target), NODE_SET_STATUS, "dnd", "x"), NotOwnResource
            )
            self.failureResultOf(
                self.remote.restoreStatus(JID(target), NODE_SET_STATUS, RemoteStatus("online", 0, "")),
                NotOwnResource,
            )
            self.failureResultOf(self.remote.commands(JID(target)), NotOwnResource)
        self.assertEqual(self.session.take(), [])

    def test_noOtherGatewayInstance(self) -> None:
        """
        With C{[xmpp] resource} known, another gateway instance's resource
        (C{sipxmpp-gw-b} while this is C{sipxmpp-gw-a}) is never asked for
        its commands nor controlled; the user's clients still are.
        """
        own = JID("alice@example.test/sipxmpp-gw-a")
        remote = RemoteControl(own, self.session.sendRequest, self.clock, 10, "sipxmpp")
        for target in ("alice@example.test/sipxmpp-gw-b", "alice@example.test/sipxmpp"):
            self.failureResultOf(
                remote.setStatus(JID(target), NODE_SET_STATUS, "dnd", "x"), NotOwnResource
            )
            self.failureResultOf(remote.commands(JID(target)), NotOwnResource)
        self.assertEqual(self.session.take(), [])
        remote.commands(PSI)
        [iq] = self.session.iqs()
        self.assertEqual(iq["to"], PSI.full())

    def test_unknownNode(self) -> None:
        self.failureResultOf(self.remote.setStatus(PSI, "other", "dnd", "x"), CommandFailed)
        self.assertEqual(self.session.take(), [])
