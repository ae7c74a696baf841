"""The CLI's previews: a preview that cannot be downloaded never costs the user the job's image."""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from darkroom_local.client import Client
from darkroom_local.client_commands import OK, follow_and_save


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def darkroom() -> Iterator[str]:
    """A darkroom whose job runs with one preview (its download answers 503 once, as S3 sometimes does), then
    succeeds with its image."""
    reads = {"job": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            base = f"http://127.0.0.1:{self.server.server_address[1]}"  # type: ignore[index]
            if self.path == "/v1/jobs/job_1":
                reads["job"] += 1
                preview = {"index": 0, "format": "png", "url": f"{base}/preview-0"}
                running = {"id": "job_1", "status": "running", "progress": {"partial_images": 1, "previews": [preview]}}
                done = {
                    "id": "job_1",
                    "status": "succeeded",
                    "outputs": [{"format": "png", "url": f"{base}/image-0"}],
                    "progress": {"partial_images": 1, "previews": [preview]},
                }
                self._send(200, json.dumps(running if reads["job"] == 1 else done).encode(), "application/json")
            elif self.path == "/preview-0":
                self._send(503, b"<Error><Code>SlowDown</Code></Error>", "application/xml")
            else:
                self._send(200, png(), "image/png")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_preview_that_fails_to_download_does_not_cost_the_cli_the_image(darkroom: str, tmp_path: Path) -> None:
    # Given `darkroom generate --previews 1` following a job whose preview download fails once
    with Client(darkroom, "dr_test") as client:
        job = {"id": "job_1", "status": "queued"}
        # When it follows the job to its end
        code = follow_and_save(client, job, tmp_path, timeout_s=10, as_json=True)
    # Then the job's image is saved and the command succeeds: the preview is a nicety, the image is the point
    assert code == OK
    assert (tmp_path / "job_1-0.png").exists()
