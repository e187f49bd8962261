"""Rate limits: a burst, then the refill rate; idle buckets are forgotten."""

from __future__ import annotations

from connectors.webchat.limits import RateLimiter


def test_a_burst_then_the_rate() -> None:
    rl = RateLimiter()
    # 6 a minute = one every 10 s, burst 3
    assert [rl.take("v", rate=6, burst=3, now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.take("v", rate=6, burst=3, now=0.0)
    assert 9.9 < wait <= 10.0
    assert rl.take("other", rate=6, burst=3, now=0.0) == 0.0  # keys are independent
    assert rl.take("v", rate=6, burst=3, now=5.0) > 0  # half a token back
    assert rl.take("v", rate=6, burst=3, now=10.1) == 0.0
    rl.give_back("v")
    assert rl.take("v", rate=6, burst=3, now=10.1) == 0.0


def test_full_buckets_are_swept() -> None:
    rl = RateLimiter(max_keys=2)
    rl.take("a", rate=60, burst=2, now=0.0)
    rl.take("b", rate=60, burst=2, now=0.0)
    assert len(rl) == 2
    rl.take("c", rate=60, burst=2, now=10.0)  # a and b have refilled: forgotten
    assert len(rl) == 1
