"""Tokens, sessions and rate limits as plain objects: a failure points at the unit."""

from __future__ import annotations

import pytest

from supervisor.credentials import TokenBook, TokenError, digest, parse_tokens
from supervisor.keys import Sessions
from supervisor.ratelimit import RateLimiter
from supervisor.settings import Settings, SettingsError

TOKEN = "a-token-of-twenty-chars"


def test_entries_with_and_without_a_name() -> None:
    tokens = parse_tokens(f" viewer:{TOKEN}1 , ci:operator:{TOKEN}2,")
    assert [(t.name, t.role) for t in tokens] == [("viewer", "viewer"), ("ci", "operator")]
    assert tokens[0].fingerprint == digest(f"{TOKEN}1").hex()[:8]
    assert parse_tokens("") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("admin:short", "entry 1: a token is 16 to 512 characters"),
        (f"root:{TOKEN}", "entry 1: the role must be one of"),
        (f"ci:admin:{TOKEN}/x", "entry 1 (ci): a token is URL-safe"),
        (f"a b:admin:{TOKEN}", "entry 1: a name is 1 to 64"),
        (f"admin:{TOKEN},viewer:{TOKEN}", "entry 2: the same token as entry 1"),
        (TOKEN, "entry 1: expected role:token or name:role:token"),
    ],
)
def test_a_bad_entry_is_named_and_never_quoted(text: str, message: str) -> None:
    with pytest.raises(TokenError) as refused:
        parse_tokens(text)
    assert message in str(refused.value)
    assert TOKEN not in str(refused.value)
    assert "short" not in str(refused.value)


def test_the_book_finds_a_token_by_its_digest_only() -> None:
    book = TokenBook(parse_tokens(f"ci:operator:{TOKEN}"))
    found = book.check(TOKEN)
    assert found is not None
    assert found.name == "ci"
    for wrong in ("", TOKEN[:-1], TOKEN + "x", "x" * 10_000):
        assert book.check(wrong) is None


def test_a_session_cookie_is_signed_expires_and_names_no_token() -> None:
    tokens = parse_tokens(f"ci:operator:{TOKEN}")
    sessions = Sessions(b"k" * 32, tokens, ttl_s=60)
    cookie = sessions.issue(tokens[0], now=1000)
    assert TOKEN not in cookie
    assert tokens[0].digest.hex()[:16] not in cookie
    assert sessions.check(cookie, now=1059) == tokens[0]
    assert sessions.check(cookie, now=1060) is None  # expired
    session_id, expires, signature = cookie.split(".")
    assert sessions.check(f"{session_id}.{int(expires) + 10}.{signature}", now=1000) is None
    assert Sessions(b"other key" * 4, tokens, 60).check(cookie, now=1000) is None
    assert Sessions(b"k" * 32, [], 60).check(cookie, now=1000) is None  # its token is gone


def test_a_bucket_counts_every_attempt_and_refills() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)  # one a second
    assert [limiter.take("a", now=0) for _ in range(2)] == [0, 0]
    assert limiter.take("a", now=0) == 1
    assert limiter.take("a", now=0) == 2  # refused attempts count too
    assert limiter.take("b", now=0) == 0  # each key its own bucket
    assert limiter.take("a", now=3) == 0  # three seconds repaid the debt
    for _ in range(100):
        limiter.take("a", now=3)
    assert limiter.take("a", now=3) == 3  # the debt is capped at one burst
    assert RateLimiter(0, 1).take("a") == 0  # off


def test_the_bucket_table_is_bounded() -> None:
    limiter = RateLimiter(per_minute=60, burst=1, max_keys=3)
    for key in "abcd":
        limiter.take(key, now=0)
    assert limiter.take("a", now=0) == 0  # forgotten: more lenient, never stricter
    assert len(limiter._buckets) == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOBSUP_CORS_ORIGINS": "*"}, "JOBSUP_CORS_ORIGINS"),
        ({"JOBSUP_CORS_ORIGINS": "https://ui.example/path"}, "not an origin"),
        ({"JOBSUP_ALLOWED_HOSTS": "a.*.example"}, "JOBSUP_ALLOWED_HOSTS"),
        ({"JOBSUP_RATE_BURST": "0"}, "JOBSUP_RATE_BURST"),
        ({"JOBSUP_RATE_START_PER_MIN": "-1"}, "JOBSUP_RATE_START_PER_MIN"),
        ({"JOBSUP_MAX_BODY_BYTES": "0"}, "JOBSUP_MAX_BODY_BYTES"),
        ({"JOBSUP_TOKENS": "admin:short"}, "JOBSUP_TOKENS entry 1"),
    ],
)
def test_bad_access_settings_stop_the_command(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_access_settings_defaults() -> None:
    settings = Settings.from_env({"JOBSUP_TOKENS": f"ci:operator:{TOKEN}", "JOBSUP_AUTH": "off"})
    assert settings.auth is False
    assert TOKEN not in repr(settings)
    assert settings.host_names() == ("127.0.0.1", "localhost", "127.0.0.1", "::1")
    assert Settings.from_env({"JOBSUP_RATE_BURST": "0", "JOBSUP_RATE_START_PER_MIN": "0"})
