"""Test utilities for clipembed and for its users' own tests: a public, documented API.

- :mod:`clipembed.testing.fakeopenai`: an OpenAI-compatible embeddings server on a real socket,
  with the API's limits (inputs, tokens, rate-limit headers) and injectable faults (429, 5xx,
  hangs, garbage, wrong dimensions). A platform embedding clips through clipembed can run its
  own integration tests against it without an API key, as ours do.
- :mod:`clipembed.testing.servers`: a private ``redis-server`` that a test can stop and
  restart.

Why it ships in the package instead of ``tests/``: the benchmarks (``bench/``) and users' test
suites need the same fake, and a fake that lives next to the code it imitates is kept in step
with it (httpx ships ``MockTransport``, procrastinate its ``InMemoryConnector``). The rule that
keeps it honest: no runtime module imports :mod:`clipembed.testing`; a test
(``tests/unit/test_layout.py``) reads the import graph and fails if one does.
"""
