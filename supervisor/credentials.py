"""Who may call: bearer tokens, their roles, and the caller the service is handed.

Tokens come from ``JOBSUP_TOKENS`` (``role:token`` or ``name:role:token``,
comma-separated) or, when it is unset, from the admin token generated at
first start (its hash kept in the database). Only SHA-256 digests are held:
a presented token is hashed once and looked up by its digest, so the time a
check takes depends neither on the tokens held nor on how close a guess is;
the final comparison is ``hmac.compare_digest``.

A token's fingerprint (the first 8 hex digits of its SHA-256) names it in
the audit trail and in ``requestedBy``, beside its name and role.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import msgspec

from supervisor.job import RequestedBy

ROLES = ("viewer", "operator", "admin")
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 512
_URL_SAFE = re.compile(r"[A-Za-z0-9_\-.~]+")
_NAME = re.compile(r"[A-Za-z0-9_\-.]{1,64}")
GENERATED_NAME = "admin"


class TokenError(ValueError):
    """A bad JOBSUP_TOKENS entry; the message names the entry, never its token."""


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Token(msgspec.Struct, frozen=True, gc=False):
    name: str
    role: str
    digest: bytes

    @property
    def fingerprint(self) -> str:
        return self.digest.hex()[:8]


class Caller(msgspec.Struct, frozen=True, gc=False):
    """The one asking, as data: what the service records, not an HTTP object."""

    name: str
    role: str
    fingerprint: str
    peer: str | None = None

    @classmethod
    def of(cls, token: Token, peer: str | None) -> Caller:
        return cls(token.name, token.role, token.fingerprint, peer)

    def who(self) -> RequestedBy:
        return RequestedBy(self.name, self.role, self.fingerprint)


def parse_tokens(text: str) -> list[Token]:
    """The tokens of a ``JOBSUP_TOKENS`` value; TokenError naming a bad entry."""
    tokens: list[Token] = []
    seen_names: set[str] = set()
    seen: dict[bytes, int] = {}
    for number, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue  # a trailing comma
        parts = entry.split(":")
        label = f"JOBSUP_TOKENS entry {number}"
        if len(parts) == 3 and _NAME.fullmatch(parts[0]):
            label += f" ({parts[0]})"
        if len(parts) not in (2, 3):
            raise TokenError(f"{label}: expected role:token or name:role:token")
        name, role, token = parts if len(parts) == 3 else (parts[0], *parts)
        if not _NAME.fullmatch(name):
            raise TokenError(f"{label}: a name is 1 to 64 letters, digits, '-', '_' or '.'")
        if role not in ROLES:
            raise TokenError(f"{label}: the role must be one of {', '.join(ROLES)}")
        if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
            raise TokenError(
                f"{label}: a token is {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters"
            )
        if not _URL_SAFE.fullmatch(token):
            raise TokenError(f"{label}: a token is URL-safe (letters, digits, '-', '_', '.', '~')")
        if len(parts) == 3 and name in seen_names:
            raise TokenError(f"{label}: the name is already used by another entry")
        hashed = digest(token)
        if hashed in seen:
            raise TokenError(f"{label}: the same token as entry {seen[hashed]}")
        seen[hashed] = number
        seen_names.add(name)
        tokens.append(Token(name, role, hashed))
    return tokens


class TokenBook:
    """The tokens this server accepts, looked up by digest."""

    def __init__(self, tokens: list[Token]) -> None:
        self._by_digest = {t.digest: t for t in tokens}

    def __len__(self) -> int:
        return len(self._by_digest)

    def check(self, token: str) -> Token | None:
        if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
            return None
        hashed = digest(token)
        found = self._by_digest.get(hashed)
        if found is None or not hmac.compare_digest(found.digest, hashed):
            return None
        return found

    def by_digest(self, hashed: bytes) -> Token | None:
        return self._by_digest.get(hashed)
