"""How stored documents look in the API: ``_id`` becomes ``id``; secrets never leave."""

from __future__ import annotations

from store.agents import load_of
from store.mongo import Doc

# secrets, and bookkeeping a reader learns better elsewhere (a customer's merges and
# suggestions are listed in full beside its flags)
HIDDEN = ("password_hash", "token_hash", "holds", "in_merges", "in_suggestions")


def public(doc: Doc | None) -> Doc | None:
    if doc is None:
        return None
    out = {"id": doc["_id"], **{k: v for k, v in doc.items() if k != "_id"}}
    if "holds" in doc:
        out["load"] = load_of(doc)
    for key in HIDDEN:
        out.pop(key, None)
    return out
