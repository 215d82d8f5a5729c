"""Search-quality evaluation: BEIR benchmarks and known-item queries, with the product's code.

Kept apart from the runtime: its tables live in the ``clipembed_eval`` schema (an evaluation on
a production database leaves every product table untouched), and its reference implementation
(bm25s) is the ``eval`` extra. No runtime module imports this package.
"""
