"""teams: named groups of agents; a conversation transferred to a team waits for its members."""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.collection import AsyncCollection

from store.mongo import Doc, Store


def _col(store: Store) -> AsyncCollection[Doc]:
    return store.db["teams"]


async def create(store: Store, doc: Doc) -> None:
    """Insert a team; raises DuplicateKeyError if its id is taken."""
    await _col(store).insert_one(doc)


async def get(store: Store, team_id: str) -> Doc | None:
    return await _col(store).find_one({"_id": team_id})


async def list_all(store: Store) -> list[Doc]:
    return [d async for d in _col(store).find({}).sort("_id", 1)]


async def missing(store: Store, team_ids: Sequence[str]) -> list[str]:
    """The ids among ``team_ids`` that name no team."""
    if not team_ids:
        return []
    found = {d["_id"] async for d in _col(store).find({"_id": {"$in": list(team_ids)}}, {"_id": 1})}
    return [t for t in team_ids if t not in found]
