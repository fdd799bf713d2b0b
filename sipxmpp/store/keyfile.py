"""
The key that encrypts account secrets at rest, kept in its own file
(C{[store] key_file}), and the cipher built from it.

The file holds one line: C{sipxmpp-key-v1:} and 32 random bytes in
URL-safe base64. It is created with mode 0600 and never overwritten.
Secrets are encrypted with AES-256-GCM under a fresh 96-bit nonce, with the
account's AoR as associated data: a ciphertext copied into another
account's row does not decrypt. A known plaintext encrypted under the key
(the I{key check}) is kept in the database, so a store opened with another
key says so at once instead of failing at the first login.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sipxmpp.store.errors import KeyFileError, KeyFileExists, SecretUnreadable, WrongKey

__all__ = ["SecretBox", "createKeyFile", "loadKeyFile"]

_PREFIX = "sipxmpp-key-v1:"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = b"\x01"
_SECRET_AD = b"sipxmpp account secret v1\x00"
_CHECK_AD = b"sipxmpp key check v1"
_CHECK_PLAINTEXT = b"sipxmpp key check"


class SecretBox:
    """
    Encrypts and decrypts account secrets with the key of a key file.

    Its C{repr()} never shows the key.
    """

    __slots__ = ("_aead", "path")

    def __init__(self, key: bytes, path: str = "<memory>") -> None:
        if len(key) != _KEY_BYTES:
            raise KeyFileError(f"{path}: the key must be {_KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self.path = path

    def __repr__(self) -> str:
        return f"<SecretBox key_file={self.path!r}>"

    def _seal(self, plaintext: bytes, ad: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, ad)

    def _open(self, sealed: bytes, ad: bytes) -> bytes:
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise InvalidTag()
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], ad)

    def encrypt(self, aor: str, secret: str) -> bytes:
        """
        Return C{secret} encrypted for the account of C{aor}.
        """
        return self._seal(secret.encode("utf-8"), _SECRET_AD + aor.encode("utf-8"))

    def decrypt(self, aor: str, sealed: bytes) -> str:
        """
        Return the secret of the account of C{aor}.

        @raise SecretUnreadable: if C{sealed} was not encrypted for C{aor}
            under this key, or was altered.
        """
        try:
            return self._open(bytes(sealed), _SECRET_AD + aor.encode("utf-8")).decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            raise SecretUnreadable(
                f"the stored secret of {aor} cannot be decrypted: it was altered, copied "
                "from another account, or encrypted with another key"
            ) from None

    def keyCheck(self) -> bytes:
        """
        Return a new key check value to keep in the database.
        """
        return self._seal(_CHECK_PLAINTEXT, _CHECK_AD)

    def verifyKeyCheck(self, value: bytes) -> None:
        """
        @raise WrongKey: if C{value} was made with another key.
        """
        try:
            ok = self._open(bytes(value), _CHECK_AD) == _CHECK_PLAINTEXT
        except InvalidTag:
            ok = False
        if not ok:
            raise WrongKey(
                f"the key file {self.path} is not the key this store was initialised "
                "with (key check failed); use the original key file"
            )


def _parseKey(path: str, text: str) -> bytes:
    line = text.strip()
    if not line.startswith(_PREFIX):
        raise KeyFileError(
            f"{path}: not a sipxmpp key file (expected one line starting with "
            f"{_PREFIX!r}, as written by 'sipxmpp-admin init')"
        )
    try:
        key = base64.urlsafe_b64decode(line[len(_PREFIX) :].encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        key = b""
    if len(key) != _KEY_BYTES:
        raise KeyFileError(f"{path}: the key is damaged (expected {_KEY_BYTES} bytes in base64)")
    return key


def loadKeyFile(path: str) -> SecretBox:
    """
    Read the key file at C{path}.

    @raise KeyFileError: if it is missing, unreadable, malformed, or
        readable or writable by other users (group access is allowed, for a
        service user in the file's group).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: the key file does not exist (create it with 'sipxmpp-admin init')"
        ) from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot open the key file: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: the key file is not a regular file")
        if info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            raise KeyFileError(
                f"{path}: the key file is accessible to other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run 'chmod 600 {path}'"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(4096)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read the key file: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a sipxmpp key file (not ASCII text)") from None
    return SecretBox(_parseKey(path, text), path)


def createKeyFile(path: str) -> SecretBox:
    """
    Create a new random key at C{path} with mode 0600 (its folder with
    mode 0700 if missing), whatever the umask.

    @raise KeyFileExists: if C{path} exists; a key is never overwritten.
    @raise KeyFileError: if it cannot be written.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot create the folder {folder}: {e.strerror}") from None
    key = os.urandom(_KEY_BYTES)
    line = _PREFIX + base64.urlsafe_b64encode(key).decode("ascii") + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except FileExistsError:
        raise KeyFileExists(
            f"{path}: the key file already exists; refusing to overwrite it (a new key "
            "would make every stored secret unreadable)"
        ) from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot create the key file: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, line.encode("ascii"))
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise KeyFileError(f"{path}: cannot write the key file: {e.strerror}") from None
    os.close(fd)
    return SecretBox(key, path)
