"""What a conversation's routing starts from: language, required skills, urgency, priority and
SLA due times, judged on its latest customer message and the customer's segment.

Pure. The ingest worker classifies a conversation in the write that opens it (it has the
message at hand); the router classifies what arrives unclassified (a reopened conversation,
data from before this existed). Both pass the same configuration (``RouterConfig``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from router import policy
from store.mongo import Doc

PREVIEW = 200  # characters of the message an offer shows


class Config(Protocol):
    """What classification reads of the routing settings (RouterConfig, frozen, has it)."""

    @property
    def urgency_keywords(self) -> tuple[str, ...]: ...

    @property
    def vip_segments(self) -> tuple[str, ...]: ...

    @property
    def skilled_segments(self) -> tuple[str, ...]: ...

    @property
    def account_skills(self) -> dict[str, list[str]]: ...

    @property
    def sla_first_response(self) -> tuple[float, ...]: ...

    @property
    def sla_resolution(self) -> tuple[float, ...]: ...

    @property
    def sla_warn_fraction(self) -> float: ...


def classification(
    cfg: Config, conv: Doc, message: Doc | None, segment: str | None, now: datetime
) -> dict[str, Any]:
    """The fields to store on ``conv``; ``message`` has its ``subject``/``text`` (or None)."""
    text = " ".join(x for x in ((message or {}).get("subject"), (message or {}).get("text")) if x)
    cls = policy.classify(
        text,
        keywords=cfg.urgency_keywords,
        segment=segment,
        skilled_segments=cfg.skilled_segments,
        vip_segments=cfg.vip_segments,
        extra_skills=[
            *cfg.account_skills.get(conv.get("account", ""), []),
            *(conv.get("skills") or []),
        ],
    )
    start = conv.get("reopened_at") or conv.get("opened_at") or now
    base = conv.get("base_priority")
    priority = max(int(conv.get("priority") or 0 if base is None else base), cls.priority)
    fr = policy.sla_target(cfg.sla_first_response, priority)
    res = policy.sla_target(cfg.sla_resolution, priority)
    warn = 1 - cfg.sla_warn_fraction
    return {
        "classified_at": now,
        "language": cls.language,
        "priority": priority,
        "base_priority": priority,  # before SLA raises: the targets' key
        "required_skills": sorted(cls.required_skills),
        "urgency": list(cls.urgency),
        "segment": segment,
        "first_response_due": start + timedelta(seconds=fr),
        "first_response_warn_at": start + timedelta(seconds=fr * warn),
        "resolution_due": start + timedelta(seconds=res),
        "resolution_warn_at": start + timedelta(seconds=res * warn),
        # what an offer shows of it
        "preview": ((message or {}).get("text") or (message or {}).get("subject") or "")[:PREVIEW],
    }
