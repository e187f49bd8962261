"""Shared fixtures: real peers (tansu, SecantusDB) on free ports, one per test session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.peers import Peer, start_secantus, start_tansu


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("peers")


@pytest.fixture(scope="session")
def mongo_peer(workdir: Path) -> Iterator[Peer]:
    peer = start_secantus(workdir)
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def kafka_peer(workdir: Path) -> Iterator[Peer]:
    peer = start_tansu(workdir)
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def mongo_url(mongo_peer: Peer) -> str:
    return f"mongodb://127.0.0.1:{mongo_peer.port}/?retryWrites=false&directConnection=true"


@pytest.fixture(scope="session")
def bootstrap(kafka_peer: Peer) -> str:
    return f"127.0.0.1:{kafka_peer.port}"


@pytest.fixture
async def store(mongo_url: str) -> AsyncIterator[object]:
    """A fresh database (with indexes) per test on the session's SecantusDB."""
    from store.mongo import connect, ensure_indexes

    s = connect(mongo_url, f"t_{uuid.uuid4().hex[:12]}")
    await ensure_indexes(s)
    yield s
    await s.client.drop_database(s.db.name)
    await s.close()
