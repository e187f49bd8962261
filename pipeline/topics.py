"""Topic names: the only place they appear. Versioned; a new major shape gets a new topic."""

from __future__ import annotations

from dataclasses import dataclass

INBOUND = "omnihub.inbound.v1"
"""Every message from every connector (message.received), key = channel:sender."""

CUSTOMER_EVENTS = "omnihub.customer-events.v1"
"""Public stream of customer/interaction/conversation events, key = customer_id."""

DEADLETTER = "omnihub.deadletter.v1"
"""Records that could not be processed, with stage, error and the original bytes."""

OUTBOUND_CHANNELS = ("email", "sms", "telegram", "webchat", "call", "api")


def outbound(channel: str) -> str:
    """Agent replies for one channel's connector to send."""
    if channel not in OUTBOUND_CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    return f"omnihub.outbound.{channel}.v1"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    description: str


def all_topics(partitions: int) -> list[TopicSpec]:
    """Topics omnihub creates explicitly at start (never rely on auto-creation)."""
    specs = [
        TopicSpec(INBOUND, partitions, "messages from connectors"),
        TopicSpec(CUSTOMER_EVENTS, partitions, "public customer-event stream"),
        TopicSpec(DEADLETTER, 1, "records that failed processing"),
    ]
    specs += [
        TopicSpec(outbound(ch), partitions, f"replies to send on {ch}") for ch in OUTBOUND_CHANNELS
    ]
    return specs
