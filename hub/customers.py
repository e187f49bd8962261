"""Customer API: lookup by any raw identifier form or by name, profile with merge history,
timeline, merge suggestions, unmerge, and verification codes for claimed identifiers.

Customers' data is personal: these routes need the API token or a supervisor/admin; agents
see a customer through the conversations offered or assigned to them (router/api.py)."""

from __future__ import annotations

from aiohttp import web

from hub.identity import IdentityActionError, IdentityActions
from hub.web import (
    STORE,
    ApiError,
    decode_cursor,
    encode_cursor,
    json_response,
    not_found,
    principal,
    read_json,
    require_role,
)
from router.api import public
from store import customers, identities, interactions, merges, suggestions
from store.mongo import Doc, Store
from unify.identifiers import InvalidIdentifier, parse_identifier
from unify.text import query_tokens

REGION: web.AppKey[str] = web.AppKey("default_region", str)
ACTIONS: web.AppKey[IdentityActions] = web.AppKey("identity_actions", IdentityActions)
MAX_LIMIT = 200


def _supervisor(request: web.Request) -> str:
    p = require_role(principal(request), "supervisor")
    return p.agent_id or "system"


def _parse_identifier(request: web.Request, raw: object, field: str = "identifier") -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ApiError(400, "invalid_field", f"{field}: required, e.g. phone:+98912…", field)
    try:
        return parse_identifier(raw, default_region=request.app[REGION])
    except InvalidIdentifier as exc:
        raise ApiError(400, "invalid_field", f"{field}: {exc}", field) from None


async def _act(coro: object) -> object:
    try:
        return await coro  # type: ignore[misc]
    except IdentityActionError as exc:
        raise ApiError(exc.status, exc.code, str(exc), exc.field) from None


async def profile(store: Store, customer_id: str) -> dict[str, object] | None:
    """The customer (its survivor if merged) with its identifiers, the merges it took part
    in and its open merge suggestions; None if there is no such customer."""
    doc = await customers.get(store, customer_id)
    if doc is None:
        return None
    owned = await identities.of_customer(store, doc["_id"])
    return await _profile(store, doc, owned, customer_id)


async def profile_of(store: Store, identifier: str) -> dict[str, object] | None:
    """:func:`profile` of the customer ``identifier`` belongs to; None if no one owns it.

    Most customers take one read (identity, customer and identifiers together)."""
    found = await identities.owner_of(store, identifier)
    if found is None:
        return None
    owner, doc, owned = found
    if doc is None or doc.get("merged_into"):
        return await profile(store, owner)  # a merge is re-pointing it: follow it
    return await _profile(store, doc, owned, owner)


async def _profile(store: Store, doc: Doc, owned: list[str], asked: str) -> dict[str, object]:
    out = public(doc) or {}
    out["identifiers"] = owned
    # most customers were never named by a merge or a suggestion: their flags spare the
    # reads of both (SecantusDB serves one command at a time; a lookup was 6 of them)
    out["merges"] = []
    if customers.named_in(doc, "merges"):
        out["merges"] = [public(m) for m in await merges.history(store, doc["_id"])]
    out["merge_suggestions"] = []
    if customers.named_in(doc, "suggestions"):
        found = await suggestions.for_customer(store, [doc["_id"]])
        out["merge_suggestions"] = [public(s) for s in found]
    if doc["_id"] != asked:
        out["requested_id"] = asked  # asked for a merged customer: this is its survivor
    return out


async def _customer(request: web.Request, customer_id: str) -> dict[str, object]:
    out = await profile(request.app[STORE], customer_id)
    if out is None:
        raise not_found("customer")
    return out


async def find_customer(request: web.Request) -> web.Response:
    """``?identifier=`` in any written form (follows merges), or ``?name=`` search."""
    _supervisor(request)
    store = request.app[STORE]
    if "name" in request.query and "identifier" not in request.query:
        tokens = query_tokens(request.query["name"])
        if not tokens:
            raise ApiError(400, "invalid_field", "name: give at least one letter", "name")
        found = await customers.search_by_name(store, tokens)
        return json_response({"customers": [public(d) for d in found]})
    ident = _parse_identifier(request, request.query.get("identifier"))
    out = await profile_of(store, ident)
    if out is None:
        raise not_found(f"customer with {ident.split(':', 1)[0]} identifier")
    return json_response(out)


async def get_customer(request: web.Request) -> web.Response:
    _supervisor(request)
    return json_response(await _customer(request, request.match_info["customer_id"]))


async def timeline(request: web.Request) -> web.Response:
    _supervisor(request)
    store = request.app[STORE]
    doc = await customers.get(store, request.match_info["customer_id"])
    if doc is None:
        raise not_found("customer")
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise ApiError(400, "invalid_field", "limit: an integer", "limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "invalid_field", f"limit: between 1 and {MAX_LIMIT}", "limit")
    before = request.query.get("before")
    page = await interactions.timeline(
        store, [doc["_id"]], limit=limit + 1, before=decode_cursor(before) if before else None
    )
    more = len(page) > limit
    page = page[:limit]
    return json_response(
        {
            "customer_id": doc["_id"],
            "items": [public(i) for i in page],
            "next": encode_cursor(page[-1]) if more and page else None,
        }
    )


# ---------------------------------------------------------------------------- suggestions
async def list_suggestions(request: web.Request) -> web.Response:
    _supervisor(request)
    state = request.query.get("state", "open")
    if state not in ("open", "confirmed", "rejected"):
        raise ApiError(400, "invalid_field", "state: open, confirmed or rejected", "state")
    docs = await suggestions.list_by_state(request.app[STORE], state)
    return json_response({"suggestions": [public(d) for d in docs]})


async def customer_suggestions(request: web.Request) -> web.Response:
    _supervisor(request)
    docs = await suggestions.for_customer(
        request.app[STORE], [request.match_info["customer_id"]], request.query.get("state", "open")
    )
    return json_response({"suggestions": [public(d) for d in docs]})


async def confirm_suggestion(request: web.Request) -> web.Response:
    by = _supervisor(request)
    doc = await _act(request.app[ACTIONS].decide(request.match_info["suggestion_id"], True, by))
    return json_response(public(doc))  # type: ignore[arg-type]


async def reject_suggestion(request: web.Request) -> web.Response:
    by = _supervisor(request)
    doc = await _act(request.app[ACTIONS].decide(request.match_info["suggestion_id"], False, by))
    return json_response(public(doc))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- unmerge
async def unmerge(request: web.Request) -> web.Response:
    by = _supervisor(request)
    body = await read_json(request) if request.can_read_body else {}
    merge_id = body.get("merge_id") if isinstance(body, dict) else None
    if merge_id is not None and not isinstance(merge_id, str):
        raise ApiError(400, "invalid_field", "merge_id: a string", "merge_id")
    done = await _act(request.app[ACTIONS].unmerge(request.match_info["customer_id"], merge_id, by))
    return json_response({"merge": public(done)})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- verification
async def start_verification(request: web.Request) -> web.Response:
    _supervisor(request)
    body = await read_json(request)
    ident = _parse_identifier(request, body.get("identifier") if isinstance(body, dict) else None)
    doc = await _act(
        request.app[ACTIONS].start_verification(request.match_info["customer_id"], ident)
    )
    assert isinstance(doc, dict)
    return json_response(
        {
            "id": doc["_id"],
            "identifier": ident,
            "state": doc["state"],
            "expires_at": doc["expires_at"],
        },
        201,
    )


async def confirm_verification(request: web.Request) -> web.Response:
    _supervisor(request)
    body = await read_json(request)
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str) or not code.strip().isdigit():
        raise ApiError(400, "invalid_field", "code: the digits that were sent", "code")
    doc = await _act(
        request.app[ACTIONS].confirm_verification(request.match_info["verification_id"], code)
    )
    assert isinstance(doc, dict)
    return json_response(
        {
            "id": doc["_id"],
            "identifier": doc["identifier"],
            "customer_id": doc["customer_id"],
            "state": "confirmed",
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/customers", find_customer),
        web.get("/api/v1/customers/{customer_id}", get_customer),
        web.get("/api/v1/customers/{customer_id}/timeline", timeline),
        web.get("/api/v1/customers/{customer_id}/suggestions", customer_suggestions),
        web.post("/api/v1/customers/{customer_id}/unmerge", unmerge),
        web.post("/api/v1/customers/{customer_id}/verifications", start_verification),
        web.post("/api/v1/verifications/{verification_id}/confirm", confirm_verification),
        web.get("/api/v1/merge-suggestions", list_suggestions),
        web.post("/api/v1/merge-suggestions/{suggestion_id}/confirm", confirm_suggestion),
        web.post("/api/v1/merge-suggestions/{suggestion_id}/reject", reject_suggestion),
    ]
