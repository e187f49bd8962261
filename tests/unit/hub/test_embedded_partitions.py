from pathlib import Path

import pytest

from hub.embedded import EMBEDDED_PARTITIONS, EmbeddedStack, service_env
from hub.settings import Settings


def stack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: str | None = None, **given: object
) -> EmbeddedStack:
    monkeypatch.delenv("OMNIHUB_PARTITIONS", raising=False)
    if env is not None:
        monkeypatch.setenv("OMNIHUB_PARTITIONS", env)
    return EmbeddedStack(Settings(data_dir=tmp_path, **given), out=lambda line: None)


def test_omnihub_up_creates_one_partition_unless_told(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s = stack(monkeypatch, tmp_path)
    assert s.settings.partitions == EMBEDDED_PARTITIONS == 1
    assert service_env(s.settings)["OMNIHUB_PARTITIONS"] == "1"  # what its children see
    assert Settings().partitions == 4  # omnihub init / worker elsewhere: unchanged


@pytest.mark.parametrize(("env", "flag", "expected"), [("3", None, 3), (None, 6, 6), ("3", 4, 4)])
def test_partitions_given_by_flag_or_environment_win(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: str | None,
    flag: int | None,
    expected: int,
) -> None:
    given = {} if flag is None else {"partitions": flag}
    s = stack(monkeypatch, tmp_path, env, **given)
    assert s.settings.partitions == expected
    assert s.settings.data_dir == tmp_path.resolve()
