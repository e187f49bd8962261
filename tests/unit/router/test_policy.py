from datetime import UTC, datetime, timedelta

import pytest

from router.policy import AgentView, rank

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("agents", "exclude", "expected"),
    [
        ([], (), []),
        ([AgentView("a", False, None)], (), []),  # offline agents never get offers
        (
            [AgentView("a", True, T0), AgentView("b", True, None)],
            (),
            ["b", "a"],
        ),  # never-offered first
        (
            [AgentView("a", True, T0 + timedelta(seconds=5)), AgentView("b", True, T0)],
            (),
            ["b", "a"],  # longest since last offer first
        ),
        ([AgentView("b", True, T0), AgentView("a", True, T0)], (), ["a", "b"]),  # tie → id
        ([AgentView("a", True, None), AgentView("b", True, None)], ("a",), ["b"]),
    ],
)
def test_rank(agents: list[AgentView], exclude: tuple[str, ...], expected: list[str]) -> None:
    assert [a.agent_id for a in rank(agents, exclude)] == expected
