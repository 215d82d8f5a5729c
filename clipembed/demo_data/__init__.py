"""A generator of plausible Twitch clips for the demo and the benchmarks (deterministic).

Real game names, titles built from templates in several languages (English, Japanese, Korean,
Spanish, German, with emoji), broadcasters and creators with Twitch-like handles, creation
times spread over the last 60 days. Users of the demo have no access to real clip exports, so
the project generates its own; tests and benchmarks that need real text use ../shared/data.
"""

from __future__ import annotations

import datetime as dt
import random
import string
from collections.abc import Iterator
from typing import Any

GAMES = [
    ("32982", "Grand Theft Auto V"),
    ("21779", "League of Legends"),
    ("33214", "Fortnite"),
    ("516575", "VALORANT"),
    ("32399", "Counter-Strike"),
    ("27471", "Minecraft"),
    ("29595", "Dota 2"),
    ("511224", "Apex Legends"),
    ("512710", "Call of Duty: Warzone"),
    ("18122", "World of Warcraft"),
    ("491931", "Escape from Tarkov"),
    ("513143", "Teamfight Tactics"),
    ("138585", "Hearthstone"),
    ("490100", "Lost Ark"),
    ("1469308723", "Software and Game Development"),
    ("509658", "Just Chatting"),
    ("26936", "Music"),
    ("493057", "PUBG: BATTLEGROUNDS"),
    ("512980", "Fall Guys"),
    ("518203", "Sports"),
    ("65632", "DayZ"),
    ("263490", "Rust"),
    ("1678052513", "Palworld"),
    ("1745202732", "Elden Ring"),
    ("460630", "Tom Clancy's Rainbow Six Siege"),
    ("490422", "StarCraft II"),
    ("66082", "Games + Demos"),
    ("509660", "Art"),
    ("1833694612", "Street Fighter 6"),
    ("2748", "Magic: The Gathering"),
    ("417752", "Talk Shows & Podcasts"),
    ("506415", "Sekiro: Shadows Die Twice"),
    ("491487", "Dead by Daylight"),
    ("1229", "Super Mario 64"),
    ("11557", "The Legend of Zelda: Ocarina of Time"),
    ("515025", "Overwatch 2"),
]

EN = [
    "Insane clutch {n}v1",
    "{streamer} can't believe this",
    "Worst timing ever",
    "1 HP ace",
    "Chat goes wild",
    "How did that hit?",
    "New world record?!",
    "Biggest throw of the season",
    "The perfect flick",
    "{streamer} rage quits",
    "Unlucky...",
    "Speedrun skip finally works",
    "Chat predicted it",
    "Donation reaction",
    "That sound effect 😂",
    "Best play of the tournament",
    "No way he survived",
    "Outplayed by a bot",
    "Boss down first try",
    "Clean 4k with the pistol",
    "Casual {n} kill game",
    "Bugged wall run",
    "Stream sniper caught",
    "Final circle madness 🔥",
]
JA = [
    "神プレイすぎる",
    "まさかの逆転勝利",
    "{streamer}の叫び声",
    "ワンパンで終了",
    "これは草",
    "奇跡のクラッチ 🔥",
    "初見でクリア",
    "チャット大爆笑",
    "事故った瞬間",
    "最強の立ち回り",
]
KO = [
    "레전드 클러치",
    "{streamer} 멘붕",
    "이게 되네?",
    "역대급 역전승",
    "채팅창 난리남 😂",
    "한 방에 끝",
    "미친 에임",
    "보스 원트 클리어",
]
ES = [
    "Qué jugada 🔥",
    "{streamer} no lo puede creer",
    "El peor final",
    "Clutch imposible",
    "Jajaja el chat",
]
DE = ["Unfassbarer Clutch", "{streamer} rastet aus", "Bester Schuss des Jahres", "Das war knapp 😅"]
LANGS = [("en", EN, 0.55), ("ja", JA, 0.15), ("ko", KO, 0.1), ("es", ES, 0.1), ("de", DE, 0.1)]

SYLLABLES = [
    "xqc",
    "shroud",
    "poki",
    "sum",
    "kai",
    "luna",
    "zero",
    "ninja",
    "tyler",
    "ika",
    "moon",
    "ren",
    "sora",
    "min",
    "ji",
    "hana",
    "vex",
    "nova",
    "kira",
    "dex",
    "lilly",
    "tommy",
    "sasu",
    "yuki",
    "papa",
    "loud",
    "fox",
    "rat",
    "wolf",
    "ghost",
    "pixel",
    "byte",
]


def _handle(rng: random.Random) -> str:
    name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 2)))
    if rng.random() < 0.4:
        name += str(rng.randint(1, 999))
    if rng.random() < 0.2:
        name = name.capitalize() + rng.choice(["TV", "_", "Live", "GG"])
    return name[:25]


def _slug(rng: random.Random) -> str:
    words = ["Happy", "Brave", "Tiny", "Angry", "Sleepy", "Funny", "Clever", "Shy"]
    animals = ["Otter", "Panda", "Koala", "Falcon", "Tiger", "Llama", "Gecko", "Badger"]
    tail = "".join(rng.choice(string.ascii_letters + string.digits + "-_") for _ in range(16))
    return f"{rng.choice(words)}{rng.choice(words)}{rng.choice(animals)}{rng.choice(['Kappa', 'PogChamp', 'LUL'])}-{tail}"


def generate(
    count: int, *, seed: int = 42, now: dt.datetime | None = None
) -> Iterator[dict[str, Any]]:
    """``count`` clips as dicts with the clips column names (the import format)."""
    rng = random.Random(seed)
    now = now or dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    broadcasters = [
        (_handle(rng), str(rng.randint(10**7, 10**9))) for _ in range(max(5, count // 25))
    ]
    viewers = [_handle(rng) for _ in range(max(10, count // 5))]
    for i in range(count):
        lang, templates, _ = rng.choices(LANGS, weights=[w for *_, w in LANGS])[0]
        broadcaster, broadcaster_id = rng.choice(broadcasters)
        creator = broadcaster if rng.random() < 0.15 else rng.choice(viewers)
        game_id, game = rng.choice(GAMES) if rng.random() > 0.05 else (None, None)
        title = rng.choice(templates).format(streamer=broadcaster, n=rng.randint(2, 5))
        slug = f"{_slug(rng)}{i}"
        created = now - dt.timedelta(seconds=rng.randint(0, 60 * 24 * 3600))
        yield {
            "twitch_clip_id": slug,
            "twitch_clip_url": f"https://clips.twitch.tv/{slug}",
            "embed_url": f"https://clips.twitch.tv/embed?clip={slug}",
            "title": title,
            "creator_name": creator,
            "creator_id": str(rng.randint(10**7, 10**9)),
            "broadcaster_name": broadcaster,
            "broadcaster_id": broadcaster_id,
            "game_id": game_id,
            "game_name": game,
            "language": lang,
            "thumbnail_url": f"https://clips-media-assets2.twitch.tv/{slug}-preview-480x272.jpg",
            "duration": round(rng.uniform(5, 60), 1),
            "view_count": int(rng.paretovariate(1.2) * 10),
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
