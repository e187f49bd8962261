"""Exported JSON Schema and AsyncAPI 3 document of the event contract, for other systems.

``python -m pipeline.schemas`` rewrites the files from ``pipeline/contract.py``; a test fails
when the committed files differ from what the code generates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import contract as c
from pipeline import topics

HERE = Path(__file__).parent

# which topic carries which event types
CHANNELS: dict[str, tuple[str, str, list[str]]] = {
    "inbound": (
        topics.INBOUND,
        "Messages from connectors; key = channel:sender.",
        [c.MESSAGE_RECEIVED],
    ),
    "customerEvents": (
        topics.CUSTOMER_EVENTS,
        "Public customer-event stream; key = customer_id. Ids are deterministic: "
        "deduplicate on `id` (delivery is at-least-once).",
        [
            c.CUSTOMER_CREATED,
            c.CUSTOMER_IDENTIFIED,
            c.CUSTOMER_MERGED,
            c.CUSTOMER_UNMERGED,
            c.INTERACTION_RECORDED,
            c.CONVERSATION_OPENED,
            c.CONVERSATION_ASSIGNED,
            c.CONVERSATION_RESOLVED,
            c.CONVERSATION_REOPENED,
            c.SIGNAL_RAISED,
            c.CONVERSATION_TYPING,
        ],
    ),
    "outboundWebchat": (
        topics.outbound("webchat"),
        "Agent replies and agent typing for the web chat connector to show to visitors; "
        "key = customer_id.",
        [c.REPLY_REQUESTED, c.CONVERSATION_TYPING],
    ),
    "deadletter": (
        topics.DEADLETTER,
        "Records that failed processing, with the original bytes.",
        [c.MESSAGE_DEADLETTERED],
    ),
}


def file_name(event_type: str) -> str:
    return f"{event_type}.schema.json"


def event_schema(event_type: str) -> dict[str, Any]:
    model = c.CloudEvent[c.DATA_TYPES[event_type]]  # type: ignore[name-defined]
    schema = model.model_json_schema(mode="serialization")
    schema["properties"]["type"] = {"const": event_type, "title": "Type", "type": "string"}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://omnihub.dev/schemas/{file_name(event_type)}"
    schema["title"] = event_type
    return schema


def asyncapi() -> dict[str, Any]:
    messages: dict[str, Any] = {}
    for event_type in c.DATA_TYPES:
        name = event_type.removeprefix("omnihub.").replace(".", "_")
        messages[name] = {
            "name": event_type,
            "contentType": "application/cloudevents+json",
            "payload": {"$ref": f"./{file_name(event_type)}"},
        }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for key, (address, description, types) in CHANNELS.items():
        refs = {t.removeprefix("omnihub.").replace(".", "_") for t in types}
        channels[key] = {
            "address": address,
            "description": description,
            "messages": {r: {"$ref": f"#/components/messages/{r}"} for r in sorted(refs)},
        }
        operations[f"consume_{key}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "omnihub events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 (structured JSON) on every topic. Types are "
            "versioned; changes within a version are additive only.",
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def generate() -> dict[str, str]:
    """File name → exact file content."""
    out = {
        file_name(t): json.dumps(event_schema(t), indent=2, ensure_ascii=False, sort_keys=True)
        + "\n"
        for t in c.DATA_TYPES
    }
    out["asyncapi.json"] = (
        json.dumps(asyncapi(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    )
    return out


def write(folder: Path = HERE) -> list[str]:
    files = generate()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return sorted(files)
