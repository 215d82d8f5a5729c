"""The queue's pure parts: the failure policy, backoff, and the worker's per-batch plan."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed import clips, errors
from clipembed.realtime import queue, worker_plan

PERM = queue.ErrorKind.PERMANENT
TRANS = queue.ErrorKind.TRANSIENT
HOUR = queue.TRANSIENT_GIVE_UP


@pytest.mark.parametrize(
    ("attempts", "kind", "waited", "dead"),
    [
        (1, PERM, 0, False),
        (4, PERM, 0, False),
        (5, PERM, 0, True),  # the budget is spent
        (9, PERM, 0, True),
        (5, TRANS, 0, False),  # an outage: keep trying
        (50, TRANS, HOUR - 1, False),
        (4, TRANS, HOUR + 1, False),  # an hour old but budget left
        (5, TRANS, HOUR, True),  # budget spent and an hour of failures: give up
    ],
)
def test_decide_table(attempts, kind, waited, dead):
    d = queue.decide(attempts, kind, max_attempts=5, waited=waited, rand=1.0)
    assert d.dead_letter is dead
    assert (d.delay == 0) is dead


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(1, 2.0), (2, 4.0), (3, 8.0), (9, 512.0), (10, 600.0), (10_000, 600.0)],
)
def test_permanent_backoff_doubles_up_to_ten_minutes(attempts, expected):
    assert queue.decide(attempts, PERM, max_attempts=10**6, waited=0, rand=1.0).delay == expected


@pytest.mark.parametrize(("attempts", "expected"), [(1, 2.0), (5, 32.0), (6, 60.0), (99, 60.0)])
def test_transient_backoff_is_capped_at_a_minute(attempts, expected):
    assert queue.decide(attempts, TRANS, max_attempts=5, waited=0, rand=1.0).delay == expected


@given(attempts=st.integers(0, 10**9), rand=st.floats(0, 1))
def test_retry_delay_is_jittered_within_half_to_full_step(attempts, rand):
    full = queue.retry_delay(attempts, rand=1.0)
    d = queue.retry_delay(attempts, rand=rand)
    assert 0.5 * full <= d <= full <= queue.BACKOFF_MAX
    assert d >= queue.BACKOFF_BASE / 2


@given(a=st.integers(1, 200), b=st.integers(1, 200))
def test_retry_delay_never_shrinks_with_more_attempts(a, b):
    lo, hi = sorted((a, b))
    assert queue.retry_delay(lo, rand=1.0) <= queue.retry_delay(hi, rand=1.0)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (errors.RetryableProviderError("502"), TRANS),
        (errors.RateLimitedError("429"), TRANS),
        (errors.PermanentProviderError("400 bad input"), PERM),
        (ValueError("a bug"), PERM),
        ("plain text", PERM),
    ],
)
def test_classify(error, kind):
    assert queue.classify(error) is kind


# --- the worker's plan ----------------------------------------------------------------------

MODEL, DIMS = "m", 8


def row(title: str, *, stored: bytes | None = None, model: str = MODEL, removed=False) -> dict:
    return {
        "title": title,
        "broadcaster_name": "b",
        "creator_name": "c",
        "game_name": None,
        "is_removed": removed,
        "embedding_model": model if stored else None,
        "embedding_content_hash": stored,
        "missing": stored is None,
    }


def digest(title: str, model: str = MODEL, dims: int = DIMS) -> bytes:
    text = clips.embedding_text(clips.ClipText(title, "b", "c", None))
    return clips.content_hash(text, model, dims)


def item() -> queue.Claimed:
    return queue.Claimed(uuid.uuid4(), 1, 1)


def plan(items, rows, **kw) -> worker_plan.Plan:
    """The plan for one space whose stored hashes are the rows' ``embedding_content_hash``."""
    stored = {
        k: r["embedding_content_hash"] for k, r in rows.items() if r["embedding_content_hash"]
    }
    return worker_plan.plan(items, rows, stored, **kw)


def test_plan_embeds_only_what_changed():
    new, same, edited, other_model, removed, gone = (item() for _ in range(6))
    rows = {
        new.clip_id: row("new"),
        same.clip_id: row("same", stored=digest("same")),
        edited.clip_id: row("edited now", stored=digest("edited before")),
        other_model.clip_id: row("x", stored=digest("x", model="old"), model="old"),
        removed.clip_id: row("r", removed=True),
    }
    p = plan([new, same, edited, other_model, removed, gone], rows, model=MODEL, dimensions=DIMS)
    assert [i for i, _, _ in p.embed] == [new, edited, other_model]
    assert set(p.retire) == {same, removed, gone}
    assert p.unchanged == 1
    text = dict((i, t) for i, t, _ in p.embed)[edited]
    assert "edited now" in text
    assert dict((i, h) for i, _, h in p.embed)[edited] == digest("edited now")


def test_plan_re_embeds_when_the_dimensions_change():
    it = item()
    rows = {it.clip_id: row("t", stored=digest("t", dims=DIMS))}
    assert plan([it], rows, model=MODEL, dimensions=DIMS).unchanged == 1
    assert len(plan([it], rows, model=MODEL, dimensions=DIMS * 2).embed) == 1


@given(
    titles=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=10),
    stored=st.lists(st.booleans(), min_size=10, max_size=10),
)
def test_plan_partitions_every_item_exactly_once(titles, stored):
    items = [item() for _ in titles]
    rows = {
        i.clip_id: row(t, stored=digest(t) if s else None)
        for i, t, s in zip(items, titles, stored, strict=False)
    }
    p = plan(items, rows, model=MODEL, dimensions=DIMS)
    seen = [i for i, _, _ in p.embed] + list(p.retire)
    assert sorted(map(id, seen)) == sorted(map(id, items))
    assert p.unchanged == sum(1 for t, s in zip(titles, stored, strict=False) if s)
