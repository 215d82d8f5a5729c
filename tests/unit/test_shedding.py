"""Load shedding's bookkeeping (issue 18), with an injected clock."""

from __future__ import annotations

import pytest

from clipembed.api.shedding import MIN_SAMPLES, STARTUP_FACTOR, WINDOW, Shedder


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_before_anything_is_measured_a_multiple_of_the_pool_is_admitted():
    shedder = Shedder(connections=4, deadline_seconds=2.0, clock=Clock())
    admitted = sum(shedder.try_enter() for _ in range(100))
    assert admitted == 4 * STARTUP_FACTOR
    assert shedder.shed_total == 100 - admitted


def test_what_completes_within_the_deadline_is_admitted_and_the_rest_shed_at_once():
    clock = Clock()
    shedder = Shedder(connections=2, deadline_seconds=1.0, clock=clock)
    # searches complete at 10 per second for one WINDOW
    for i in range(int(WINDOW * 10)):
        assert shedder.try_enter()
        clock.now = i / 10
        shedder.leave()
    assert shedder.throughput() == pytest.approx(10.0)
    # at 10/s, ten in flight are served within the 1 s deadline; the eleventh is shed
    assert [shedder.try_enter() for _ in range(11)] == [True] * 10 + [False]
    assert shedder.in_flight == 10 and shedder.shed_total == 1


def test_never_fewer_than_the_pool_and_a_stall_falls_back_to_the_startup_rule():
    clock = Clock()
    shedder = Shedder(connections=3, deadline_seconds=0.5, clock=clock)
    for _ in range(MIN_SAMPLES):
        shedder.try_enter()
        shedder.leave()
    clock.now = 0.1
    assert shedder.allowed() >= 3  # a slow rate still admits one search per connection
    clock.now = 100.0  # nothing completed for a long time: the window holds too few samples
    assert shedder.throughput() is None
    assert shedder.allowed() == 3 * STARTUP_FACTOR


def test_an_admitted_search_is_cut_early_enough_to_answer_within_the_deadline():
    """Cut at 1.7 s of a 2 s deadline: 0.3 s is left for the wait before admission, the
    cancellation and the 503 itself."""
    shedder = Shedder(connections=1, deadline_seconds=2.0, clock=Clock())
    assert shedder.deadline_from(10.0) == pytest.approx(11.7)


def test_the_rate_is_taken_over_the_span_the_completions_cover():
    """Searches starting after a quiet spell: ten completions in half a second are 20 a
    second; divided by the whole window they were 2, and searches were refused at once."""
    clock = Clock()
    shedder = Shedder(connections=2, deadline_seconds=2.0, clock=clock)
    clock.now = 100.0  # long after start-up, nothing completed lately
    for i in range(11):
        assert shedder.try_enter()
        clock.now = 100.0 + i * 0.05
        shedder.leave()
    assert shedder.throughput() == pytest.approx(20.0)
    assert shedder.allowed() == 40  # 20 a second within the 2 s deadline


def test_a_short_stall_does_not_shut_the_door_on_a_steady_rate():
    """20 searches/s for a whole window, then 1.5 s in which nothing completes (a checkpoint,
    an index build's last write): the searches that piled up behind the stall (30) are still
    admitted; the capacity measured over the window barely moved."""
    clock = Clock()
    shedder = Shedder(connections=8, deadline_seconds=2.0, clock=clock)
    steady = int(WINDOW * 20)
    for i in range(steady):
        shedder.try_enter()
        clock.now = i / 20
        shedder.leave()
    clock.now += 1.5
    assert shedder.allowed() >= 0.9 * 20 * 2.0
    assert all(shedder.try_enter() for _ in range(30))


def test_searches_that_did_not_answer_do_not_count_as_capacity():
    """Searches cut at their deadline leave without raising the rate: 30 cut and 10 answered
    over a window read as the 10, not as 40."""
    clock = Clock()
    shedder = Shedder(connections=2, deadline_seconds=2.0, clock=clock)
    for i in range(40):
        shedder.try_enter()
        clock.now = i * WINDOW / 40
        shedder.leave(answered=i % 4 == 0)
    assert shedder.in_flight == 0
    assert shedder.throughput() == pytest.approx(9 / (39 * WINDOW / 40))  # 10 answers, 9 gaps
