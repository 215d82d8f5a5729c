"""nDCG@10 of an embedding space's model on a BEIR dataset (``clipembed model compare --beir``).

The benchmark lives in the evaluation schema (``clipembed.eval.beir``), never in the product's
tables; each space's model embeds the documents in turn (``prepare`` re-embeds when the model
or the dimensions differ from what the tables hold).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipembed.eval import beir

if TYPE_CHECKING:
    from clipembed.runtime import Runtime
    from clipembed.spaces import Space


async def beir_scores(rt: Runtime, space: Space, directory: Path) -> dict[str, Any]:
    """nDCG@10 in semantic and hybrid mode of the space's model on a BEIR dataset."""
    data = beir.load(directory)
    svc = await rt.service_for(space)
    await beir.prepare(rt.pool, data, svc)
    report = await beir.evaluate(rt.pool, data, svc, modes=("semantic", "hybrid"))
    return {mode: figures["ndcg@10"] for mode, figures in report["modes"].items()}
