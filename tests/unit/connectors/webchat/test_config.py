"""Web chat inboxes: JSON or TOML, origins checked, secrets only from env vars or files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.webchat.config import (
    DEFAULT_INBOX,
    ConfigError,
    OriginPattern,
    load_inboxes,
    origin_of,
)
from hub.settings import Settings

TOML = """
[[inbox]]
id = "shop"
team = "پشتیبانی فروشگاه"
allowed_origins = ["https://shop.example.ir", "https://*.shop.example.ir"]
secret_file = "{secret}"
max_text_chars = 2000
visitor_rate = 10
upload_types = ["image/png", "application/pdf"]

[[inbox]]
id = "app"
allowed_origins = ["https://app.example.com:8443"]
secret_env = "APP_CHAT_SECRET"
"""


def test_no_configuration_means_one_default_inbox_for_local_pages() -> None:
    (inbox,) = load_inboxes(inline=None, path=None, own_origin="http://127.0.0.1:8405")
    assert inbox.id == DEFAULT_INBOX and inbox.secret() is None
    for origin in ("http://127.0.0.1:8405", "http://127.0.0.1:3000", "http://localhost:8080"):
        assert inbox.origin_allowed(origin), origin
    for origin in ("https://evil.example", "http://127.0.0.2:8405", None, "", "null"):
        assert not inbox.origin_allowed(origin), origin
    # a public URL of the connector (behind a proxy) is allowed too, for its demo page
    (proxied,) = load_inboxes(inline=None, path=None, own_origin="https://chat.example.ir")
    assert proxied.origin_allowed("https://chat.example.ir")


def test_toml_inboxes_with_secrets_from_a_file_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "shop-secret"
    secret.write_text("shop-hmac-secret\n")
    path = tmp_path / "webchat.toml"
    path.write_text(TOML.replace("{secret}", str(secret)))
    monkeypatch.setenv("APP_CHAT_SECRET", "app-hmac-secret")
    shop, app = load_inboxes(inline=None, path=path, own_origin="http://127.0.0.1:1")
    assert shop.team == "پشتیبانی فروشگاه" and shop.max_text_chars == 2000
    assert shop.visitor_rate == 10 and shop.upload_types == ["image/png", "application/pdf"]
    assert shop.secret() == b"shop-hmac-secret" and app.secret() == b"app-hmac-secret"
    shown = repr(shop) + str(shop.model_dump()) + repr(app) + str(app.model_dump())
    assert "hmac-secret" not in shown
    assert shop.origin_allowed("https://shop.example.ir")
    assert shop.origin_allowed("https://www.shop.example.ir")
    assert shop.origin_allowed("https://a.b.shop.example.ir:443")
    assert not shop.origin_allowed("http://shop.example.ir")  # scheme matters
    assert not shop.origin_allowed("https://evilshop.example.ir")
    assert not shop.origin_allowed("https://shop.example.ir.evil.com")
    assert app.origin_allowed("https://app.example.com:8443")
    assert not app.origin_allowed("https://app.example.com")  # port matters
    monkeypatch.delenv("APP_CHAT_SECRET")
    with pytest.raises(ConfigError, match="APP_CHAT_SECRET is not set"):
        app.secret()


def test_a_missing_secret_fails_at_load_not_at_the_first_sign_in() -> None:
    inline = json.dumps(
        [{"id": "x", "allowed_origins": ["https://x.example"], "secret_env": "NOPE_NOT_SET"}]
    )
    with pytest.raises(ConfigError, match="NOPE_NOT_SET"):
        load_inboxes(inline=inline, path=None, own_origin="http://127.0.0.1:1")


@pytest.mark.parametrize(
    ("inboxes", "message"),
    [
        (
            [{"id": "x", "allowed_origins": ["https://x.example"], "secret": "s3cret"}],
            "must not be written into the configuration",
        ),
        ([{"id": "x", "allowed_origins": ["x.example"]}], "is not an origin"),
        ([{"id": "x", "allowed_origins": ["https://x.example/path"]}], "is not an origin"),
        ([{"id": "x", "allowed_origins": []}], "allowed_origins"),
        ([{"id": "Bad Id", "allowed_origins": ["*"]}], r"inbox 1 \(Bad Id\): id"),
        (
            [{"id": "x", "allowed_origins": ["*"], "upload_types": ["image/svg+xml"]}],
            r"image/svg\+xml",
        ),
        (
            [{"id": "x", "allowed_origins": ["*"]}, {"id": "x", "allowed_origins": ["*"]}],
            "configured twice",
        ),
        ([{"id": "x", "allowed_origins": ["*"], "max_text_chars": 0}], "max_text_chars"),
        ([], "non-empty list"),
    ],
)
def test_bad_inboxes_say_what_to_change(inboxes: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_inboxes(inline=json.dumps(inboxes), path=None, own_origin="http://127.0.0.1:1")
    assert "s3cret" not in str(err.value)


def test_not_json_and_both_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not JSON"):
        load_inboxes(inline="[{", path=None, own_origin="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="either"):
        load_inboxes(inline="[]", path=tmp_path / "x.toml", own_origin="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="cannot read"):
        load_inboxes(inline=None, path=tmp_path / "missing.toml", own_origin="http://127.0.0.1:1")


def test_origin_patterns() -> None:
    assert OriginPattern("*").matches("https://anything.example")
    port_any = OriginPattern("http://localhost:*")
    assert port_any.matches("http://localhost:1") and port_any.matches("http://localhost")
    assert not port_any.matches("https://localhost:1")
    assert OriginPattern("https://x.example").matches("https://x.example:443")
    assert not OriginPattern("https://x.example").matches("https://x.example:444")
    assert not OriginPattern("https://*.x.example").matches("https://x.example")
    assert origin_of("http://127.0.0.1:8405/demo?lang=fa") == "http://127.0.0.1:8405"


def test_settings_visitor_key_is_created_once_and_kept(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    key = s.resolve_webchat_visitor_key()
    assert len(key) >= 32 and s.resolve_webchat_visitor_key() == key
    assert (tmp_path / "webchat-visitor-key").stat().st_mode & 0o077 == 0
    assert (
        Settings(data_dir=tmp_path, webchat_visitor_key="k" * 20).resolve_webchat_visitor_key()
        == b"k" * 20
    )
    with pytest.raises(FileNotFoundError):
        Settings(webchat_visitor_key_file=tmp_path / "nope").resolve_webchat_visitor_key()
