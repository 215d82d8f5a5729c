"""Keyword search in the languages the clips are in: CJK words inside titles, stemming by the
clip's language, full-width forms, mixed scripts, and hostile queries (real PostgreSQL)."""

from __future__ import annotations

import psycopg
import pytest

from clipembed import runtime, settings
from clipembed.search import clips as clip_search
from clipembed.search import core
from tests.plugins.jobs import clip_record, load_clips

TITLES = [
    ("貰ったガチャでSRを出したとと", "ja"),
    ("レダーはこの街に舞い降りた天性のホットドッグ屋さん", "ja"),
    ("完璧な変装で警察を欺く", "ja"),
    ("人質を取られて焦るギャング", "ja"),
    ("서울에서 만난 최고의 클러치", "ko"),
    ("JUGANDO POR PRIMERA VEZ CARRERAS DE GTA", "es"),
    ("Die besten Spieler der Welt", "de"),
    ("ＧＴＡ ｶﾞﾁｬ full-width title", "ja"),
    ("insane clutch in ranked", "en"),
]


@pytest.fixture
async def rt(database_factory, tmp_path):
    url = database_factory.new(dimensions=384)
    records = [clip_record(i, title=title, language=lang) for i, (title, lang) in enumerate(TITLES)]
    await load_clips(url, records, tmp_path)
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        database_url=url,
        clipembed_home=tmp_path,
    )
    async with runtime.open_runtime(cfg, with_service=False) as opened:
        yield opened


async def keyword_titles(rt, query: str) -> list[str]:
    hits = await clip_search.search(
        rt.pool,
        None,
        query,
        params=core.Params(mode="keyword", limit=10),
        filters=clip_search.Filters(),
    )
    return [h["title"] for h in hits]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ガチャ", "貰ったガチャでSRを出したとと"),
        ("ホットドッグ", "レダーはこの街に舞い降りた天性のホットドッグ屋さん"),
        ("変装", "完璧な変装で警察を欺く"),
        ("人質", "人質を取られて焦るギャング"),
        ("클러치", "서울에서 만난 최고의 클러치"),
        ("jugar carrera", "JUGANDO POR PRIMERA VEZ CARRERAS DE GTA"),  # Spanish stems
        ("Spieler", "Die besten Spieler der Welt"),
        ("ガチャ GTA", "ＧＴＡ ｶﾞﾁｬ full-width title"),  # NFKC: full and half width
        ("ｇｔａ", "JUGANDO POR PRIMERA VEZ CARRERAS DE GTA"),
        ("clutches", "insane clutch in ranked"),  # English stemming as before
    ],
)
async def test_a_word_from_inside_a_title_finds_its_clip(rt, query, expected):
    assert expected in await keyword_titles(rt, query)


async def test_the_exact_cjk_title_ranks_first(rt):
    assert (await keyword_titles(rt, "変装で警察"))[0] == "完璧な変装で警察を欺く"


@pytest.mark.parametrize(
    "query",
    ["'; DROP TABLE clips; --", "ガ", "🎮🎮", "&|!:*()", "混合 mixed 스크립트 🎮 ｆｕｌｌ", "ー"],
)
async def test_hostile_and_mixed_script_queries_answer(rt, query):
    assert isinstance(await keyword_titles(rt, query), list)  # an unmatched query: empty page


async def test_an_invisible_query_is_a_clear_error(rt):
    with pytest.raises(clip_search.InvalidQuery, match="empty"):
        await keyword_titles(rt, "\u200b")


async def test_editing_the_language_re_indexes_the_clip(rt):
    def lexemes(conn):
        return {
            r[0]
            for r in conn.execute(
                "SELECT p.lexeme FROM clip_postings p JOIN clips c ON c.id = p.doc_id "
                "WHERE c.title LIKE 'Die besten%%'"
            )
        }

    with psycopg.connect(rt.database_url, autocommit=True) as conn:
        assert "spiel" in lexemes(conn)  # german: Spieler -> spiel
        conn.execute("UPDATE clips SET language = 'en' WHERE title LIKE 'Die besten%%'")
        assert "spiel" not in lexemes(conn) and "spieler" in lexemes(conn)
