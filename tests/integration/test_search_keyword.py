"""The keyword branch's two plans (score-order probing, filter-first) rank identically."""

from __future__ import annotations

import json

import pytest

from clipembed import demo_data, runtime
from clipembed.bulk import importer
from clipembed.search import clips as clip_search
from clipembed.search import core, statistics
from tests.integration.test_search import _settings

QUERIES = ["insane clutch chat", "world record speedrun skip", "boss fight first try", "funny"]


async def test_filter_first_and_probing_give_the_same_ranking(database_factory, tmp_path):
    url = database_factory.new(dimensions=384)
    clips = list(demo_data.generate(1500, seed=5))
    path = tmp_path / "clips.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in clips) + "\n")
    games = sorted({c["game_name"] for c in clips if c["game_name"]})
    broadcaster = clips[0]["broadcaster_name"]
    cfg = _settings(url, tmp_path)
    async with runtime.open_runtime(cfg, with_service=False) as rt, rt.pool.connection() as conn:
        await importer.import_file(conn, path)
        await conn.commit()
        checked = 0
        for filters in [
            clip_search.Filters(game=games[0]),
            clip_search.Filters(game=games[-1].upper()),
            clip_search.Filters(broadcaster=broadcaster),
            clip_search.Filters(game=games[1], include_nsfw=True),
        ]:
            for q in QUERIES:
                for n in (5, 200):
                    args = (conn, clip_search.CLIPS, q, filters.where(), core.Params(), n)
                    probed = await core.keyword_branch(*args)
                    first = await core.keyword_branch(*args, filter_first=True)
                    assert [d for d, _ in first] == [d for d, _ in probed], (filters, q, n)
                    assert [s for _, s in first] == pytest.approx([s for _, s in probed])
                    checked += bool(probed)
        assert checked >= 10  # the filters left something to rank
        assert clip_search.Filters(game="x").selective and not clip_search.Filters().selective


async def test_very_common_terms_are_dropped_when_rarer_ones_remain(
    database_factory, tmp_path, monkeypatch
):
    """The cost bound: a lexeme in most documents is not ranked when the query has a rarer one;
    alone, it still is."""
    from tests.plugins.jobs import clip_record, load_clips

    url = database_factory.new(dimensions=384)
    titles = [f"stream highlight {i}" for i in range(30)] + ["stream highlight unicorn"]
    await load_clips(url, [clip_record(i, title=t) for i, t in enumerate(titles)], tmp_path)
    monkeypatch.setattr(statistics, "COMMON_MIN_POSTINGS", 5)
    cfg = _settings(url, tmp_path)
    async with runtime.open_runtime(cfg, with_service=False) as rt, rt.pool.connection() as conn:
        kept = await statistics.document_frequencies(
            conn, clip_search.CLIPS, "stream highlight unicorn", 31.0
        )
        assert kept == {"unicorn": 1}
        # only very common words: kept, each counted exactly past the probe's cap (6)
        assert await statistics.document_frequencies(conn, clip_search.CLIPS, "stream", 31.0) == {
            "stream": 31
        }
        hits = await clip_search.search(
            rt.pool,
            None,
            "stream unicorn",
            params=core.Params(mode="keyword", limit=5),
            filters=clip_search.Filters(),
        )
        assert hits[0]["title"] == "stream highlight unicorn"
        many = await clip_search.search(
            rt.pool,
            None,
            "stream",
            params=core.Params(mode="keyword", limit=50),
            filters=clip_search.Filters(),
        )
        assert len(many) == 31


async def test_common_lexemes_frequencies_are_cached_rare_ones_counted_each_time(
    database_factory, tmp_path, monkeypatch
):
    """A lexeme at the probe's cap is counted once and then answered by the cache until the
    entry expires or is cleared; a rarer one is counted with every query."""
    from tests.plugins.jobs import clip_record, load_clips

    url = database_factory.new(dimensions=384)
    titles = [f"stream highlight {i}" for i in range(30)] + ["stream highlight unicorn"]
    await load_clips(url, [clip_record(i, title=t) for i, t in enumerate(titles)], tmp_path)
    monkeypatch.setattr(statistics, "PROBE_CAP", 10)
    statistics.clear()
    cfg = _settings(url, tmp_path)

    async def more(first: int, n: int) -> None:
        records = [clip_record(first + i, title="stream unicorn") for i in range(n)]
        await load_clips(url, records, tmp_path)

    async with runtime.open_runtime(cfg, with_service=False) as rt, rt.pool.connection() as conn:

        async def frequencies(n_docs: float) -> dict[str, int]:
            return await statistics.document_frequencies(
                conn, clip_search.CLIPS, "stream unicorn", n_docs
            )

        assert await frequencies(31.0) == {"stream": 31, "unicorn": 1}
        await more(100, 2)
        # "stream" (31 >= 10) comes from the cache; "unicorn" is counted again
        assert await frequencies(33.0) == {"stream": 31, "unicorn": 3}
        statistics.clear()
        assert await frequencies(33.0) == {"stream": 33, "unicorn": 3}
        await more(200, 1)
        monkeypatch.setattr(statistics._frequencies, "ttl", 0.0)  # every entry has expired
        assert await frequencies(34.0) == {"stream": 34, "unicorn": 4}
        # a cached count never exceeds N (a corpus that shrank since): idf stays positive
        monkeypatch.setattr(statistics._frequencies, "ttl", 60.0)
        assert await frequencies(34.0) == {"stream": 34, "unicorn": 4}
        assert await frequencies(20.0) == {"stream": 20, "unicorn": 4}
    statistics.clear()
