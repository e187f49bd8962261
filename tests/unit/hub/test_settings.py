import stat
from pathlib import Path

import pytest

from hub.settings import Settings


def test_env_vars_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIHUB_API_PORT", "18080")
    monkeypatch.setenv("OMNIHUB_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    s = Settings()
    assert s.api_port == 18080
    assert s.bootstrap == "k1:9092,k2:9092" and not s.embedded_kafka
    assert s.idempotence is True  # real Kafka: on


def test_embedded_defaults_work_without_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("OMNIHUB_KAFKA_BOOTSTRAP", "OMNIHUB_MONGO_URI", "OMNIHUB_API_PORT"):
        monkeypatch.delenv(k, raising=False)
    s = Settings()
    assert s.embedded_kafka and s.embedded_mongo
    assert s.idempotence is False  # tansu rejects idempotent producers
    assert "retryWrites=false" in s.mongo_url


def test_token_file_is_created_once_and_private(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "d")
    with pytest.raises(FileNotFoundError):
        s.resolve_api_token()
    token = s.resolve_api_token(create=True)
    assert len(token) >= 32 and s.resolve_api_token() == token
    assert stat.S_IMODE(s.token_file.stat().st_mode) == 0o600


def test_explicit_token_wins(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, api_token="secret-token")
    assert s.resolve_api_token(create=True) == "secret-token"
    assert not s.token_file.exists()


def test_unknown_phone_region_is_refused_at_start() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown region"):
        Settings(default_region="XX")
    assert Settings(default_region="de").default_region == "DE"


@pytest.mark.parametrize(
    ("who", "given", "expected"),
    [
        ("router", {}, 0.03),  # an offer's second broker hop: shorter than the worker's
        ("router", {"kafka_fetch_wait": 0.01}, 0.01),  # never longer than every consumer's wait
        ("router", {"router_fetch_wait": 0.25}, 0.25),  # told: as told
        ("router", {"router_fetch_wait": 0.25, "kafka_fetch_wait": 0.01}, 0.25),
        ("worker", {}, 0.05),  # an offer's first broker hop: half of the stack's 0.1 s
        ("worker", {"kafka_fetch_wait": 0.02}, 0.02),
        ("worker", {"worker_fetch_wait": 0.25}, 0.25),
        ("worker", {"worker_fetch_wait": 0.25, "kafka_fetch_wait": 0.01}, 0.25),
    ],
)
def test_the_router_and_the_worker_wait_less_per_fetch_than_other_consumers_unless_told(
    monkeypatch: pytest.MonkeyPatch, who: str, given: dict[str, float], expected: float
) -> None:
    env = f"OMNIHUB_{who.upper()}_FETCH_WAIT"
    for k in (env, "OMNIHUB_KAFKA_FETCH_WAIT"):
        monkeypatch.delenv(k, raising=False)
    s = Settings(**given)
    assert getattr(s, f"{who}_wait") == expected
    assert s.kafka_fetch_wait == given.get("kafka_fetch_wait", 0.1)  # everyone else's
    monkeypatch.setenv(env, "0.2")
    assert getattr(Settings(), f"{who}_wait") == 0.2


def test_a_fetch_wait_out_of_range_is_refused() -> None:
    from pydantic import ValidationError

    for field in ("router_fetch_wait", "worker_fetch_wait", "kafka_fetch_wait"):
        for bad in (0, -1, 11):
            with pytest.raises(ValidationError, match=field):
                Settings(**{field: bad})
