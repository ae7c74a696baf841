"""The CLI against a server answering as darkroom rarely does: a replay without links, a page that is not the API, a
redirect, an --out that cannot be a folder. Each ends in the exit code the CLI documents, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

PNG = b"\x89PNG\r\n\x1a\nfake"
OUTPUT: dict[str, Any] = {
    "format": "png",
    "width": 1,
    "height": 1,
    "bytes": len(PNG),
    "key": "outputs/dev/job_abc/0.png",
}
SUCCEEDED: dict[str, Any] = {
    "id": "job_abc",
    "status": "succeeded",
    "outputs": [OUTPUT],
    "cost_usd": 0.01,
    "error": None,
}


class Fake(BaseHTTPRequestHandler):
    routes: dict[tuple[str, str], tuple[int, str, bytes, dict[str, str]]] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        status, ctype, body, extra = self.routes.get(
            (self.command, self.path.split("?")[0]), (404, "application/json", b'{"error":{"code":"x"}}', {})
        )
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[tuple[str, dict[tuple[str, str], Any]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    Fake.routes = {}
    url = f"http://127.0.0.1:{server.server_address[1]}"
    Fake.routes[("GET", "/files/0.png")] = (200, "image/png", PNG, {})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url, Fake.routes
    server.shutdown()


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from darkroom_local.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {"DARKROOM_URL": url, "DARKROOM_API_KEY": "dr_test", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_replayed_succeeded_job_is_saved_not_a_crash(fake: Any, tmp_path: Path) -> None:
    """A submission replayed by its Idempotency-Key answers with the ended job, its outputs without download links:
    the CLI fetches the job for them."""
    url, routes = fake
    routes[("POST", "/v1/images/generations")] = (
        202,
        "application/json",
        json.dumps(SUCCEEDED).encode(),
        {"idempotent-replayed": "true"},
    )
    routes[("GET", "/v1/jobs/job_abc")] = (
        200,
        "application/json",
        json.dumps({**SUCCEEDED, "outputs": [{**OUTPUT, "url": f"{url}/files/0.png"}]}).encode(),
        {},
    )
    done = run_cli(url, "generate", "a cat", "--idempotency-key", "k1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-600:]


def test_a_200_html_page_is_unavailable_not_job_failed(fake: Any, tmp_path: Path) -> None:
    """A proxy / captive portal answering 200 text/html: documented exit 3, never a traceback."""
    url, routes = fake
    routes[("GET", "/v1/jobs/job_abc")] = (200, "text/html", b"<html>login</html>", {})
    done = run_cli(url, "jobs", "wait", "job_abc", "--out", str(tmp_path))
    assert done.returncode == 3 and "Traceback" not in done.stderr, (done.returncode, done.stderr[-600:])


def test_a_redirect_is_not_a_traceback(fake: Any, tmp_path: Path) -> None:
    url, routes = fake
    routes[("GET", "/v1/jobs/job_abc")] = (301, "text/html", b"moved", {"location": "https://example.invalid/"})
    done = run_cli(url, "jobs", "show", "job_abc")
    assert done.returncode in (2, 3) and "Traceback" not in done.stderr, (done.returncode, done.stderr[-600:])


def test_out_below_a_file_is_refused_before_anything_is_sent(fake: Any, tmp_path: Path) -> None:
    url, routes = fake
    routes[("POST", "/v1/images/generations")] = (500, "application/json", b"{}", {})  # must never be reached
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    done = run_cli(url, "generate", "a cat", "--out", str(blocker / "sub"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, (done.returncode, done.stderr[-600:])
    assert "cannot make folder" in done.stderr


def test_a_job_saved_again_rewrites_its_own_files_and_a_cut_download_leaves_none(fake: Any, tmp_path: Path) -> None:
    url, routes = fake
    job = {**SUCCEEDED, "outputs": [{**OUTPUT, "url": f"{url}/files/0.png"}]}
    routes[("GET", "/v1/jobs/job_abc")] = (200, "application/json", json.dumps(job).encode(), {})
    for _ in range(2):
        done = run_cli(url, "jobs", "wait", "job_abc", "--out", str(tmp_path))
        assert done.returncode == 0, done.stderr[-600:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job_abc-0.png"]
    assert (tmp_path / "job_abc-0.png").read_bytes() == PNG
    # A download that fails leaves the saved file as it was and no partial one beside it
    routes[("GET", "/files/0.png")] = (503, "text/plain", b"busy", {})
    done = run_cli(url, "jobs", "wait", "job_abc", "--out", str(tmp_path))
    assert done.returncode == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["job_abc-0.png"]
