"""Bearer tokens, each naming a tenant. A tenant sees only its own models, jobs and artifacts."""

from __future__ import annotations

import hmac
import logging
import re

from kpt import settings
from kpt.errors import Unauthenticated

log = logging.getLogger(__name__)

TENANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OPEN_TENANT = "local"


class Tokens:
    def __init__(self, tokens: dict[str, str], open_access: bool = False) -> None:
        if any(not token.strip() for token in tokens):
            # tenant() strips what follows 'Bearer ': an empty token would let 'Bearer  ' in.
            raise ValueError(f"empty token for tenant(s) {sorted(t for k, t in tokens.items() if not k.strip())}: "
                             "every token needs a value (KPT_TOKENS is 'token:tenant,...')")
        for tenant in tokens.values():
            if not TENANT_RE.match(tenant):
                raise ValueError(f"tenant name {tenant!r} is invalid: use 1-64 of A-Z a-z 0-9 _ -")
        self._tokens = tokens
        self.open_access = open_access

    @classmethod
    def from_settings(cls) -> "Tokens":
        tokens: dict[str, str] = {}
        path = settings.get("KPT_TOKENS_FILE")
        if path:
            with open(path) as f:
                for n, line in enumerate(f, 1):
                    line = line.split("#", 1)[0].strip()
                    if not line:
                        continue
                    parts = line.split()
                    if len(parts) != 2:
                        raise ValueError(f"{path}:{n}: expected 'token tenant'")
                    tokens[parts[0]] = parts[1]
        for pair in filter(None, settings.get("KPT_TOKENS").split(",")):
            token, _, tenant = pair.partition(":")
            tokens[token.strip()] = tenant.strip()
        open_access = settings.get("KPT_OPEN_ACCESS")
        if open_access:
            log.warning("*" * 72)
            log.warning("OPEN ACCESS: calls without a token act as tenant %r. Local use only.", OPEN_TENANT)
            log.warning("*" * 72)
        elif not tokens:
            raise ValueError("no tokens configured: set KPT_TOKENS_FILE or KPT_TOKENS, or KPT_OPEN_ACCESS=1 for local use")
        return cls(tokens, open_access)

    def tenant(self, authorization: str | None) -> str:
        """The tenant of an `authorization: Bearer <token>` value, or Unauthenticated."""
        if not authorization:
            if self.open_access:
                return OPEN_TENANT
            raise Unauthenticated("missing token: send 'authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("malformed authorization: expected 'Bearer <token>'")
        for known, tenant in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                return tenant
        raise Unauthenticated("invalid token")
