"""How stored documents look in the API: ``_id`` becomes ``id``; secrets never leave."""

from __future__ import annotations

from store.agents import load_of
from store.mongo import Doc

HIDDEN = ("password_hash", "token_hash", "holds")


def public(doc: Doc | None) -> Doc | None:
    if doc is None:
        return None
    out = {"id": doc["_id"], **{k: v for k, v in doc.items() if k != "_id"}}
    if "holds" in doc:
        out["load"] = load_of(doc)
    for key in HIDDEN:
        out.pop(key, None)
    return out
