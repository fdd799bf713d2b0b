"""
Tests for L{sipxmpp.store.keyfile}: the key file and the secret cipher.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.store.errors import KeyFileError, KeyFileExists, SecretUnreadable, WrongKey
from sipxmpp.store.keyfile import SecretBox, createKeyFile, loadKeyFile

ALICE = "sip:alice@example.test"


class KeyFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        self.path = os.path.join(self.folder, "sub", "secret.key")

    def test_createAndLoad(self) -> None:
        """
        A created key file is 0600 whatever the umask, and loads the same
        key.
        """
        old = os.umask(0)
        try:
            box = createKeyFile(self.path)
        finally:
            os.umask(old)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.dirname(self.path)).st_mode & 0o777, 0o700)
        sealed = box.encrypt(ALICE, "pw")
        self.assertEqual(loadKeyFile(self.path).decrypt(ALICE, sealed), "pw")

    def test_neverOverwrites(self) -> None:
        createKeyFile(self.path)
        with open(self.path, "rb") as f:
            before = f.read()
        e = self.assertRaises(KeyFileExists, createKeyFile, self.path)
        self.assertIn("refusing to overwrite", str(e))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_missing(self) -> None:
        e = self.assertRaises(KeyFileError, loadKeyFile, self.path)
        self.assertIn("does not exist (create it with 'sipxmpp-admin init')", str(e))

    def test_worldReadableRefused(self) -> None:
        createKeyFile(self.path)
        os.chmod(self.path, 0o644)
        e = self.assertRaises(KeyFileError, loadKeyFile, self.path)
        self.assertIn("accessible to other users (mode 0644)", str(e))
        os.chmod(self.path, 0o640)
        loadKeyFile(self.path)

    def test_malformed(self) -> None:
        os.makedirs(os.path.dirname(self.path))
        for content, message in (
            (b"hello\n", "not a sipxmpp key file"),
            (b"sipxmpp-key-v1:AAAA\n", "the key is damaged"),
            (b"sipxmpp-key-v1:!!!\n", "the key is damaged"),
            (b"\xff\xfe", "not ASCII"),
        ):
            with open(self.path, "wb") as f:
                f.write(content)
            os.chmod(self.path, 0o600)
            e = self.assertRaises(KeyFileError, loadKeyFile, self.path)
            self.assertIn(message, str(e))

    def test_keyNeverInRepr(self) -> None:
        box = createKeyFile(self.path)
        with open(self.path) as f:
            encoded = f.read().strip().split(":", 1)[1]
        self.assertNotIn(encoded, repr(box))
        self.assertIn(self.path, repr(box))


class SecretBoxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.box = SecretBox(b"k" * 32)

    def test_nonceMakesCiphertextsDiffer(self) -> None:
        self.assertNotEqual(self.box.encrypt(ALICE, "pw"), self.box.encrypt(ALICE, "pw"))

    def test_boundToAoR(self) -> None:
        sealed = self.box.encrypt(ALICE, "pw")
        e = self.assertRaises(SecretUnreadable, self.box.decrypt, "sip:bob@example.test", sealed)
        self.assertNotIn("pw", str(e).replace("copied", ""))

    def test_tampered(self) -> None:
        sealed = bytearray(self.box.encrypt(ALICE, "pw"))
        sealed[-1] ^= 1
        self.assertRaises(SecretUnreadable, self.box.decrypt, ALICE, bytes(sealed))
        self.assertRaises(SecretUnreadable, self.box.decrypt, ALICE, b"\x01short")

    def test_keyCheck(self) -> None:
        check = self.box.keyCheck()
        self.box.verifyKeyCheck(check)
        e = self.assertRaises(WrongKey, SecretBox(b"x" * 32, "/etc/k").verifyKeyCheck, check)
        self.assertIn("/etc/k is not the key this store was initialised with", str(e))

    def test_keyLength(self) -> None:
        self.assertRaises(KeyFileError, SecretBox, b"short")
