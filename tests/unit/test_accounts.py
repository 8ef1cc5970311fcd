"""streams/accounts.py and the console's sessions, CSRF tokens and login throttle."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streams.tools.accounts import AccountError, Accounts, add_user, change_user, main, read_users
from streams.tools.console.auth import LoginThrottle, SessionCodec, SessionError

KEY = b"k" * 32


def test_users_are_kept_as_argon2id_hashes_in_an_owner_only_file(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    add_user(path, "ximena", "mx", "analyst", "correct horse battery")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "$argon2id$" in text and "correct horse" not in text
    accounts = Accounts(path)
    user = accounts.authenticate("ximena", "correct horse battery")
    assert user is not None and (user.country, user.role) == ("MX", "analyst")
    assert accounts.authenticate("ximena", "wrong password!!") is None
    assert accounts.authenticate("nobody", "correct horse battery") is None
    with pytest.raises(AccountError, match="user ximena exists"):
        add_user(path, "ximena", "MX", "lead", "another password")
    with pytest.raises(AccountError, match="at least 12 characters"):
        add_user(path, "short", "MX", "lead", "abc")
    change_user(path, "ximena", disabled=True)
    assert accounts.authenticate("ximena", "correct horse battery") is None
    change_user(path, "ximena", disabled=False, password="a new long password")
    assert accounts.authenticate("ximena", "a new long password") is not None


def test_the_command_prints_a_new_password_that_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.json"
    assert main(["add", str(path), "luis", "--country", "MX", "--role", "lead"]) == 0
    password = capsys.readouterr().out.split("password: ")[1].strip()
    assert Accounts(path).authenticate("luis", password) is not None
    assert main(["passwd", str(path), "luis"]) == 0
    new = capsys.readouterr().out.split("password: ")[1].strip()
    assert Accounts(path).authenticate("luis", password) is None
    assert Accounts(path).authenticate("luis", new) is not None
    assert main(["disable", str(path), "luis"]) == 0
    assert read_users(path).users[0].disabled
    assert main(["disable", str(path), "nobody"]) == 1
    assert "no user nobody" in capsys.readouterr().err


def test_sessions_are_signed_and_expire_after_12_h_or_30_min_idle() -> None:
    codec = SessionCodec(KEY)
    session = codec.new("ximena", 1000.0)
    cookie = codec.encode(session)
    assert codec.decode(cookie, 1000.0 + 29 * 60) == session
    with pytest.raises(SessionError, match="30 min without use"):
        codec.decode(cookie, 1000.0 + 31 * 60)
    later = codec.encode(codec.touch(session, 1000.0 + 11.9 * 3600))
    assert codec.decode(later, 1000.0 + 11.95 * 3600).user == "ximena"
    with pytest.raises(SessionError, match="12 h after login"):
        codec.decode(later, 1000.0 + 12.1 * 3600)
    forged = SessionCodec(b"x" * 32).encode(session)
    with pytest.raises(SessionError, match="bad signature"):
        codec.decode(forged, 1000.0)
    with pytest.raises(SessionError, match="malformed"):
        codec.decode("garbage", 1000.0)
    token = codec.csrf(session)
    assert codec.csrf_ok(session, token) and not codec.csrf_ok(session, None)
    assert not codec.csrf_ok(codec.new("ximena", 1000.0), token)


def test_after_five_failures_in_15_min_tries_wait_longer_and_longer() -> None:
    throttle = LoginThrottle()
    for i in range(5):
        assert throttle.retry_after("ximena", 100.0 + i) == 0
        throttle.failed("ximena", 100.0 + i)
    assert throttle.retry_after("luis", 106.0) == 0
    delays = [throttle.retry_after("ximena", 106.0 + i) for i in range(4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert throttle.retry_after("ximena", 110.0 + 16 * 60) == 0  # the window has passed
    other = LoginThrottle()
    for i in range(4):
        other.failed("a", float(i))
    other.succeeded("a")
    assert other.failures == {}
