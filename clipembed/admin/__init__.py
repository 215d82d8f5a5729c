"""The operations console: ``/status`` (JSON) and the ``/admin`` pages, behind admin tokens.

- :mod:`.auth` — tokens, sessions, CSRF, sign-in throttling;
- :mod:`.routes` — the HTTP layer (thin: it reads :func:`clipembed.status.model.collect`);
- :mod:`.charts` — server-rendered SVG charts (pure), so the pages need no JavaScript;
- ``templates/`` and ``static/`` — Jinja2 pages and one stylesheet, served by the package.
"""
