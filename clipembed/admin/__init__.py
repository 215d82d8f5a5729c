"""The operations console: ``/status`` (JSON) and the ``/admin`` pages, behind admin tokens.

- :mod:`.auth` — tokens, sessions, CSRF;
- :mod:`.access` — who is asking, signing in and out, refusals (401, 429, the sign-in page);
- :mod:`.throttle` — failed sign-ins and wrong Bearer tokens, counted per client and in all;
- :mod:`.routes` — the pages and /status (thin: it reads :func:`clipembed.status.model.collect`);
- :mod:`.charts` — server-rendered SVG charts (pure), so the pages need no JavaScript;
- ``templates/`` and ``static/`` — Jinja2 pages and one stylesheet, served by the package.
"""
