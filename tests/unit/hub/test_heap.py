"""A service's start-up objects are frozen out of full collections; later ones are not."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hub.heap import freeze_startup


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_what_start_up_made_is_frozen_and_what_comes_later_is_collected(unfrozen: None) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    kept = Node()
    freeze_startup()
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # modules, classes, functions of this process, and `kept`
    assert not any(o is kept for o in gc.get_objects())  # frozen objects are left out

    later = Node()
    assert any(o is later for o in gc.get_objects())
    del later
    assert gc.collect() >= 1  # the cycle made after start-up is still collected
    assert gc.get_freeze_count() == frozen
