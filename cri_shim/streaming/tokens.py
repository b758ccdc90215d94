"""One-time tokens that stand for a cached Exec/Attach/PortForward request.

The RPC stores the request and returns a URL holding the token; the first HTTP request that
presents it takes the request out (used tokens are gone), and a token older than its TTL is
worth nothing. The cache is capped: when it is full of live tokens, minting fails rather than
evicting a URL a client may be about to use.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from cri_shim.errors import ResourceExhausted
from cri_shim.streaming.requests import StreamRequest


class TokenCache:
    def __init__(self, ttl: float, max_tokens: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_tokens
        self._clock = clock
        # token -> (kind, request, expiry), oldest first
        self._entries: OrderedDict[str, tuple[str, StreamRequest, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def insert(self, kind: str, request: StreamRequest) -> str:
        now = self._clock()
        self._evict_expired(now)
        if len(self._entries) >= self._max:
            raise ResourceExhausted(f"maximum number of in-flight streaming requests ({self._max}) reached")
        token = secrets.token_urlsafe(16)  # 128 random bits: unguessable, URL-safe
        self._entries[token] = (kind, request, now + self._ttl)
        return token

    def consume(self, kind: str, token: str) -> StreamRequest | None:
        """The request a live token of this kind stands for, which is used up; else None."""
        entry = self._entries.get(token)
        if entry is None or entry[0] != kind:
            return None
        del self._entries[token]
        if self._clock() >= entry[2]:
            return None
        return entry[1]

    def _evict_expired(self, now: float) -> None:
        while self._entries:
            token, (_, _, expiry) = next(iter(self._entries.items()))
            if expiry > now:
                return
            del self._entries[token]
