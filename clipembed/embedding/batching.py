"""Token-aware batching: pure, so it can be tested as a table and with hypothesis.

A request may carry at most ``max_inputs`` inputs and ``max_tokens`` tokens (OpenAI: 2,048 and
300,000). Inputs are packed greedily in order, which keeps batches full and the mapping back to
the caller's order trivial (pgai's ``batch_indices`` does the same).
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(
    token_counts: Sequence[int], *, max_inputs: int, max_tokens: int
) -> list[list[int]]:
    """Split input indices into batches within both limits, keeping order.

    Every index appears in exactly one batch. An input that alone exceeds ``max_tokens`` cannot
    be sent at all (inputs are truncated before batching), so it is a ValueError.
    """
    if max_inputs < 1 or max_tokens < 1:
        raise ValueError("max_inputs and max_tokens must be positive")
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, count in enumerate(token_counts):
        if count < 0:
            raise ValueError(f"input {index} has a negative token count")
        if count > max_tokens:
            raise ValueError(
                f"input {index} has {count} tokens, more than {max_tokens} per request"
            )
        if current and (len(current) >= max_inputs or used + count > max_tokens):
            batches.append(current)
            current, used = [], 0
        current.append(index)
        used += count
    if current:
        batches.append(current)
    return batches
