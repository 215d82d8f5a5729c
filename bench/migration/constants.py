"""What the phases share: the key, the spaces, tolerances."""

from __future__ import annotations

import re

KEY = "sk-test-0123456789abcdefBENCH"
DEFAULT_DIMS = 768
CAND = "cand"
CAND_MODEL = "text-embedding-3-large"
CAND_DIMS = 256
CAND_STORAGE = "halfvec"
SCORE_TOLERANCE = 2e-3
TIMEOUT_S = 120.0  # the load generator's patience per search (a timeout counts as failed)
WORD = re.compile(r"^[a-z]{3,}$")
STOP = {"the", "and", "for", "this", "that", "was", "with", "you", "are", "can", "not", "from"}
