"""Fixtures of the integration tests beyond the session's shared peers (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.broker_support import Stack, running_stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """tansu on hub.s3 as `omnihub up` runs them, on free ports, for one test."""
    yield from running_stack(tmp_path)
