"""Registry bearer tokens kept until they expire, shared by the blobs of a pull and later pulls.

A token is kept by the token server's realm, service and scope and by who asked for it (a
digest of the credentials, so a token never serves a caller with other credentials or none),
for the lifetime the server gave (expires_in, 60 s when it names none, as the distribution
spec says), less a margin. Beside the tokens, what an API base last challenged with, so the
next pull of the same repository sends a live token at once instead of meeting a 401 first.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from cri_shim.image.auth import Challenge, Credentials

DEFAULT_LIFETIME = 60.0
MARGIN = 10.0
MAX_ENTRIES = 512


@dataclass(frozen=True)
class TokenKey:
    realm: str
    service: str
    scope: str
    who: str


def who(creds: Credentials) -> str:
    """A digest naming the credentials without holding them."""
    return hashlib.sha256(repr(creds).encode()).hexdigest()


def key_of(challenge: Challenge, scope: str, creds: Credentials) -> TokenKey:
    return TokenKey(challenge.params.get("realm", ""), challenge.params.get("service", ""), scope, who(creds))


class TokenCache:
    """Tokens by TokenKey with their expiry, and the last TokenKey of each (API base, caller)."""

    def __init__(self) -> None:
        self._tokens: OrderedDict[TokenKey, tuple[str, float]] = OrderedDict()
        self._last: OrderedDict[tuple[str, str], TokenKey] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: TokenKey) -> str | None:
        with self._lock:
            found = self._tokens.get(key)
            if found is None:
                return None
            token, expires = found
            if time.monotonic() >= expires:
                del self._tokens[key]
                return None
            return token

    def put(self, key: TokenKey, token: str, lifetime: float | None, base: str) -> None:
        seconds = lifetime if lifetime and lifetime > 0 else DEFAULT_LIFETIME
        expires = time.monotonic() + seconds - min(MARGIN, seconds / 10)
        with self._lock:
            self._tokens[key] = (token, expires)
            self._tokens.move_to_end(key)
            self._last[(base, key.who)] = key
            self._last.move_to_end((base, key.who))
            while len(self._tokens) > MAX_ENTRIES:
                self._tokens.popitem(last=False)
            while len(self._last) > MAX_ENTRIES:
                self._last.popitem(last=False)

    def for_base(self, base: str, creds: Credentials) -> str | None:
        """A live token the API base was last authorized with for these credentials."""
        with self._lock:
            key = self._last.get((base, who(creds)))
        return self.get(key) if key is not None else None

    def drop(self, key: TokenKey) -> None:
        """Forgets a token the registry refused (revoked, or expired early)."""
        with self._lock:
            self._tokens.pop(key, None)
