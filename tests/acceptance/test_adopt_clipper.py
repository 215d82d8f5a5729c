"""clipembed on a Clipper-shaped database (issue 17), through the real command, as an operator.

The database is built by tests/fixtures/clipper/schema.sql, our own DDL written from the facts of
Clipper's migrations (tests/fixtures/clipper/FACTS.md): its clips table with nullable flags and
timestamps without time zone, its search trigger and function, its vote-count trigger, its HNSW
index, the tables whose foreign keys point at clips and the views that read it. Writes go the
way Clipper's Go backend sends them: server-side prepared statements.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from clipembed import clips
from clipembed.testing.fakeopenai import expected_vector
from tests.acceptance.conftest import CLIPEMBED, real_clips
from tests.plugins.provider import subprocess_env

SCHEMA = Path(__file__).resolve().parent.parent / "fixtures" / "clipper" / "schema.sql"
N_CLIPS = 600  # of the real clips: enough for every language mix, quick to embed

#: how Clipper's backend inserts a clip (its column names, sent as a prepared statement)
CLIPPER_INSERT = """
INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name, creator_id,
    broadcaster_name, broadcaster_id, game_id, game_name, language, thumbnail_url, duration,
    view_count, created_at, is_removed)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

#: Clipper's own keyword search over its own search_vector (what must answer as before)
CLIPPER_KEYWORD = """
SELECT id FROM clips WHERE search_vector @@ plainto_tsquery('english', %s)
ORDER BY ts_rank(search_vector, plainto_tsquery('english', %s)) DESC, id
"""


def catalog(url: str) -> dict[str, list[tuple]]:
    """Everything of the public schema a migration could touch, comparable across runs."""
    q = {
        "columns": """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm')
              AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2""",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "ORDER BY 1",
        "triggers": """SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
            FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND NOT t.tgisinternal ORDER BY 1, 2""",
        "functions": """SELECT p.proname, pg_get_function_identity_arguments(p.oid),
                md5(p.prosrc) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public' AND p.prokind = 'f'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid
                              AND d.deptype = 'e') ORDER BY 1, 2""",
        "views": """SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm') ORDER BY 1""",
        "constraints": """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
            FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
        "schemas": "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' "
        "AND nspname <> 'information_schema' ORDER BY 1",
        "search_vectors": "SELECT md5(string_agg(search_vector::text, '|' ORDER BY id)) FROM clips",
    }
    with psycopg.connect(url) as conn:
        return {k: conn.execute(v).fetchall() for k, v in q.items()}


def clipper_search(url: str, words: list[str]) -> dict[str, list]:
    with psycopg.connect(url) as conn:
        return {
            w: [r[0] for r in conn.execute(CLIPPER_KEYWORD, (w, w), prepare=True)] for w in words
        }


def load_clipper(url: str) -> list[dict]:
    """Clipper's schema, then real clips inserted as Clipper inserts them; some hidden."""
    rows = []
    with gzip.open(real_clips(), "rt", encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) == N_CLIPS:
                break
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA.read_text("utf-8"))
        with conn.transaction(), conn.cursor() as cur:
            for i, r in enumerate(rows):
                cur.execute(
                    CLIPPER_INSERT,
                    (
                        r["twitch_clip_id"],
                        r["twitch_clip_url"],
                        r["embed_url"],
                        r["title"],
                        r["creator_name"],
                        r.get("creator_id"),
                        r["broadcaster_name"],
                        r.get("broadcaster_id"),
                        r.get("game_id"),
                        r.get("game_name"),
                        r.get("language"),
                        r.get("thumbnail_url"),
                        r.get("duration"),
                        r.get("view_count", 0),
                        r["created_at"],
                        None if i % 7 == 0 else False,
                    ),
                    prepare=True,
                )
        # Clipper's moderation: hidden by the creator, removed for a DMCA notice, removed
        conn.execute(
            "UPDATE clips SET is_hidden = true WHERE twitch_clip_id = %s",
            (rows[1]["twitch_clip_id"],),
        )
        conn.execute(
            "UPDATE clips SET dmca_removed = true WHERE twitch_clip_id = %s",
            (rows[2]["twitch_clip_id"],),
        )
        conn.execute(
            "UPDATE clips SET is_removed = true WHERE twitch_clip_id = %s",
            (rows[3]["twitch_clip_id"],),
        )
    return rows


def expected(title: str, broadcaster: str, creator: str, game: str | None) -> np.ndarray:
    text = clips.embedding_text(clips.ClipText(title, broadcaster, creator, game))
    return expected_vector(text, 768)


def mirror(url: str, twitch_clip_id: str) -> tuple:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        return conn.execute(
            "SELECT title, broadcaster_name, creator_name, game_name, embedding, embedding_model "
            "FROM clips WHERE twitch_clip_id = %s",
            (twitch_clip_id,),
        ).fetchone()


def assert_mirror_right(url: str, twitch_clip_id: str) -> None:
    title, broadcaster, creator, game, embedding, model = mirror(url, twitch_clip_id)
    assert embedding is not None, twitch_clip_id
    np.testing.assert_allclose(
        embedding.to_numpy(), expected(title, broadcaster, creator, game), rtol=1e-5, atol=1e-6
    )
    assert model == "text-embedding-3-small"


def wait_for(condition, *, timeout: float = 60.0, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def search_ids(run, query: str, mode: str) -> list[str]:
    out = run("search", query, "--mode", mode, "--json", "--limit", "20")
    assert out.returncode == 0, out.stderr
    return [r["twitch_clip_id"] for r in json.loads(out.stdout)["results"]]


@pytest.fixture
def clipper(database_factory, fake_openai, redis_base_url, redis_prefix, tmp_path):
    url = database_factory.new(migrated=False)
    rows = load_clipper(url)
    env = subprocess_env(
        database_url=url,
        base_url=fake_openai.base_url,
        redis_url=redis_base_url,
        redis_prefix=redis_prefix,
        home=tmp_path / "home",
        EMBEDDING_TOKENS_PER_MINUTE="100000000",
        CLIPEMBED_QUEUE_POLL_SECONDS="0.2",
    )

    def run(*args: str, env_over: dict | None = None, timeout: float = 180):
        return subprocess.run(
            [*CLIPEMBED, *args],
            env=env_over or env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    return url, rows, env, run


def test_adopt_clipper_database_and_leave_it_as_found(clipper, fake_openai):
    url, rows, env, run = clipper
    before = catalog(url)
    words = ["gta", "ガチャ", "valorant", "minecraft", "clip"]
    keyword_before = clipper_search(url, words)

    # least privilege: whoever migrates does not hold the API key
    no_key = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    up = run("migrate", "up", env_over=no_key)
    assert up.returncode == 0, up.stderr
    assert "adopted public.clips" in up.stdout
    for command in (
        ("migrate", "status"),
        ("stats", "--json"),
        ("status", "--json"),
        ("failed", "list"),
        ("batches", "list"),
        ("model", "list"),
        ("admin", "token", "list"),
        ("search", "gta", "--mode", "keyword"),
    ):
        out = run(*command, env_over=no_key)
        assert out.returncode == 0, (command, out.stderr)

    # Clipper's schema is as it was, but for clipembed's two named triggers on clips
    after = catalog(url)
    added = [t for t in after["triggers"] if t not in before["triggers"]]
    assert sorted(t[1] for t in added) == ["clipembed_sync", "clipembed_sync_truncate"]
    assert all(t[0] == "clips" for t in added)
    assert [t for t in after["triggers"] if t not in added] == before["triggers"]
    for key in ("columns", "indexes", "functions", "views", "constraints", "search_vectors"):
        assert after[key] == before[key], key
    assert after["schemas"] == sorted([*before["schemas"], ("clipembed",)])
    assert clipper_search(url, words) == keyword_before

    # what a search result shows comes from Clipper's table, NULLs the API cannot show filled
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE clips SET view_count = NULL, is_nsfw = NULL WHERE twitch_clip_id = %s",
            (rows[8]["twitch_clip_id"],),
        )
        conn.execute("SET search_path = clipembed, public")  # as clipembed's sessions do
        shown = conn.execute(
            "SELECT r.title, r.view_count, r.is_nsfw FROM clips c, clip_rows(ARRAY[c.id]) r"
            " WHERE c.twitch_clip_id = %s",
            (rows[8]["twitch_clip_id"],),
        ).fetchone()
    assert shown == (rows[8]["title"], 0, False)

    # backfill fills Clipper's own clips.embedding, in its own types, for visible clips only
    out = run("backfill", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["processed"] == N_CLIPS - 3 and summary["failed"] == 0
    for r in rows[4:40]:
        assert_mirror_right(url, r["twitch_clip_id"])
    for hidden in rows[1:4]:
        assert mirror(url, hidden["twitch_clip_id"])[4] is None
    assert fake_openai.stats()["embedded_more_than_once"] == 0
    assert clipper_search(url, words) == keyword_before  # the mirror writes changed no tsvector

    # Clipper's own reads of clips.embedding run unchanged: its rerank and similar-clips queries
    target = rows[6]
    with psycopg.connect(url) as conn:
        register_vector(conn)
        candidates = [
            r[0]
            for r in conn.execute(
                "(SELECT id FROM clips WHERE twitch_clip_id = %s)"
                " UNION (SELECT id FROM clips ORDER BY id LIMIT 199)",
                (target["twitch_clip_id"],),
            )
        ]
        title, broadcaster, creator, game, _, _ = mirror(url, target["twitch_clip_id"])
        reranked = conn.execute(
            "SELECT twitch_clip_id, embedding <=> %s AS distance FROM clips"
            " WHERE id = ANY(%s) AND embedding IS NOT NULL AND is_removed = false"
            " ORDER BY embedding <=> %s LIMIT 10",
            (
                expected(title, broadcaster, creator, game),
                candidates,
                expected(title, broadcaster, creator, game),
            ),
            prepare=True,
        ).fetchall()
        # the target's own vector is nearest (another clip with the same text may tie)
        nearest = {tid for tid, distance in reranked if distance < 1e-5}
        assert target["twitch_clip_id"] in nearest and reranked[0][1] < 1e-5
        similar = conn.execute(
            "SELECT c.twitch_clip_id FROM clips c, (SELECT embedding FROM clips"
            " WHERE twitch_clip_id = %s) seed WHERE c.is_removed = false AND c.is_hidden = false"
            " AND c.embedding IS NOT NULL AND c.twitch_clip_id <> %s"
            " ORDER BY c.embedding <=> seed.embedding LIMIT 5",
            (target["twitch_clip_id"], target["twitch_clip_id"]),
        ).fetchall()
        assert len(similar) == 5
        views = conn.execute(
            "UPDATE clips SET view_count = view_count + 1 WHERE twitch_clip_id = %s"
            " RETURNING view_count",
            (target["twitch_clip_id"],),
            prepare=True,
        ).fetchone()
        assert views[0] == (target.get("view_count") or 0) + 1

    # hidden, DMCA-removed and removed clips are never returned, in any mode
    for hidden in rows[1:4]:
        for mode in ("keyword", "semantic", "hybrid"):
            assert hidden["twitch_clip_id"] not in search_ids(run, hidden["title"], mode), mode
    visible = rows[5]
    assert visible["twitch_clip_id"] in search_ids(run, visible["title"], "hybrid")
    # ...and a clip Clipper hides leaves search at once
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE clips SET is_hidden = true WHERE twitch_clip_id = %s",
            (visible["twitch_clip_id"],),
            prepare=True,
        )
    for mode in ("keyword", "semantic", "hybrid"):
        assert visible["twitch_clip_id"] not in search_ids(run, visible["title"], mode), mode

    # a worker embeds Clipper's own INSERT (is_removed NULL) and title UPDATE within seconds
    worker = subprocess.Popen(
        [*CLIPEMBED, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                CLIPPER_INSERT,
                (
                    "NewClip-1",
                    "u",
                    "e",
                    "ランクマッチで大逆転",
                    "作成者",
                    None,
                    "配信者",
                    None,
                    None,
                    "Apex Legends",
                    "ja",
                    None,
                    30.0,
                    0,
                    "2026-12-01T10:00:00",
                    None,
                ),
                prepare=True,
            )
            conn.execute(
                "UPDATE clips SET title = %s WHERE twitch_clip_id = %s",
                ("a brand new title", rows[10]["twitch_clip_id"]),
                prepare=True,
            )
            conn.execute("UPDATE clips SET view_count = view_count + 1", prepare=True)

        def embedded(twitch_clip_id: str) -> bool:
            title, broadcaster, creator, game, embedding, _ = mirror(url, twitch_clip_id)
            return embedding is not None and np.allclose(
                embedding.to_numpy(), expected(title, broadcaster, creator, game), atol=1e-6
            )

        wait_for(lambda: embedded("NewClip-1"), what="the inserted clip's vector")
        wait_for(lambda: embedded(rows[10]["twitch_clip_id"]), what="the edited clip's vector")
    finally:
        worker.terminate()
        assert worker.wait(timeout=30) == 0, worker.stderr.read() if worker.stderr else ""

    # another writer (Clipper's Go scheduler) overwrites five vectors: foreign, then restored
    victims = [r["twitch_clip_id"] for r in rows[20:25]]
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(
            "UPDATE clips SET embedding = %s, embedding_model = 'go-scheduler',"
            " embedding_generated_at = now() WHERE twitch_clip_id = ANY(%s)",
            (np.full(768, 0.01, dtype=np.float32), victims),
        )
    stats = json.loads(run("stats", "--json").stdout)
    assert stats["adopted"]["foreign_vectors"] == 5 and stats["adopted"]["mirror_missing"] == 0
    status = json.loads(run("status", "--json").stdout)
    assert status["adopted"]["foreign_vectors"] == 5
    assert status["adopted"]["hidden_when"] == ["is_removed", "is_hidden", "dmca_removed"]
    requests = fake_openai.stats()["requests"]
    out = run("backfill", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["mirror_restored"] == 5
    for victim in victims:
        assert_mirror_right(url, victim)
    assert fake_openai.stats()["requests"] == requests  # restored, not paid for again

    # Clipper's migration 000019 rolled back and applied again: the mirror is emptied
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_clips_embedding_hnsw")
        conn.execute(
            "ALTER TABLE clips DROP COLUMN embedding, DROP COLUMN embedding_generated_at,"
            " DROP COLUMN embedding_model"
        )
        conn.execute(
            "ALTER TABLE clips ADD COLUMN embedding vector(768),"
            " ADD COLUMN embedding_generated_at timestamp, ADD COLUMN embedding_model varchar(100)"
        )
        conn.execute(
            "CREATE INDEX idx_clips_embedding_hnsw ON clips USING hnsw (embedding vector_cosine_ops)"
            " WITH (m = 16, ef_construction = 64)"
        )
    stats = json.loads(run("stats", "--json").stdout)
    assert (
        stats["adopted"]["mirror_missing"] == N_CLIPS + 1 - 3
    )  # all it embedded (a clip hidden later keeps its vector)
    dry = run("backfill", "--dry-run", "--json")
    assert json.loads(dry.stdout.strip().splitlines()[-1])["mirror_restored"] == N_CLIPS + 1 - 3
    out = run("backfill", "--json")
    assert out.returncode == 0, out.stderr
    assert fake_openai.stats()["requests"] == requests
    assert_mirror_right(url, rows[30]["twitch_clip_id"])
    assert json.loads(run("stats", "--json").stdout)["adopted"]["mirror_missing"] == 0

    # leave it as found: same schema, every clip kept
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT count(*) FROM clips").fetchone()[0]
    down = run("migrate", "down", "--to", "0", env_over=no_key)
    assert down.returncode == 0, down.stderr
    final = catalog(url)
    for key in ("columns", "indexes", "triggers", "functions", "views", "constraints", "schemas"):
        assert final[key] == before[key], key
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM clips").fetchone()[0] == count
    assert clipper_search(url, ["gta", "ガチャ"])["gta"] == keyword_before["gta"]


def test_wrong_mapping_names_the_missing_column(clipper):
    url, _, env, run = clipper
    out = run("migrate", "up", env_over={**env, "CLIPEMBED_SOURCE_TITLE": "headline"})
    assert out.returncode == 2
    assert "no column 'headline'" in out.stderr and "CLIPEMBED_SOURCE_TITLE" in out.stderr
    out = run("migrate", "up", env_over={**env, "CLIPEMBED_HIDDEN_WHEN": "is_secret"})
    assert out.returncode == 2 and "is_secret" in out.stderr
    with psycopg.connect(url) as conn:  # nothing was left behind by the refusals
        assert conn.execute("SELECT to_regnamespace('clipembed')").fetchone()[0] is None


def test_owned_table_is_dropped_only_on_request(clipembed, cli_env):
    out = clipembed("migrate", "down", "--to", "0")
    assert out.returncode == 2 and "--drop-clips" in out.stderr
    out = clipembed("migrate", "down", "--to", "0", "--drop-clips")
    assert out.returncode == 0, out.stderr
    with psycopg.connect(cli_env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT to_regclass('public.clips')").fetchone()[0] is None
