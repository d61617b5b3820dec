"""The users file of ``/auth/login`` (``auth.users_file``): usernames and password hashes.

The file is YAML, one ``username: hash`` pair per line, each hash printed by
``python server.py hash-password`` (see :mod:`core.passwords`).

Guarantees:

* :func:`load_users` returns a :class:`UserStore` only for a well-formed file (a
  mapping of non-empty string usernames to scrypt hashes); otherwise it raises
  :class:`ValueError` naming ``auth.users_file`` and the offending username, never
  a hash.
* :meth:`UserStore.check` runs exactly one scrypt verification whatever the
  username, against :func:`~core.passwords.dummy_hash` for an unknown user, so a
  wrong password and an unknown user cost the same time (no user enumeration by
  timing). The dummy hash is computed when the store is built, not on the first
  unknown login.
* No global state: the store is an immutable snapshot of the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import yaml

from core.passwords import dummy_hash, verify_password

__all__ = ["MAX_PASSWORD_CHARS", "MAX_USERNAME_CHARS", "UserStore", "load_users", "parse_users"]

#: Longer usernames or passwords are refused before any hashing (bounded work).
MAX_USERNAME_CHARS = 256
MAX_PASSWORD_CHARS = 1024

# The shape written by core.passwords.hash_password; the cost parameters are
# bounded again by verify_password itself.
_HASH = re.compile(r"scrypt\$[0-9]{1,8}\$[0-9]{1,3}\$[0-9]{1,3}\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+")


class UserStore:
    """Usernames and their password hashes, read once."""

    __slots__ = ("_dummy", "_hashes")

    def __init__(self, hashes: Mapping[str, str]) -> None:
        self._hashes: Mapping[str, str] = MappingProxyType(dict(hashes))
        self._dummy = dummy_hash()

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, username: object) -> bool:
        return username in self._hashes

    def check(self, username: str, password: str) -> bool:
        """Whether ``password`` is ``username``'s; one scrypt run in every case.

        CPU-bound (tens of milliseconds): call it from a worker thread.
        """
        encoded = self._hashes.get(username)
        matched = verify_password(password, encoded if encoded is not None else self._dummy)
        return matched and encoded is not None


def parse_users(tree: object, source: str = "auth.users_file") -> UserStore:
    """Build a store from a parsed YAML tree; :class:`ValueError` names ``source``."""
    if tree is None:
        return UserStore({})
    if not isinstance(tree, Mapping):
        raise ValueError(f"{source}: expected a mapping of username: hash")
    hashes: dict[str, str] = {}
    for name, encoded in tree.items():
        if not isinstance(name, str) or not name or len(name) > MAX_USERNAME_CHARS:
            raise ValueError(f"{source}: usernames must be strings of 1 to 256 characters")
        if not isinstance(encoded, str) or _HASH.fullmatch(encoded) is None:
            raise ValueError(f"{source}: user {name!r}: not a hash from `server.py hash-password`")
        hashes[name] = encoded
    return UserStore(hashes)


def load_users(path: str) -> UserStore:
    """Read and validate the users file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"auth.users_file: cannot read {path}: {exc}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError:
        # The parser's message may quote a line of the file, hash included.
        raise ValueError(f"auth.users_file: {path} is not valid YAML") from None
    return parse_users(tree)
