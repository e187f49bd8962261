"""The exported schemas are what other systems build against: they must match the code."""

import json

from pipeline import schemas
from pipeline.contract import DATA_TYPES


def test_exported_files_match_the_contract() -> None:
    generated = schemas.generate()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in schemas.HERE.glob("*.json")}
    stale = sorted(set(on_disk) - set(generated))
    missing = sorted(set(generated) - set(on_disk))
    changed = sorted(n for n in generated if n in on_disk and on_disk[n] != generated[n])
    assert not (stale or missing or changed), (
        f"pipeline/schemas is out of date (stale={stale}, missing={missing}, changed={changed});"
        " run `make schemas` and commit the result"
    )


def test_asyncapi_names_every_event_type_and_topic() -> None:
    doc = json.loads(schemas.generate()["asyncapi.json"])
    assert doc["asyncapi"] == "3.0.0"
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert names == set(DATA_TYPES)
    addresses = {ch["address"] for ch in doc["channels"].values()} - {
        f"omnihub.outbound.{ch}.v1" for ch in ("email", "sms", "telegram", "webchat", "call", "api")
    }
    assert addresses == {
        "omnihub.inbound.v1",
        "omnihub.customer-events.v1",
        "omnihub.deadletter.v1",
    }


def test_each_schema_pins_its_type() -> None:
    for t in DATA_TYPES:
        s = json.loads(schemas.generate()[schemas.file_name(t)])
        assert s["properties"]["type"]["const"] == t
        assert "data" in s["required"]
