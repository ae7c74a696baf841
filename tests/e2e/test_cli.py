"""The `darkroom` CLI as people and scripts run it, a subprocess against the local stack: images written, and exit
codes that tell success (0), a failed job (1), a usage error (2), an unreachable darkroom (3) and a job still
running (4) apart."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from darkroom_local.stack import LocalStack, free_port
from tests.e2e.served import served_stack
from tests.e2e.test_run_command import darkroom_command

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def running() -> Iterator[LocalStack]:
    with served_stack() as stack:
        yield stack


def cli(
    stack: LocalStack, *arguments: str, url: str | None = None, key: str | None = "dev"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DARKROOM_URL", "DARKROOM_API_KEY")}
    env["DARKROOM_URL"] = url or stack.api_url
    if key:
        env["DARKROOM_API_KEY"] = stack.api_keys[key]
    return subprocess.run([*darkroom_command(), *arguments], env=env, capture_output=True, text=True, timeout=120)


def png_file(path: Path, size: tuple[int, int], color: tuple[int, ...], mode: str = "RGB") -> Path:
    Image.new(mode, size, color).save(path, "PNG")
    return path


def test_generate_writes_real_images_and_prints_their_paths(running: LocalStack, tmp_path: Path) -> None:
    done = cli(
        running,
        "generate",
        "two lighthouses",
        "--n",
        "2",
        "--format",
        "webp",
        "--size",
        "1536x1024",
        "--out",
        str(tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.splitlines()]
    assert len(paths) == 2 and all(path.parent == tmp_path / "out" for path in paths)
    for path in paths:
        image = Image.open(path)
        assert (image.format, image.size) == ("WEBP", (1536, 1024))
    assert "succeeded" in done.stderr
    # Not a terminal: no spinner frames in what a script captures
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr


def test_json_is_the_job_and_its_files(running: LocalStack, tmp_path: Path) -> None:
    done = cli(running, "generate", "a cat", "--json", "--out", str(tmp_path))
    job = json.loads(done.stdout)
    assert (
        done.returncode == 0 and job["status"] == "succeeded" and job["files"] == [str(tmp_path / f"{job['id']}-0.png")]
    )
    shown = cli(running, "jobs", "show", job["id"])
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == job["id"]
    listed = cli(running, "jobs", "list", "--json", "--limit", "5")
    assert job["id"] in [j["id"] for j in json.loads(listed.stdout)]
    table = cli(running, "jobs", "list", "--limit", "5")
    assert table.returncode == 0 and job["id"] in table.stdout and "succeeded" in table.stdout


def test_a_failed_job_exits_1(running: LocalStack, tmp_path: Path) -> None:
    failed = cli(running, "generate", "[refuse] forbidden", "--out", str(tmp_path))
    assert failed.returncode == 1 and "moderation_blocked" in failed.stderr
    assert failed.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (("generate", "a cat", "--n", "11"), "Invalid value for '--n'"),
        (("generate", "a cat", "--model", "dall-e-3"), "Invalid value for '--model'"),
        (("generate", "a cat", "--size", "1000x1000"), "size: Both sides must be multiples of 16"),
        (("edit", "no-such-file.png", "--prompt", "x"), "does not exist"),
        (("jobs", "show", "job_missing"), "not_found"),
    ],
)
def test_usage_errors_exit_2(running: LocalStack, arguments: tuple[str, ...], said: str) -> None:
    refused = cli(running, *arguments)
    assert refused.returncode == 2 and said in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def test_no_key_is_a_usage_error_and_no_darkroom_exits_3(running: LocalStack) -> None:
    assert cli(running, "jobs", "list", key=None).returncode == 2
    unreachable = cli(running, "jobs", "list", url=f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 3 and "could not reach darkroom" in unreachable.stderr


def test_edit_with_a_mask_and_a_large_edit_through_uploads(running: LocalStack, tmp_path: Path) -> None:
    photo = png_file(tmp_path / "photo.png", (256, 256), (0, 128, 0))
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (128, 0, 256, 256))
    mask.save(tmp_path / "mask.png")
    done = cli(
        running,
        "edit",
        str(photo),
        "--mask",
        str(tmp_path / "mask.png"),
        "--prompt",
        "paint the right half",
        "--model",
        "gpt-image-1.5",
        "--out",
        str(tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr
    edited = Image.open(done.stdout.strip()).convert("RGB")
    assert edited.getpixel((10, 128)) != edited.getpixel((240, 128))
    # Over 3 MB: the CLI opens an upload and posts the file straight to storage
    noise = Image.frombytes("RGB", (1200, 1200), os.urandom(1200 * 1200 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    big = tmp_path / "big.png"
    big.write_bytes(buffer.getvalue())
    assert big.stat().st_size > 3 * 1024 * 1024
    uploaded = cli(running, "edit", str(big), "--prompt", "tint it", "--json", "--out", str(tmp_path / "out"))
    job = json.loads(uploaded.stdout)
    assert uploaded.returncode == 0 and job["status"] == "succeeded" and job["upload"] is not None
    assert Image.open(job["files"][0]).size == (1200, 1200)


def test_a_job_still_running_exits_4_and_can_be_canceled(running: LocalStack, tmp_path: Path) -> None:
    # Given a job on the asynchronous provider, which takes 20 s
    assert running.emulator is not None
    running.emulator.config.async_ms = 20_000
    try:
        waiting = cli(running, "generate", "a slow one", "--provider", "wavespeed", "--timeout", "1", "--json")
        job = json.loads(waiting.stdout)
        assert waiting.returncode == 4 and job["status"] in ("queued", "running", "polling")
        canceled = cli(running, "jobs", "cancel", job["id"])
        assert canceled.returncode == 0 and canceled.stdout.strip() == f"{job['id']} canceled"
        ended = cli(running, "jobs", "wait", job["id"], "--out", str(tmp_path))
        assert ended.returncode == 1 and "canceled" in ended.stderr
    finally:
        running.emulator.config.async_ms = 3000


def test_previews_are_saved_as_they_arrive_then_the_image(running: LocalStack, tmp_path: Path) -> None:
    # Given a provider that takes 3 s to render, streaming a preview every second
    assert running.emulator is not None
    running.emulator.config.latency_ms = 3000
    try:
        done = cli(running, "generate", "a harbour at dusk", "--previews", "2", "--out", str(tmp_path))
    finally:
        running.emulator.config.latency_ms = 0
    assert done.returncode == 0, done.stderr
    # Then both previews were saved while it rendered, and the image after
    said = [line.split(" ", 1)[1] for line in done.stderr.splitlines() if line.startswith("preview ")]
    assert [Path(path).name.split("-preview-")[1] for path in said] == ["0.png", "1.png"]
    (image,) = [Path(line) for line in done.stdout.splitlines()]
    assert Image.open(image).size == Image.open(said[1]).size
