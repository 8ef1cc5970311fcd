"""The console's sessions, CSRF tokens and login throttle. No I/O and no clock of its own:
the server passes the time in.

A session is a signed cookie (HMAC-SHA256 over its JSON): the user, a random session id,
when it was issued and when it was last used. It ends 12 h after login or after 30 min
without use; every use re-issues it with the new time. The CSRF token of a session is an
HMAC of its id, sent by the page in the `X-CSRF-Token` header of every action.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import deque
from dataclasses import dataclass, field

import orjson

COOKIE = "fusion_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_AGE_S = 12 * 3600.0
IDLE_S = 30 * 60.0
LOCK_WINDOW_S = 15 * 60.0
LOCK_AFTER = 5
LOCK_MAX_DELAY_S = 15 * 60.0


class SessionError(Exception):
    """A cookie that is not a valid session: forged, malformed or expired (says which)."""


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    sid: str
    issued: float
    seen: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Issues and checks session cookies and CSRF tokens with one key."""

    def __init__(self, key: bytes, max_age_s: float = MAX_AGE_S, idle_s: float = IDLE_S) -> None:
        if len(key) < 32:
            raise ValueError("a session key is at least 32 bytes")
        self._key = key
        self.max_age_s = max_age_s
        self.idle_s = idle_s

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def new(self, user: str, now: float) -> Session:
        return Session(user, secrets.token_urlsafe(16), now, now)

    def encode(self, session: Session) -> str:
        body = orjson.dumps(
            {"u": session.user, "s": session.sid, "i": session.issued, "t": session.seen}
        )
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def decode(self, cookie: str, now: float) -> Session:
        """The session of a cookie, still valid at `now`; else `SessionError`."""
        try:
            body_text, mac_text = cookie.split(".", 1)
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, TypeError) as e:
            raise SessionError("malformed session cookie") from e
        if not hmac.compare_digest(mac, self._mac(body)):
            raise SessionError("session cookie with a bad signature")
        try:
            doc = orjson.loads(body)
            session = Session(str(doc["u"]), str(doc["s"]), float(doc["i"]), float(doc["t"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise SessionError("malformed session cookie") from e
        if now - session.issued > self.max_age_s:
            raise SessionError(f"session expired ({self.max_age_s / 3600:g} h after login)")
        if now - session.seen > self.idle_s:
            raise SessionError(f"session expired ({self.idle_s / 60:g} min without use)")
        return session

    def touch(self, session: Session, now: float) -> Session:
        return Session(session.user, session.sid, session.issued, now)

    def csrf(self, session: Session) -> str:
        return _b64(self._mac(b"csrf:" + session.sid.encode()))

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf(session))


@dataclass
class LoginThrottle:
    """Failed logins per user name: after `LOCK_AFTER` within `LOCK_WINDOW_S`, every further
    try is refused for a delay that doubles with each (up to `LOCK_MAX_DELAY_S`), whether or
    not its password is right; a refused try counts as a failure."""

    failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, user: str, now: float) -> deque[float]:
        q = self.failures.setdefault(user, deque())
        while q and now - q[0] > LOCK_WINDOW_S:
            q.popleft()
        return q

    def retry_after(self, user: str, now: float) -> float:
        """0 if a try may go ahead, else the seconds to wait (and the try is counted)."""
        q = self._recent(user, now)
        if len(q) < LOCK_AFTER:
            return 0.0
        delay = min(2.0 ** (len(q) - LOCK_AFTER), LOCK_MAX_DELAY_S)
        q.append(now)
        return delay

    def failed(self, user: str, now: float) -> None:
        self._recent(user, now).append(now)

    def succeeded(self, user: str) -> None:
        self.failures.pop(user, None)
