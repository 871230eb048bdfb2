"""Secrets never leak: after a session that used every kind of secret, none of them appears in the
server's log, in any response body the session got, in the runs' stored kwargs and events, or
anywhere in the data directory's files (SQLite databases and their WAL, run-event files).

Secrets used: the first admin's password (`auth.mode: local`, then a login), the session JWT
(cookie and bearer), an API key made through the API, a model API key from the config file (sent
to a fake provider, which checks it arrives), a wrong password, a revoked key and a forged JWT.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import AntlerProcess, completion_chunk, human

pytestmark = pytest.mark.antler_only

PASSWORD = "correct horse battery staple 42"
MODEL_KEY = "sk-model-secret-7f3a9c1e5b"


class Provider:
    """A one-line OpenAI-compatible answer; records the Authorization headers it got."""

    def __init__(self) -> None:
        self.auth: list[str] = []
        seen = self.auth

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                seen.append(self.headers.get("authorization") or "")
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for delta, finish in [({"role": "assistant", "content": "ok"}, None), ({}, "stop")]:
                    self.wfile.write(completion_chunk(delta, finish))
                self.wfile.write(b"data: [DONE]\n\n")
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    try:
        yield p
    finally:
        p.server.shutdown()
        p.server.server_close()


def test_no_secret_is_logged_echoed_or_stored(provider: Provider) -> None:
    if os.environ.get("ANTLER_TEST_URL"):
        pytest.skip("boots its own Antler")
    workdir = Path(tempfile.mkdtemp(prefix="antler-secrets-"))
    data = workdir / "data"
    config = workdir / "config.yaml"
    config.write_text(
        "auth:\n  mode: local\n"
        "models:\n  - name: fake\n    use: langchain_openai:ChatOpenAI\n    model: m\n"
        f"    api_key: $MODEL_KEY\n    base_url: {provider.base_url}\n    max_retries: 0\n"
        "title:\n  enabled: false\n"
        "run_events:\n  backend: jsonl\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(MODEL_KEY=MODEL_KEY, ANTLER_LOG="debug")
    server = AntlerProcess(workdir, ["--config", str(config), "--data-dir", str(data)], env=env)
    bodies: list[str] = []
    try:
        url = server.start()

        def keep(r: httpx.Response) -> httpx.Response:
            bodies.append(r.text)
            return r

        anon = httpx.Client(base_url=url, timeout=60)
        r = keep(anon.post("/v1/auth/initialize", json={"email": "root@example.com", "password": PASSWORD}))
        assert r.status_code == 201, r.text
        keep(anon.post("/v1/auth/login/local", data={"username": "root@example.com", "password": "wrong " + PASSWORD}))
        login = anon.post("/v1/auth/login/local", data={"username": "root@example.com", "password": PASSWORD})
        keep(login)
        assert login.status_code == 200, login.text
        jwt = login.cookies["access_token"]
        csrf = login.cookies.get("csrf_token", "")
        browser = httpx.Client(base_url=url, timeout=60, cookies=login.cookies, headers={"x-csrf-token": csrf})
        made = keep(browser.post("/v1/auth/api-keys", json={"name": "ci"}))
        assert made.status_code == 201, made.text
        api_key = made.json()["key"]
        bodies.pop()  # the one answer that must show the key, once
        revoked = browser.post("/v1/auth/api-keys", json={"name": "old"}).json()
        keep(browser.delete(f"/v1/auth/api-keys/{revoked['id']}"))

        bearer = httpx.Client(base_url=url, timeout=60, headers={"authorization": f"Bearer {jwt}"})
        keyed = httpx.Client(base_url=url, timeout=60, headers={"x-api-key": api_key})
        tid = keep(keyed.post("/threads", json={"metadata": {"note": "hello"}})).json()["thread_id"]
        run = {"assistant_id": "lead_agent", "input": human("hi"), "config": {"configurable": {"model_name": "fake"}}}
        r = keep(keyed.post(f"/threads/{tid}/runs/wait", json=run))
        assert r.status_code == 200, r.text
        assert provider.auth and all(a == f"Bearer {MODEL_KEY}" for a in provider.auth), provider.auth
        keep(bearer.get(f"/threads/{tid}/runs"))
        keep(bearer.get(f"/threads/{tid}/state"))
        runs = keep(keyed.get(f"/threads/{tid}/runs")).json()
        keep(keyed.get(f"/threads/{tid}/runs/{runs[0]['run_id']}/events"))
        keep(keyed.get("/models"))
        keep(keyed.get("/v1/auth/me"))
        keep(keyed.post("/threads/search", json={"metadata": {"x": PASSWORD}}))
        for bad in (revoked["key"], api_key + "x", "ak_0123456789abcdef_" + "A" * 43):
            assert keep(httpx.get(f"{url}/threads/{tid}", headers={"x-api-key": bad})).status_code == 401
        forged = jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB")
        keep(httpx.get(f"{url}/threads/{tid}", headers={"authorization": f"Bearer {forged}"}))
        keep(
            keyed.post(
                "/runs/wait",
                json={
                    "assistant_id": "lead_agent",
                    "input": human("x"),
                    "config": {"configurable": {"model_name": "nope"}},
                },
            )
        )
    finally:
        server.stop()

    try:
        secrets = {
            "password": PASSWORD,
            "jwt": jwt,
            "api key": api_key,
            "revoked key": revoked["key"],
            "model key": MODEL_KEY,
            "forged jwt": forged,
        }
        places = {"server log": server.log_path.read_bytes().decode(errors="replace")}
        places["response bodies"] = "\n".join(bodies)
        for path in data.rglob("*"):
            if path.is_file():
                places[str(path.relative_to(workdir))] = path.read_bytes().decode("latin-1")
        found = [(name, place) for name, secret in secrets.items() for place, text in places.items() if secret in text]
        assert not found, f"secrets found: {found}"
        assert len(places) >= 4, sorted(places)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
