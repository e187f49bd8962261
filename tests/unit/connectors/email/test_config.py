"""Inbox configuration: JSON or TOML, secrets only from env vars or files, never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.email.config import ConfigError, load_inboxes

TOML = """
[[inbox]]
address = "Support@Example.com"
team = "Support"
smtp = { host = "smtp.example.com", username = "support@example.com", password_env = "SMTP_PW" }

[inbox.imap]
host = "imap.example.com"
username = "support@example.com"
password_file = "{secret}"
mailboxes = ["INBOX", "Support"]

[[inbox]]
address = "sales@example.com"
"""


def test_no_configuration_means_one_default_inbox_without_relay_or_imap() -> None:
    (inbox,) = load_inboxes(inline=None, path=None, default_address="support@omnihub.localhost")
    assert inbox.address == "support@omnihub.localhost" and inbox.smtp is inbox.imap is None


def test_toml_inboxes_with_secrets_from_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "imap-pw"
    secret.write_text("imap-secret\n")
    path = tmp_path / "inboxes.toml"
    path.write_text(TOML.replace("{secret}", str(secret)))
    monkeypatch.setenv("SMTP_PW", "smtp-secret")
    support, sales = load_inboxes(inline=None, path=path, default_address="x@y.z")
    assert support.address == "support@example.com" and sales.imap is None
    assert support.smtp is not None and support.smtp.password() == "smtp-secret"
    assert support.imap is not None and support.imap.password() == "imap-secret"
    assert support.imap.mailboxes == ["INBOX", "Support"] and support.imap.initial == "new"
    shown = repr(support) + str(support.model_dump())
    assert "smtp-secret" not in shown and "imap-secret" not in shown
    monkeypatch.delenv("SMTP_PW")
    with pytest.raises(ConfigError, match="SMTP_PW is not set"):
        support.smtp.password()


@pytest.mark.parametrize(
    ("inline", "message"),
    [
        ('[{"address": "a@example.com", "imap": {"host": "h", "password": "p"}}]', "password_env"),
        ('[{"address": "a@example.com"}, {"address": "A@example.com"}]', "twice"),
        ('[{"address": "nope"}]', "email address"),
        ('[{"address": "a@example.com", "smpt": {}}]', "smpt"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_reason(inline: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_inboxes(inline=inline, path=None, default_address="x@y.z")


def test_json_file_works_too(tmp_path: Path) -> None:
    path = tmp_path / "inboxes.json"
    path.write_text(json.dumps({"inbox": [{"address": "help@example.com", "team": "Help"}]}))
    (inbox,) = load_inboxes(inline=None, path=path, default_address="x@y.z")
    assert (inbox.address, inbox.team, inbox.domain) == ("help@example.com", "Help", "example.com")
