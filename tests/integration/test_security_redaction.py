"""No secret in any answer or log line (issue 22, item 5): a provider base URL holding a password
and secret query parameters, an API key, an admin token and secrets sent in query strings go
through every route, anonymous and signed in, and through the errors the provider then causes;
no response and no line of the server's log (text and JSON, as clipembed formats them) holds
one. /healthz shows anonymous callers no URL at all."""

from __future__ import annotations

import httpx

from tests.plugins.admin import bearer
from tests.plugins.provider import TEST_KEY

pytest_plugins = ["tests.plugins.browser", "tests.plugins.security"]

URL_SECRETS = {
    "password": "PW-S3CRET-1",
    "api_key": "KEY-S3CRET-2",
    "Sig": "SIG-S3CRET-3",
    "code": "CODE-S3CRET-4",
    "API-Key": "KEY-S3CRET-5",
    "access_token": "TOKEN-S3CRET-6",
}
SENT_SECRETS = {"token": "TOKEN-S3CRET-7", "apikey": "KEY-S3CRET-8", "X-Amz-Signature": "SIG-9"}


def secret_base_url(fake_base: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in URL_SECRETS.items() if k != "password")
    with_password = fake_base.replace("http://", f"http://user:{URL_SECRETS['password']}@")
    return f"{with_password}?{query}"


def test_no_secret_in_any_response_or_log_line(secure_server, fake_openai, server_log):
    served = secure_server(embedding_api_base_url=secret_base_url(fake_openai.base_url))
    secrets = [*URL_SECRETS.values(), *SENT_SECRETS.values(), TEST_KEY, served.token]
    sent_query = "&".join(f"{k}={v}" for k, v in SENT_SECRETS.items())
    admin = bearer(served.token)
    requests = [
        ("GET", "/healthz", {}),
        ("GET", "/healthz", admin),
        ("GET", "/search?q=clutch", {}),  # the provider call fails: degraded to keywords
        ("GET", "/search?q=another+clutch&mode=semantic", {}),  # ...or a 503
        ("GET", f"/search?q=x&{sent_query}", {}),
        ("GET", f"/nowhere?{sent_query}", {}),
        ("GET", "/status", admin),
        ("GET", "/metrics", admin),
        ("GET", "/admin", admin),
        ("GET", "/admin/workers", admin),
        ("GET", "/admin/search?q=clutch", admin),
        ("GET", "/openapi.json", {}),
        ("GET", "/docs", {}),
        ("GET", "/status", bearer("ce_" + URL_SECRETS["code"])),  # a wrong token, throttled
        ("POST", f"/admin/login?{sent_query}", {}),
    ]
    answers = []
    with httpx.Client(base_url=served.base, timeout=30, follow_redirects=False) as c:
        for method, path, headers in requests:
            data = {"token": SENT_SECRETS["token"]} if method == "POST" else None
            answers.append(c.request(method, path, headers=headers, data=data))
    for (method, path, _), r in zip(requests, answers, strict=True):
        assert r.status_code < 500 or path.endswith("semantic"), (method, path, r.status_code)
        shown = r.text + " ".join(f"{k}: {v}" for k, v in r.headers.items())
        leaked = [i for i, s in enumerate(secrets) if s in shown]
        assert not leaked, (method, path.split("?")[0], leaked)  # indexes only: no secret printed

    anonymous, signed_in = answers[0].json(), answers[1].json()
    assert "base_url" not in anonymous["provider"] and "://" not in answers[0].text
    assert signed_in["provider"]["base_url"].startswith("http://***@127.0.0.1:")

    server_log.wait_for_access(len(requests))
    lines = server_log.lines()
    leaked_lines = [n for n, line in enumerate(lines) if any(s in line for s in secrets)]
    assert not leaked_lines, f"{len(leaked_lines)} log lines hold a secret"
    access = "\n".join(server_log.access())
    assert "/search?q=x&token=***&apikey=***&X-Amz-Signature=***" in access
    assert "/nowhere?token=***" in access
