"""Passwords: argon2id hashes, never the password; rules; verification that cannot be fooled."""

from __future__ import annotations

import pytest

from hub.web import Principal
from router.auth import check_password_rules, hash_password, verify_password


def test_hash_is_argon2id_salted_and_verifies_only_the_password() -> None:
    h1, h2 = hash_password("correct horse"), hash_password("correct horse")
    assert h1.startswith("$argon2id$") and h1 != h2 and "correct" not in h1
    assert verify_password(h1, "correct horse")
    assert not verify_password(h1, "correct horsE")
    assert not verify_password(None, "correct horse")  # unknown user: checked, never true
    assert not verify_password("not-a-hash", "correct horse")


@pytest.mark.parametrize(
    ("password", "ok"),
    [("x" * 10, True), ("رمز عبور طولانی", True), ("short", False), ("", False),
     (None, False), (12345678901, False), ("x" * 1025, False)],
)
def test_password_rules(password: object, ok: bool) -> None:
    if ok:
        assert check_password_rules(password) == password
    else:
        with pytest.raises(ValueError):
            check_password_rules(password)


@pytest.mark.parametrize(
    ("role", "needed", "ok"),
    [("agent", "agent", True), ("agent", "supervisor", False), ("supervisor", "supervisor", True),
     ("supervisor", "admin", False), ("admin", "supervisor", True)],
)
def test_roles_are_ordered(role: str, needed: str, ok: bool) -> None:
    assert Principal("agent", "a", role=role).at_least(needed) is ok  # type: ignore[arg-type]
    assert Principal("system", role="admin").at_least(needed)  # the API token acts as admin
    assert not Principal("agent", "a").at_least("supervisor")  # the default is the least
