"""The identity API through the whole embedded stack: one person across channels, merges an
agent can see and undo, suggestions for typed (claimed) identifiers, name search."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_user_story import PORT_FLAGS, Stack
from tests.peers import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("identity") / "data", {f: free_port() for f in PORT_FLAGS})
    s.start()
    yield s
    s.interrupt()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    token = Path(stack.info["token_file"]).read_text().strip()
    async with aiohttp.ClientSession(
        base_url=stack.info["api"], headers={"Authorization": f"Bearer {token}"}
    ) as session:
        yield session


async def push(
    http: aiohttp.ClientSession, source_id: str, *sender: dict[str, str], **extra: Any
) -> str:
    body = {"source_id": source_id, "sender": list(sender), **extra}
    async with http.post("/api/v1/messages", json=body) as r:
        assert r.status == 202, await r.text()
        return str((await r.json())["id"])


async def eventually(
    http: aiohttp.ClientSession,
    path: str,
    check: Any,
    params: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with http.get(path, params=params) as r:
            body = await r.json() if r.status == 200 else None
        if body is not None and check(body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{path} {params}: never satisfied; last: {body}")
        await asyncio.sleep(0.2)


async def test_one_person_on_three_channels_is_one_customer_and_can_be_unmerged(
    http: aiohttp.ClientSession,
) -> None:
    phone = {"kind": "phone", "value": "۰۹۱۲ ۳۴۵ ۶۷۸۹"}
    email = {"kind": "email", "value": "Ali.Rezaei@Example.com"}
    await push(http, "sms-1", phone, display_name="علي رضائي", occurred_at="2026-01-01T08:00:00Z")
    await push(http, "mail-1", email, occurred_at="2026-01-02T08:00:00Z")
    by_mail = await eventually(
        http, "/api/v1/customers", lambda b: True, {"identifier": "ali.rezaei@example.com"}
    )
    # a CRM message carrying both (channel-assured) makes them one person
    await push(http, "crm-1", {"kind": "phone", "value": "+98 912 345 6789"}, email)
    merged = await eventually(
        http,
        "/api/v1/customers",
        lambda b: len(b["identifiers"]) == 2,
        {"identifier": "0098 912 345 6789"},
    )
    assert merged["identifiers"] == ["email:ali.rezaei@example.com", "phone:+989123456789"]
    assert merged["merges"][0]["loser_id"] == by_mail["id"]
    # the absorbed customer's id still leads to the survivor
    async with http.get(f"/api/v1/customers/{by_mail['id']}") as r:
        assert (await r.json())["id"] == merged["id"]
    timeline = await eventually(
        http, f"/api/v1/customers/{merged['id']}/timeline", lambda b: len(b["items"]) == 3
    )
    assert [i["source_id"] for i in timeline["items"]][-1] == "sms-1"
    # name search folds Arabic letters: «علي رضائي» is found as «علی رضایی»
    found = await eventually(
        http, "/api/v1/customers", lambda b: b["customers"], {"name": "علی رضا"}
    )
    assert found["customers"][0]["id"] == merged["id"]
    # a supervisor undoes the merge: both customers come back, each with its messages
    async with http.post(f"/api/v1/customers/{by_mail['id']}/unmerge") as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["merge"]["state"] == "undone"
    async with http.get("/api/v1/customers", params={"identifier": "ali.rezaei@example.com"}) as r:
        assert (await r.json())["id"] == by_mail["id"]
    async with http.post(f"/api/v1/customers/{by_mail['id']}/unmerge") as r:
        assert r.status == 404  # nothing left to undo


async def test_a_claimed_email_is_a_suggestion_a_supervisor_confirms(
    http: aiohttp.ClientSession,
) -> None:
    await push(
        http,
        "mail-9",
        {"kind": "email", "value": "sara@example.com"},
        occurred_at="2026-01-01T08:00:00Z",
    )
    await push(
        http,
        "form-9",
        {"kind": "api", "value": "visitor-9"},
        {"kind": "email", "value": "Sara@Example.com", "assurance": "claimed"},
    )
    visitor = await eventually(
        http, "/api/v1/customers", lambda b: b["merge_suggestions"], {"identifier": "api:visitor-9"}
    )
    sug = visitor["merge_suggestions"][0]
    assert sug["reason"] == "claimed" and sug["state"] == "open"
    async with http.get("/api/v1/customers", params={"identifier": "sara@example.com"}) as r:
        assert (await r.json())["id"] != visitor["id"]  # typed, so never linked by itself
    async with http.get("/api/v1/merge-suggestions") as r:
        assert sug["id"] in [s["id"] for s in (await r.json())["suggestions"]]
    async with http.post(f"/api/v1/merge-suggestions/{sug['id']}/confirm") as r:
        assert r.status == 200 and (await r.json())["state"] == "confirmed"
    one = await eventually(
        http,
        "/api/v1/customers",
        lambda b: len(b["identifiers"]) == 2,
        {"identifier": "api:visitor-9"},
    )
    assert "email:sara@example.com" in one["identifiers"]
    async with http.post(f"/api/v1/merge-suggestions/{sug['id']}/reject") as r:
        assert r.status == 409


async def test_identity_errors_are_clear(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/v1/customers", params={"identifier": "phone:12"}) as r:
        assert r.status == 400 and (await r.json())["error"]["field"] == "identifier"
    async with http.get("/api/v1/customers", params={"name": "  "}) as r:
        assert r.status == 400
    async with http.post("/api/v1/merge-suggestions/nope/confirm") as r:
        assert r.status == 404
    async with http.post(
        "/api/v1/customers/nobody/verifications", json={"identifier": "phone:09121234567"}
    ) as r:
        assert r.status == 404
