"""Two OS processes share one requests-per-minute limit through real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.plugins.provider import TEST_KEY

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from clipembed import service, settings

    async def main():
        cfg = settings.Settings(_env_file=None)
        svc = await service.open_service(cfg)
        try:
            for i in range(int(sys.argv[2])):
                await svc.embed([f"{sys.argv[1]} text {i}"])
        finally:
            await svc.aclose()

    asyncio.run(main())
    """
)


def test_two_processes_never_exceed_one_shared_limit(fake_openai, redis_base_url, redis_prefix):
    rpm = 121  # the limiter keeps one request below: 120/min = one every 0.5 s
    env = dict(
        os.environ,
        EMBEDDING_PROVIDER="openai",
        OPENAI_API_KEY=TEST_KEY,
        EMBEDDING_API_BASE_URL=fake_openai.base_url,
        REDIS_URL=redis_base_url,
        CLIPEMBED_REDIS_PREFIX=redis_prefix,
        EMBEDDING_REQUESTS_PER_MINUTE=str(rpm),
        EMBEDDING_BATCH_SIZE="1",
    )
    per_process = 8
    procs = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, name, str(per_process)], env=env)
        for name in ("alpha", "beta")
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0
    stats = fake_openai.stats()
    times = sorted(stats["request_times"])
    assert len(times) == 2 * per_process
    # shared pacing: one request every 0.5 s across both processes, so any 2 s window holds
    # at most 5 (4 intervals + the one at its start); two independent limiters would send 8.
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 2.0)
        assert in_window <= 5, f"{in_window} requests within 2 s"
    assert times[-1] - times[0] >= (2 * per_process - 1) * 0.5 * 0.9
    # the 429 path was never needed: the limiter kept requests under the limit
    assert stats["by_status"] == {"200": 2 * per_process}
