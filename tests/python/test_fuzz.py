"""Schemathesis against Antler's own `/openapi.json`, as a hostile client would run it.

For every storage backend (SQLite; PostgreSQL and MySQL from ``ANTLER_TEST_POSTGRES_URL`` /
``ANTLER_TEST_MYSQL_URL``, each on a private database made for the test) and both
``auth.mode: none`` and ``auth.mode: api_key``, a fresh server is booted on port 0 and schemathesis
runs every phase (examples, coverage, fuzzing, stateful) with the checks `not_a_server_error`,
`status_code_conformance`, `content_type_conformance` and `response_schema_conformance`, a fixed
seed and a time budget (``ANTLER_FUZZ_SECONDS``, default 30 s per server; `scripts/fuzz.sh` runs
longer). Passing means 0 server errors, 0 undocumented status codes and every body as documented;
the server's log must also hold no 5xx line. Outside CI a database that is not reachable skips
its cases; with ``CI=true`` it fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
from support import AntlerProcess, antler_binary, drop_database, private_database

pytestmark = pytest.mark.antler_only

SECONDS = int(os.environ.get("ANTLER_FUZZ_SECONDS", "30"))
SEED = int(os.environ.get("ANTLER_FUZZ_SEED", "20261207"))
CORE = {"POST /threads", "POST /threads/search", "POST /threads/{thread_id}/runs/wait", "PUT /store/items"}
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def schemathesis_command() -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("schemathesis")
    if found is None:
        pytest.fail("schemathesis is not installed: pip install -r tests/python/requirements.txt", pytrace=False)
    return [found]


def auth_failures(out: str) -> list[str]:
    """The operations schemathesis lists under its "Authentication failed" warning."""
    ops: list[str] = []
    inside = False
    for line in out.splitlines():
        if line.startswith("Authentication failed:"):
            inside = True
        elif inside and line.lstrip().startswith("- "):
            ops.append(line.strip()[2:])
        elif inside and ("💡" in line or line.startswith(("Missing", "Schema", "="))):
            inside = False
    return ops


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="antler-fuzz-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(SECONDS * 3 + 120)
@pytest.mark.parametrize("auth", ["none", "api_key"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_schemathesis_finds_nothing(backend: str, auth: str, workdir: Path) -> None:
    if os.environ.get("ANTLER_TEST_URL"):
        pytest.skip("boots its own Antler")
    database, name = "", ""
    if backend != "sqlite":
        url, name = private_database(backend, "antler_fuzz")
        database = f'database:\n  backend: {backend}\n  {backend}_url: "{url}"\n'
    data_dir = workdir / "data"
    data_dir.mkdir()
    config = workdir / "config.yaml"
    config.write_text(database + f"auth:\n  mode: {auth}\n")
    if auth == "api_key":
        key = (
            subprocess.run(
                [
                    str(antler_binary()),
                    "keys",
                    "create",
                    "--user",
                    "fuzzer",
                    "--admin",
                    "--config",
                    str(config),
                    "--data-dir",
                    str(data_dir),
                ],
                capture_output=True,
                check=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
            .stdout.decode()
            .strip()
        )
        assert key.startswith("ak_"), key
        # The key as the value of the document's `ApiKeyAuth` scheme (a plain `-H` header is
        # replaced by generated values for the scheme's own header).
        (workdir / "schemathesis.toml").write_text(f'[auth.openapi.ApiKeyAuth]\napi_key = "{key}"\n')
    # A fuzzer holding a valid key finds the routes that revoke it (its own list of keys links to
    # them) and locks itself out for the rest of the run; test_auth.py covers revocation.
    excluded = ["--exclude-path-regex", "api-keys/\\{key_id\\}$"] if auth == "api_key" else []
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    server = AntlerProcess(workdir, ["--config", str(config), "--data-dir", str(data_dir)], env=env)
    try:
        url = server.start()
        report = workdir / "report.xml"
        run = subprocess.run(
            [
                *schemathesis_command(),
                "run",
                f"{url}/openapi.json",
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--seed",
                str(SEED),
                "--workers",
                "2",
                "--max-time",
                str(SECONDS),
                "--request-timeout",
                "30",
                "--no-color",
                "--report",
                "junit",
                "--report-junit-path",
                str(report),
                *excluded,
            ],
            capture_output=True,
            cwd=workdir,
            timeout=SECONDS * 3 + 60,
            stdin=subprocess.DEVNULL,
        )
        out = run.stdout.decode(errors="replace")
        assert run.returncode == 0, f"schemathesis found failures ({backend}, auth {auth}):\n{out[-12000:]}"
        # Some operations answer only 403 by design (a system assistant cannot be changed); the
        # core ones must have been reached with the credentials given.
        locked_out = CORE & set(auth_failures(out))
        assert not locked_out, f"only 401/403 on {locked_out}:\n{out[-4000:]}"
        cases = ElementTree.parse(report).getroot().iter("testcase")
        operations = {case.get("name") for case in cases}
        assert len(operations) >= 70, f"only {len(operations)} operations tested:\n{out[-4000:]}"
        summary = [line.strip() for line in out.splitlines() if " generated, " in line]
        print(f"schemathesis {backend}/auth {auth}, {SECONDS} s, seed {SEED}: {summary}, {len(operations)} operations")
        log = server.log_path.read_text(errors="replace")
        server_errors = [line for line in log.splitlines() if "request failed" in line]
        assert not server_errors, "\n".join(server_errors[:20])
    finally:
        server.stop()
        if name:
            drop_database(backend, name)
