"""The event contract: the only place event shapes are defined.

Every record on every omnihub topic is a CloudEvents 1.0 JSON envelope (structured mode) whose
``data`` is one of the models below. Other systems consume these events, so changes within a
version are additive only; ``pipeline/schemas/`` holds the exported JSON Schema and AsyncAPI
document and a test fails when they drift from this module.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

#: Namespace of every deterministic omnihub id (uuid5). Never change it: ids are stored.
NAMESPACE = uuid.UUID("6f6d6e69-6875-6200-8000-000000000001")

SPECVERSION: Literal["1.0"] = "1.0"

Channel = Literal["email", "sms", "telegram", "webchat", "call", "api"]
Direction = Literal["in", "out"]
IdentifierKind = Literal["phone", "email", "telegram", "webchat", "api"]
Assurance = Literal["channel", "claimed"]
MessageKind = Literal["message", "auto_reply", "bounce", "loop"]

# CloudEvent types, versioned. Consumers switch on these strings.
MESSAGE_RECEIVED = "omnihub.message.received.v1"
MESSAGE_DEADLETTERED = "omnihub.message.deadlettered.v1"
CUSTOMER_CREATED = "omnihub.customer.created.v1"
CUSTOMER_IDENTIFIED = "omnihub.customer.identified.v1"
CUSTOMER_MERGED = "omnihub.customer.merged.v1"
CUSTOMER_UNMERGED = "omnihub.customer.unmerged.v1"
INTERACTION_RECORDED = "omnihub.interaction.recorded.v1"
CONVERSATION_OPENED = "omnihub.conversation.opened.v1"
CONVERSATION_ASSIGNED = "omnihub.conversation.assigned.v1"
CONVERSATION_RESOLVED = "omnihub.conversation.resolved.v1"
CONVERSATION_REOPENED = "omnihub.conversation.reopened.v1"
SIGNAL_RAISED = "omnihub.signal.raised.v1"
REPLY_REQUESTED = "omnihub.reply.requested.v1"
REPLY_STATUS = "omnihub.reply.status.v1"
CONVERSATION_TYPING = "omnihub.conversation.typing.v1"


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone (e.g. 2026-01-01T10:00:00Z)")
    return value.astimezone(UTC)


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


# ---------------------------------------------------------------------------- message parts
class Identifier(_Frozen):
    """A raw identifier as the channel saw it; ``unify`` normalises it to ``kind:value``."""

    kind: IdentifierKind
    value: str = Field(min_length=1, max_length=512)
    assurance: Assurance = "channel"


class Attachment(_Frozen):
    """Metadata of a blob stored in GridFS; blobs never travel on Kafka."""

    name: str = Field(max_length=1024)
    type: str = Field("application/octet-stream", max_length=255)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    ref: str = Field(min_length=1, max_length=128, description="GridFS file id")
    omitted: str | None = Field(
        None,
        max_length=256,
        description="why the blob is not in GridFS on its own (e.g. larger than the size "
        "limit); ref then names the raw message kept whole (email: bucket raw_mail)",
    )


class CallInfo(_Frozen):
    duration: float = Field(ge=0, description="seconds")
    disposition: Literal["answered", "no-answer", "busy", "failed", "voicemail"] = "answered"
    recording_ref: str | None = None


class Message(_Frozen):
    """One inbound or outbound message on any channel: data of ``message.received``."""

    channel: Channel
    direction: Direction = "in"
    account: str = Field(
        min_length=1, max_length=256, description="which inbox/number/bot received it"
    )
    source_id: str = Field(min_length=1, max_length=512, description="provider message id")
    sender: list[Identifier] = Field(min_length=1, max_length=16)
    display_name: str | None = Field(None, max_length=256)
    thread: str = Field(min_length=1, max_length=512, description="channel thread key")
    occurred_at: AwareDatetime
    subject: str | None = Field(None, max_length=2048)
    text: str | None = Field(None, max_length=1_000_000)
    html: str | None = Field(None, max_length=5_000_000)
    attachments: list[Attachment] = Field(default_factory=list, max_length=100)
    call: CallInfo | None = None
    # -- optional, set by channels that have them (email) ------------------------------------
    kind: MessageKind = Field(
        "message",
        description="auto_reply, bounce and loop are recorded but never open a conversation "
        "or trigger an automatic answer",
    )
    quoted_text: str | None = Field(
        None, max_length=1_000_000, description="quoted history below the new text (email)"
    )
    in_reply_to: str | None = Field(None, max_length=512, description="email In-Reply-To id")
    references: list[str] = Field(
        default_factory=list, max_length=100, description="email References ids, oldest first"
    )

    @field_validator("text", "subject", "display_name", "quoted_text")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @property
    def event_id(self) -> str:
        return message_event_id(self.channel, self.account, self.source_id)


# ---------------------------------------------------------------------------- event data
class CustomerCreated(_Frozen):
    customer_id: str
    identifiers: list[str] = Field(description="normalised kind:value identifiers")
    display_name: str | None = None
    created_at: AwareDatetime


class CustomerIdentified(_Frozen):
    customer_id: str
    identifier: str
    assurance: Assurance = "channel"


class CustomerMerged(_Frozen):
    merge_id: str
    survivor_id: str
    merged_id: str
    reason: str


class CustomerUnmerged(_Frozen):
    merge_id: str
    survivor_id: str
    restored_id: str


class InteractionRecorded(_Frozen):
    interaction_id: str = Field(description="= id of the message.received event")
    customer_id: str
    conversation_id: str | None
    message: Message


class ConversationOpened(_Frozen):
    conversation_id: str
    customer_id: str
    channel: Channel
    account: str
    thread: str
    opened_at: AwareDatetime
    first_interaction_id: str
    priority: int = 0


class ConversationAssigned(_Frozen):
    conversation_id: str
    customer_id: str
    agent_id: str
    offer_id: str | None = None
    assigned_at: AwareDatetime


class ConversationResolved(_Frozen):
    conversation_id: str
    customer_id: str
    agent_id: str | None = None
    resolved_at: AwareDatetime


class ConversationReopened(_Frozen):
    conversation_id: str
    customer_id: str
    interaction_id: str
    reopened_at: AwareDatetime


class SignalRaised(_Frozen):
    signal_id: str
    customer_id: str
    conversation_id: str | None = None
    kind: str
    severity: Literal["info", "warning", "critical"] = "info"
    detail: str | None = None


class Reply(_Frozen):
    """An agent's reply for a connector to deliver (on ``omnihub.outbound.<channel>.v1``).

    Once delivered, the connector records it on the timeline as a ``message.received`` with
    ``direction="out"`` and reports ``reply.status``.
    """

    reply_id: str
    conversation_id: str
    customer_id: str
    agent_id: str | None = None
    channel: Channel
    account: str = Field(description="the inbox/number/bot to send from")
    thread: str
    to: list[str] = Field(min_length=1, description="normalised kind:value recipients")
    subject: str | None = None
    text: str = Field(max_length=1_000_000)
    html: str | None = None
    in_reply_to: str | None = Field(None, description="source_id of the message answered")
    references: list[str] = Field(default_factory=list)
    attachments: list[Attachment] = Field(default_factory=list)
    requested_at: AwareDatetime


class ReplyStatus(_Frozen):
    reply_id: str
    conversation_id: str
    customer_id: str
    channel: Channel
    status: Literal["sent", "retrying", "failed"]
    source_id: str | None = Field(None, description="provider id of the sent message")
    error: str | None = None
    at: AwareDatetime


class Typing(_Frozen):
    """Someone is typing (or stopped): a lightweight, ephemeral signal with no stored effect.

    A visitor's typing goes on the customer-event stream (the router pushes it to the agent
    holding the conversation); an agent's typing goes on ``omnihub.outbound.<channel>.v1`` for
    the channel's connector to show to the customer. Consumers may drop these freely.
    """

    conversation_id: str | None = None
    customer_id: str | None = None
    channel: Channel
    account: str
    thread: str
    who: Literal["visitor", "agent"]
    state: Literal["start", "stop"]
    identifier: str | None = Field(
        None, description="the customer's normalised identifier on the channel (webchat:…)"
    )
    agent_id: str | None = None
    at: AwareDatetime


class DeadLetter(_Frozen):
    """A record that could not be processed, kept whole so it can be replayed."""

    stage: str = Field(description="where it failed: decode, validate, resolve, …")
    error: str
    topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    value_b64: str = Field(description="the original record value, base64")
    failed_at: AwareDatetime


DATA_TYPES: dict[str, type[_Frozen]] = {
    MESSAGE_RECEIVED: Message,
    MESSAGE_DEADLETTERED: DeadLetter,
    CUSTOMER_CREATED: CustomerCreated,
    CUSTOMER_IDENTIFIED: CustomerIdentified,
    CUSTOMER_MERGED: CustomerMerged,
    CUSTOMER_UNMERGED: CustomerUnmerged,
    INTERACTION_RECORDED: InteractionRecorded,
    CONVERSATION_OPENED: ConversationOpened,
    CONVERSATION_ASSIGNED: ConversationAssigned,
    CONVERSATION_RESOLVED: ConversationResolved,
    CONVERSATION_REOPENED: ConversationReopened,
    SIGNAL_RAISED: SignalRaised,
    REPLY_REQUESTED: Reply,
    REPLY_STATUS: ReplyStatus,
    CONVERSATION_TYPING: Typing,
}

D = TypeVar("D")


class CloudEvent(_Frozen, Generic[D]):
    """CloudEvents 1.0, structured JSON mode."""

    specversion: Literal["1.0"] = SPECVERSION
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=1024)
    type: str = Field(min_length=1, max_length=256)
    time: AwareDatetime
    subject: str | None = Field(None, max_length=1024)
    datacontenttype: Literal["application/json"] = "application/json"
    data: D

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()


# Pydantic keeps a parametrised model (``CloudEvent[Any]``) only through weak references: once
# no event of it is alive, the garbage collector takes it and the next ``CloudEvent[Any]``
# builds it anew: parse_event right after a collection took ~1.2 ms instead of ~0.08 ms, 10 %
# of the API's samples at 100 msg/s (bench/HISTORY.md, 2026-11-24 21:50). These keep them.
_AnyEvent = CloudEvent[Any]
_Head = CloudEvent[dict[str, Any]]  # an event whose data is not validated yet


# ---------------------------------------------------------------------------- ids and envelopes
def deterministic_id(*parts: str) -> str:
    """uuid5 over the parts, joined with a separator no part may contain."""
    for part in parts:
        if "\x1f" in part:
            raise ValueError("id parts must not contain U+001F")
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def message_event_id(channel: str, account: str, source_id: str) -> str:
    """Id of a message event: the same provider message always gets the same id."""
    return deterministic_id(channel, account, source_id)


def derived_id(parent_id: str, kind: str) -> str:
    """Id of something caused by an event (its customer, conversation, emitted events)."""
    return deterministic_id(parent_id, kind)


def envelope(
    type_: str,
    data: BaseModel,
    *,
    id: str,
    source: str,
    subject: str | None = None,
    time: datetime | None = None,
) -> CloudEvent[Any]:
    expected = DATA_TYPES.get(type_)
    if expected is None or not isinstance(data, expected):
        raise TypeError(f"{type_} carries {expected.__name__ if expected else 'nothing'}")
    return _AnyEvent(
        id=id, source=source, type=type_, time=time or utcnow(), subject=subject, data=data
    )


def message_event(
    message: Message, *, source: str, time: datetime | None = None
) -> CloudEvent[Any]:
    return envelope(
        MESSAGE_RECEIVED,
        message,
        id=message.event_id,
        source=source,
        subject=f"{message.channel}:{message.thread}",
        time=time,
    )


class ContractError(ValueError):
    """A record is not a valid omnihub event; ``field`` names what was wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def parse_event(raw: bytes | str, *, expect: str | None = None) -> CloudEvent[Any]:
    """Parse and validate a CloudEvent whose data matches its type.

    Raises ContractError naming the first bad field.
    """
    try:
        head = _Head.model_validate_json(raw)
    except ValidationError as exc:
        raise _contract_error(exc) from None
    if expect is not None and head.type != expect:
        raise ContractError(f"expected event type {expect}, got {head.type}", "type")
    model = DATA_TYPES.get(head.type)
    if model is None:
        raise ContractError(f"unknown event type {head.type!r}", "type")
    try:
        data = model.model_validate(head.data)
    except ValidationError as exc:
        raise _contract_error(exc, prefix="data") from None
    return _AnyEvent(**{**head.model_dump(exclude={"data"}), "data": data})


def _contract_error(exc: Any, prefix: str | None = None) -> ContractError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    if prefix:
        loc = f"{prefix}.{loc}" if loc else prefix
    return ContractError(f"{loc or 'event'}: {first.get('msg', 'invalid')}", loc or None)
