"""Fixtures for search: a 384-dimension database of known clips, embedded with the local model."""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg
import pytest
from pgvector.psycopg import register_vector

SEARCH_CLIPS = [
    # title, broadcaster, creator, game, language, days ago, nsfw
    ("Insane AWP headshot clutch", "s1mple", "fan1", "Counter-Strike", "en", 1, False),
    ("Clutch 1v4 with the deagle", "s1mple", "fan2", "Counter-Strike", "en", 3, False),
    ("Funny bug launches car into space", "xqc", "fan3", "Grand Theft Auto V", "en", 2, False),
    ("Police chase goes wrong", "xqc", "xqc", "Grand Theft Auto V", "en", 20, False),
    ("Built a giant castle in survival", "tommy", "fan4", "Minecraft", "en", 5, False),
    ("Creeper blows up the whole house", "tommy", "fan5", "Minecraft", "en", 6, False),
    ("Pentakill with Jinx", "faker", "fan6", "League of Legends", "ko", 4, False),
    ("레전드 클러치 플레이", "faker", "fan7", "League of Legends", "ko", 8, False),
    ("神プレイすぎる", "tototomix", "fan8", "Grand Theft Auto V", "ja", 9, False),
    ("Cooking pasta while chatting", "chef", "fan9", "Just Chatting", "en", 1, False),
    ("Uncensored late night stream", "chef", "fan9", "Just Chatting", "en", 1, True),
    ("Speedrun world record any percent", "runner", "fan10", "Super Mario 64", "en", 30, False),
    ("Boss fight first try no damage", "runner", "fan11", "Elden Ring", "en", 12, False),
    ("Removed clip about a clutch", "s1mple", "fan12", "Counter-Strike", "en", 1, False),
]


def load_search_clips(url: str, provider) -> dict[str, object]:
    """Insert SEARCH_CLIPS, embed them with ``provider``, mark the removed one; returns title->id."""
    from clipembed import clips

    now = dt.datetime.now(dt.UTC)
    ids = {}
    with psycopg.connect(url) as conn:
        register_vector(conn)
        texts = []
        for i, (title, broadcaster, creator, game, lang, days, nsfw) in enumerate(SEARCH_CLIPS):
            row = conn.execute(
                """INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name,
                   broadcaster_name, game_name, language, created_at, is_nsfw, is_removed)
                   VALUES (%s, 'u', 'e', %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                (
                    f"search-{i}",
                    title,
                    creator,
                    broadcaster,
                    game,
                    lang,
                    now - dt.timedelta(days=days),
                    nsfw,
                    title.startswith("Removed"),
                ),
            ).fetchone()
            ids[title] = row[0]
            texts.append(clips.embedding_text(clips.ClipText(title, broadcaster, creator, game)))
        vectors = asyncio.run(provider.embed(texts)).vectors
        for title, vec in zip(ids, vectors, strict=True):
            # into the default space's table (search reads it; the trigger mirrors into clips)
            # with the filter keys the product's upsert writes (migration 0014)
            conn.execute(
                "INSERT INTO embeddings_space_1"
                " (clip_id, embedding, model, content_hash, game_key, broadcaster_key)"
                " SELECT c.id, %s, 'm', 'h', lower(c.game_name), lower(c.broadcaster_name)"
                " FROM clips c WHERE c.id = %s",
                (vec, ids[title]),
            )
    return ids


@pytest.fixture
def search_db(database_factory, local_provider):
    url = database_factory.new(dimensions=384)
    return url, load_search_clips(url, local_provider)
