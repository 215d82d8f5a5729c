"""Embedding spaces: vectors per model, one active space, promote and rollback (issue 10).

See :mod:`clipembed.spaces.registry` for the model and the operations, :mod:`.mirror` for the
specification's columns on ``clips``, :mod:`.vectors` for importing vectors made elsewhere and
:mod:`.compare` for comparing two spaces before a promote.
"""

from clipembed.spaces.registry import (
    DEFAULT_STORAGE,
    Coverage,
    Space,
    SpaceError,
    active,
    active_in,
    all_spaces,
    by_name,
)

__all__ = [
    "DEFAULT_STORAGE",
    "Coverage",
    "Space",
    "SpaceError",
    "active",
    "active_in",
    "all_spaces",
    "by_name",
]
