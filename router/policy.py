"""Pure routing policy: who may take a conversation, who should, and in which order to serve.

No I/O: the service feeds snapshots of agents and conversations in and reserves the winner
atomically in the store, so a stale snapshot can cost a retry but never a double assignment.

Eligibility: online, member of the conversation's team (if it has one), has every required
skill (language, segment, product…), and free capacity on the conversation's channel.
Ranking: the sticky agent (last to serve this customer, within the window), then least loaded
(weighted: the sum over channels of held / capacity), then longest idle, then id.
Queue order: priority (urgency words, VIP, SLA pressure), then earliest SLA due, then longest
waiting, then id.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

Language = Literal["fa", "en"]
SlaLevel = Literal["warning", "breached"]

ONLINE = "online"


@dataclass(frozen=True)
class AgentView:
    """What the policy knows about an agent: a snapshot, possibly a little stale."""

    agent_id: str
    status: str = ONLINE
    skills: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
    capacity: Mapping[str, int] = field(default_factory=dict)
    load: Mapping[str, int] = field(default_factory=dict)
    last_offered_at: datetime | None = None

    def free(self, channel: str) -> int:
        return self.capacity.get(channel, 0) - self.load.get(channel, 0)

    @property
    def utilisation(self) -> float:
        """Weighted load: each channel counts held / capacity (3 chats ≈ 10 emails)."""
        return sum(
            self.load.get(ch, 0) / cap for ch, cap in self.capacity.items() if cap > 0
        )

    def holding(self, channel: str) -> AgentView:
        """The same agent with one more conversation held on ``channel``."""
        load = dict(self.load)
        load[channel] = load.get(channel, 0) + 1
        return replace(self, load=load)


@dataclass(frozen=True)
class ConversationView:
    conversation_id: str
    channel: str
    waiting_since: datetime
    priority: int = 0
    required_skills: frozenset[str] = frozenset()
    team: str | None = None
    sla_due: datetime | None = None
    sticky_agent: str | None = None
    sticky_at: datetime | None = None
    passed: frozenset[str] = frozenset()  # agents who declined or let an offer expire


# ---------------------------------------------------------------------------- eligibility
def ineligible_reason(agent: AgentView, conv: ConversationView) -> str | None:
    """Why ``agent`` cannot take ``conv`` now, or None if it can."""
    if agent.status != ONLINE:
        return "offline"
    if conv.team is not None and conv.team not in agent.teams:
        return "team"
    if not conv.required_skills <= agent.skills:
        return "skills"
    if agent.capacity.get(conv.channel, 0) <= 0:
        return "channel"
    if agent.free(conv.channel) <= 0:
        return "capacity"
    return None


def eligible(agent: AgentView, conv: ConversationView) -> bool:
    return ineligible_reason(agent, conv) is None


def rank(
    conv: ConversationView,
    agents: Iterable[AgentView],
    now: datetime,
    sticky_window: timedelta = timedelta(hours=24),
) -> list[AgentView]:
    """Eligible agents for ``conv``, best first.

    Agents who already passed on it come after everyone else (they are still better than
    leaving the customer waiting when nobody else can take it).
    """
    sticky = conv.sticky_agent
    if sticky is not None and (conv.sticky_at is None or now - conv.sticky_at > sticky_window):
        sticky = None

    def key(a: AgentView) -> tuple[bool, bool, float, bool, datetime, str]:
        return (
            a.agent_id in conv.passed,
            a.agent_id != sticky,
            round(a.utilisation, 9),
            a.last_offered_at is not None,  # never offered = idle since forever
            a.last_offered_at or now,
            a.agent_id,
        )

    return sorted((a for a in agents if eligible(a, conv)), key=key)


def queue_key(conv: ConversationView) -> tuple[int, bool, datetime, datetime, str]:
    return (
        -conv.priority,
        conv.sla_due is None,
        conv.sla_due or conv.waiting_since,
        conv.waiting_since,
        conv.conversation_id,
    )


def order_queue(convs: Iterable[ConversationView]) -> list[ConversationView]:
    """Waiting conversations in the order they should be served."""
    return sorted(convs, key=queue_key)


def plan(
    convs: Iterable[ConversationView],
    agents: Sequence[AgentView],
    now: datetime,
    sticky_window: timedelta = timedelta(hours=24),
) -> list[tuple[ConversationView, list[AgentView]]]:
    """Decide a whole queue at once: each conversation with its candidates, best first.

    Conversations are taken in queue order; each one's first candidate is counted as holding
    it before the next is decided, so a batch spreads over agents as sequential decisions would.
    Conversations nobody can take are left out.
    """
    pool = {a.agent_id: a for a in agents}
    room: dict[str, int] = {}  # free units per channel among online agents: a cheap bound
    for a in agents:
        if a.status == ONLINE:
            for ch in a.capacity:
                room[ch] = room.get(ch, 0) + max(a.free(ch), 0)
    out: list[tuple[ConversationView, list[AgentView]]] = []
    for conv in order_queue(convs):
        if not any(room.values()):
            break  # everyone is full: the rest of the queue waits
        if room.get(conv.channel, 0) <= 0:
            continue
        ranked = rank(conv, pool.values(), now, sticky_window)
        if not ranked:
            continue
        best = ranked[0]
        pool[best.agent_id] = best.holding(conv.channel)
        room[conv.channel] -= 1
        out.append((conv, ranked))
    return out


# ---------------------------------------------------------------------------- classification
_ARABIC_SCRIPT = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]")
_LATIN = re.compile("[A-Za-z\u00c0-\u024f]")
_WORD = re.compile(r"\w+")


def detect_language(text: str | None) -> Language | None:
    """Script of the text: Persian/Arabic script → ``fa``, Latin → ``en``; None if neither.

    The majority of letters decides, so a Persian message quoting an English product name is
    still Persian.
    """
    if not text:
        return None
    arabic = len(_ARABIC_SCRIPT.findall(text))
    latin = len(_LATIN.findall(text))
    if arabic == 0 and latin == 0:
        return None
    return "fa" if arabic >= latin else "en"


def _fold(text: str) -> str:
    """Case- and form-insensitive text for keyword matching (ي/ی, ك/ک, ZWNJ, diacritics)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("ي", "ی").replace("ى", "ی").replace("ك", "ک").replace("ة", "ه")
    text = text.replace("\u200c", " ").replace("\u0640", "")
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


@functools.lru_cache(maxsize=1024)
def _fold_keyword(keyword: str) -> str:
    """A configured keyword, folded once (every new conversation is matched against all)."""
    return _fold(keyword).strip()


def urgency_matches(text: str | None, keywords: Iterable[str]) -> list[str]:
    """The configured urgency keywords found in ``text`` (whole words, or word prefixes for
    Persian, whose suffixes attach: «شکایتم» matches «شکایت»)."""
    if not text:
        return []
    words = _WORD.findall(_fold(text))
    joined = " ".join(words)
    found: list[str] = []
    for kw in keywords:
        k = _fold_keyword(kw)
        if not k:
            continue
        if " " in k:
            hit = k in joined
        elif _ARABIC_SCRIPT.search(k):
            hit = any(w.startswith(k) for w in words)
        else:
            hit = k in words
        if hit and kw not in found:
            found.append(kw)
    return found


@dataclass(frozen=True)
class Classification:
    language: Language | None
    priority: int
    required_skills: frozenset[str]
    urgency: tuple[str, ...]


def classify(
    text: str | None,
    *,
    keywords: Iterable[str],
    segment: str | None = None,
    skilled_segments: Iterable[str] = ("vip",),
    vip_segments: Iterable[str] = ("vip",),
    extra_skills: Iterable[str] = (),
    max_priority: int = 3,
) -> Classification:
    """Language, priority and required skills of a new conversation from its first words.

    Priority: +1 if any urgency keyword is present, +1 if the customer is in a VIP segment
    (SLA pressure adds more later). Required skills: ``lang:<language>``, ``segment:<s>`` for
    segments that need trained agents, and any configured extras (e.g. the inbox's product).
    """
    language = detect_language(text)
    matches = tuple(urgency_matches(text, keywords))
    priority = (1 if matches else 0) + (1 if segment and segment in set(vip_segments) else 0)
    skills = set(extra_skills)
    if language is not None:
        skills.add(f"lang:{language}")
    if segment and segment in set(skilled_segments):
        skills.add(f"segment:{segment}")
    return Classification(language, min(priority, max_priority), frozenset(skills), matches)


# ---------------------------------------------------------------------------- SLA
def sla_target(targets: Sequence[float], priority: int) -> float:
    """Target seconds for a priority: the list is indexed by priority, the last one repeats."""
    if not targets:
        raise ValueError("no SLA targets configured")
    return float(targets[min(max(priority, 0), len(targets) - 1)])


def sla_level(
    now: datetime, due: datetime | None, target: float, warn_fraction: float
) -> SlaLevel | None:
    """``breached`` past due, ``warning`` when less than ``warn_fraction`` of the target is
    left, else None."""
    if due is None:
        return None
    left = (due - now).total_seconds()
    if left <= 0:
        return "breached"
    if left <= target * warn_fraction:
        return "warning"
    return None
