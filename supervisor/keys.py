"""The server's keys, loaded once at start: the tokens it accepts and the session key.

With ``JOBSUP_TOKENS`` set, those tokens are the ones accepted. Unset, the
first instance to start on a database generates an admin token, stores its
SHA-256 (never the token) and logs the token once; every later start, here
or on another instance, finds the stored hash and accepts the same token.
``jobsup token reset`` replaces it (``reset_admin_token``).

Session cookies are signed with a key kept in the database, so that a
session survives restarts and is good on every instance.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field

from supervisor.credentials import GENERATED_NAME, Token, TokenBook, digest, new_token, parse_tokens
from supervisor.ratelimit import RateLimiter
from supervisor.settings import Settings
from supervisor.store import Store
from supervisor.store import access as sql
from workers.db import Database
from workers.times import now_ms

log = logging.getLogger("jobsup.auth")


class Sessions:
    """Signed session cookies: ``<session id>.<expiry>.<signature>``.

    The session id is an HMAC of the token's digest, so a cookie reveals
    nothing about the token; the signature covers id and expiry. A cookie
    is good until it expires, or until its token is no longer accepted.
    Nothing is stored per session: logging out forgets the cookie in the
    browser, and a copy taken before stays good until its expiry.
    """

    def __init__(self, key: bytes, tokens: list[Token], ttl_s: float) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self._by_id = {self._id(t): t for t in tokens}

    def _id(self, token: Token) -> str:
        return hmac.new(self._key, b"session:" + token.digest, hashlib.sha256).hexdigest()[:32]

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, token: Token, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.ttl_s)
        text = f"{self._id(token)}.{expires}"
        return f"{text}.{self._sign(text)}"

    def check(self, cookie: str, now: float | None = None) -> Token | None:
        session_id, _, rest = cookie.partition(".")
        expires, _, signature = rest.partition(".")
        if not expires.isdigit() or len(cookie) > 200:
            return None
        if not hmac.compare_digest(self._sign(f"{session_id}.{expires}"), signature):
            return None
        if int(expires) <= (time.time() if now is None else now):
            return None
        return self._by_id.get(session_id)


@dataclass
class Keys:
    enabled: bool  # False: JOBSUP_AUTH=off, anyone may do anything
    book: TokenBook
    sessions: Sessions
    starts: RateLimiter  # starts and cancels, per credential
    failures: RateLimiter  # refused credentials, per peer address
    # Tokens good for one path only: JOBSUP_METRICS_TOKEN for GET /metrics (viewer).
    by_path: dict[str, TokenBook] = field(default_factory=dict)


def _generated(db: Database) -> tuple[Token, str | None]:
    """The generated admin token; the token itself only if this call made it."""
    candidate = new_token()
    stored, made = sql.take_secret(db, sql.ADMIN_TOKEN, digest(candidate).hex(), now_ms())
    return Token(GENERATED_NAME, "admin", bytes.fromhex(stored)), candidate if made else None


def _session_key(db: Database) -> bytes:
    key, _ = sql.take_secret(db, sql.SESSION_KEY, secrets.token_hex(32), now_ms())
    return bytes.fromhex(key)


def reset_admin_token(db: Database) -> str:
    """A new generated admin token replaces the old one; returns it (shown once)."""
    token = new_token()
    sql.replace_secret(db, sql.ADMIN_TOKEN, digest(token).hex(), now_ms())
    return token


async def load(settings: Settings, store: Store) -> Keys:
    tokens = parse_tokens(settings.tokens)
    if settings.auth and not tokens:
        token, made = await store.call(_generated, write=True, retry_for=10)
        tokens = [token]
        if made is not None:
            log.warning(
                "JOBSUP_TOKENS is not set: generated an admin token, shown this once:\n\n"
                "    %s\n\n"
                "Send it as 'Authorization: Bearer <token>'. Only its hash is stored; "
                "'jobsup token reset' makes a new one.",
                made,
            )
        else:
            log.info(
                "JOBSUP_TOKENS is not set: the generated admin token (%s) is in use",
                token.fingerprint,
            )
    if not settings.auth:
        log.warning("JOBSUP_AUTH=off: every route is open to anyone who reaches the port")
    session_key = await store.call(_session_key, write=True, retry_for=10)
    by_path: dict[str, TokenBook] = {}
    metrics_token = getattr(settings, "metrics_token", "")
    if metrics_token:  # a scraper's token, good for /metrics alone
        by_path["/metrics"] = TokenBook([Token("metrics", "viewer", digest(metrics_token))])
    per_min, burst = settings.rate_start_per_min, settings.rate_burst
    return Keys(
        enabled=settings.auth,
        book=TokenBook(tokens),
        sessions=Sessions(session_key, tokens, settings.session_ttl_s),
        starts=RateLimiter(per_min, burst),
        failures=RateLimiter(per_min, burst),
        by_path=by_path,
    )
