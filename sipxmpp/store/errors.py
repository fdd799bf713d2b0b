"""
What can go wrong with the store. Every message is one line meant for an
operator, and none ever contains a secret or the key.
"""

from __future__ import annotations


class StoreError(Exception):
    """
    The store cannot do what was asked; C{str()} explains why.
    """


class StoreUnavailable(StoreError):
    """
    The database cannot be opened or reached, or a query failed.
    """


class SchemaTooNew(StoreError):
    """
    The database was migrated by a newer sipxmpp than this one.
    """


class KeyFileError(StoreError):
    """
    The key file is missing, unreadable, malformed or unsafe.
    """


class KeyFileExists(KeyFileError):
    """
    C{init} refuses to overwrite an existing key file.
    """


class WrongKey(StoreError):
    """
    The key file is not the key this store's secrets were encrypted with.
    """


class AlreadyInitialised(StoreError):
    """
    The store already holds a key check of another key.
    """


class AccountNotFound(StoreError):
    """
    No account is provisioned for the AoR.
    """


class AccountExists(StoreError):
    """
    An account is already provisioned for the AoR.
    """


class SecretUnreadable(StoreError):
    """
    A stored secret cannot be decrypted (tampered with, or moved to another
    account's row).
    """
