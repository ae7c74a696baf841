"""`darkroom generate`, `darkroom edit` and `darkroom jobs`: darkroom's API from a terminal or a script.

Exit codes: 0 the job succeeded (or the command did what it says), 1 the job failed or was canceled, 2 a usage
error (a bad argument, or a request darkroom refuses as invalid), 3 darkroom could not be reached or answered with
a server error or a rate limit, 4 the job was still running when --timeout ran out.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from darkroom import catalog
from darkroom_local.client import TERMINAL, ApiError, Client, Unreachable

OK, JOB_FAILED, USAGE, UNAVAILABLE, STILL_RUNNING = 0, 1, 2, 3, 4
DEFAULT_URL = "http://127.0.0.1:3000"


class Settings:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url
        self.api_key = api_key

    def client(self) -> Client:
        if not self.api_key:
            raise click.UsageError("set DARKROOM_API_KEY (or pass --api-key): `darkroom run` prints one")
        return Client(self.url, self.api_key)


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--api-key", envvar="DARKROOM_API_KEY", help="A tenant's key (DARKROOM_API_KEY).", show_envvar=False
    )(command)
    return click.option(
        "--url", envvar="DARKROOM_URL", default=DEFAULT_URL, show_default=True, help="darkroom's API (DARKROOM_URL)."
    )(command)


def follow_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--json", "as_json", is_flag=True, help="Print the job as JSON, nothing else.")(command)
    command = click.option(
        "--timeout", type=click.FloatRange(min=0), default=600, show_default=True, help="Seconds to follow the job."
    )(command)
    return click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        callback=_made_folder,
        help="Folder the images are written to (made if missing).",
    )(command)


def _made_folder(context: click.Context, parameter: click.Parameter, folder: Path) -> Path:
    """--out made before anything is sent: a folder that cannot be is a usage error, not a failure after billing."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot make folder {folder}: {exc.strerror}", context, parameter) from None
    return folder


@contextmanager
def reporting_errors() -> Iterator[None]:
    """API and connection failures as one line on stderr and the exit code that tells them apart."""
    try:
        yield
    except ApiError as exc:
        click.echo(f"darkroom refused: {exc.code}: {exc.message}", err=True)
        for problem in exc.fields:
            click.echo(f"  {problem.get('field')}: {problem.get('message')} ({problem.get('rule')})", err=True)
        raise SystemExit(USAGE if exc.clients_mistake else UNAVAILABLE) from None
    except Unreachable as exc:
        click.echo(f"darkroom: {exc}", err=True)
        raise SystemExit(UNAVAILABLE) from None


def follow_and_save(client: Client, job: dict[str, Any], out: Path, timeout_s: float, as_json: bool) -> int:
    """Follow the job with a live status line (on a terminal only), then write its images and say where."""
    from rich.console import Console

    console = Console(stderr=True)
    live = console.is_terminal and not as_json
    started = time.monotonic()
    previews: set[int] = set()

    def save_previews(job: dict[str, Any]) -> None:
        for saved in client.save_previews(job, out, previews):
            if as_json:
                continue
            said = f"preview {saved}" if isinstance(saved, Path) else f"a preview could not be saved yet: {saved}"
            console.print(said, highlight=False, soft_wrap=True)

    if job["status"] not in TERMINAL:
        if live:
            with console.status(_progress(job, started)) as status:

                def on_change(job: dict[str, Any]) -> None:
                    status.update(_progress(job, started))
                    save_previews(job)

                job = client.follow(job["id"], timeout_s=timeout_s, on_change=on_change)
        else:
            job = client.follow(job["id"], timeout_s=timeout_s, on_change=save_previews)
    files = client.download(job, out) if job["status"] == "succeeded" else []
    if as_json:
        click.echo(json.dumps({**job, "files": [str(path) for path in files]}, indent=2))
    elif job["status"] == "succeeded":
        cost = f", ${job['cost_usd']:.4f}" if job.get("cost_usd") is not None else ""
        click.echo(f"{job['id']} succeeded in {time.monotonic() - started:.1f} s{cost}", err=True)
        for path in files:
            click.echo(str(path))
    elif job["status"] in TERMINAL:
        error = job.get("error") or {}
        click.echo(f"{job['id']} {job['status']}: {error.get('code', '')}: {error.get('message', '')}", err=True)
    else:
        click.echo(f"{job['id']} is still {job['status']}; `darkroom jobs wait {job['id']}` follows it", err=True)
    if job["status"] == "succeeded":
        return OK
    return JOB_FAILED if job["status"] in TERMINAL else STILL_RUNNING


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave: the rest are left to darkroom's defaults."""
    return {name: value for name, value in options.items() if value is not None}


def _progress(job: dict[str, Any], started: float) -> str:
    provider = job.get("provider") or {}
    where = f" on {provider.get('route')}" if provider.get("route") else ""
    progress = job.get("progress") or {}
    shown = f", preview {len(progress['previews'])}/{progress['partial_images']}" if progress else ""
    return f"{job['id']}: {job['status']}{where}{shown} ({time.monotonic() - started:.0f} s)"


@click.command()
@click.argument("prompt")
@click.option("--model", type=click.Choice(sorted(catalog.MODELS)), default=catalog.DEFAULT_MODEL, show_default=True)
@click.option("--size", default=None, help="1024x1024, 1536x1024, 1024x1536, auto, or WxH where the model allows.")
@click.option("--quality", type=click.Choice(catalog.EXTENDED_QUALITIES), default=None)
@click.option("--format", "output_format", type=click.Choice(catalog.OUTPUT_FORMATS), default=None)
@click.option("--background", type=click.Choice(["transparent", "opaque", "auto"]), default=None)
@click.option("--n", type=click.IntRange(1, 10), default=1, show_default=True, help="How many images.")
@click.option(
    "--previews",
    "partial_images",
    type=click.IntRange(1, 3),
    default=None,
    help="Save 1-3 previews to --out while the image renders (n=1).",
)
@click.option("--provider", default=None, help="Pin the job to one provider route (openai, gateway, wavespeed).")
@click.option("--batch", is_flag=True, help="The batch tier: half price, done within 24 h (see --timeout).")
@click.option("--idempotency-key", default=None, help="Sending the same key again returns the same job.")
@follow_options
@connection_options
def generate(
    prompt: str,
    model: str,
    size: str | None,
    quality: str | None,
    output_format: str | None,
    background: str | None,
    n: int,
    partial_images: int | None,
    provider: str | None,
    batch: bool,
    idempotency_key: str | None,
    out: Path,
    timeout: float,
    as_json: bool,
    url: str,
    api_key: str | None,
) -> None:
    """Generate images from PROMPT, follow the job, and write the images to --out."""
    body = {"prompt": prompt, "model": model, "n": n, **_given(size=size, quality=quality, output_format=output_format)}
    body.update(_given(background=background, provider=provider, partial_images=partial_images))
    if batch:
        body["tier"] = "batch"
    with reporting_errors(), Settings(url, api_key).client() as client:
        job = client.generate(body, idempotency_key=idempotency_key)
        sys.exit(follow_and_save(client, job, out, timeout, as_json))


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--prompt", required=True, help="What to change.")
@click.option("--mask", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PNG; transparent = edit.")
@click.option("--model", type=click.Choice(sorted(catalog.MODELS)), default=catalog.DEFAULT_MODEL, show_default=True)
@click.option("--size", default=None)
@click.option("--quality", type=click.Choice(catalog.EXTENDED_QUALITIES), default=None)
@click.option("--format", "output_format", type=click.Choice(catalog.OUTPUT_FORMATS), default=None)
@click.option("--previews", "partial_images", type=click.IntRange(1, 3), default=None, help="Save 1-3 previews.")
@follow_options
@connection_options
def edit(
    images: tuple[Path, ...],
    prompt: str,
    mask: Path | None,
    model: str,
    size: str | None,
    quality: str | None,
    output_format: str | None,
    partial_images: int | None,
    out: Path,
    timeout: float,
    as_json: bool,
    url: str,
    api_key: str | None,
) -> None:
    """Edit IMAGES (1-16 files) as --prompt says; files over 3 MB in all go through presigned uploads."""
    if len(images) > catalog.MAX_EDIT_IMAGES:
        raise click.BadParameter(f"at most {catalog.MAX_EDIT_IMAGES} images", param_hint="IMAGES")
    fields = {"prompt": prompt, "model": model, **_given(size=size, quality=quality, output_format=output_format)}
    fields.update(_given(partial_images=partial_images))
    with reporting_errors(), Settings(url, api_key).client() as client:
        job = client.edit(list(images), mask, fields)
        sys.exit(follow_and_save(client, job, out, timeout, as_json))


@click.group()
def jobs() -> None:
    """The tenant's jobs: list, show, cancel, wait."""


@jobs.command("list")
@click.option("--status", type=click.Choice(["awaiting_upload", "queued", "running", "polling", *TERMINAL]))
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@connection_options
def jobs_list(status: str | None, limit: int, as_json: bool, url: str, api_key: str | None) -> None:
    """The newest jobs first."""
    from rich.console import Console
    from rich.table import Table

    with reporting_errors(), Settings(url, api_key).client() as client:
        page = client.jobs(status=status, limit=limit)
    if as_json:
        click.echo(json.dumps(page["data"], indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for name in ("ID", "STATUS", "MODEL", "CREATED"):
        table.add_column(name, no_wrap=True)
    table.add_column("PROMPT", no_wrap=True, overflow="ellipsis")
    for job in page["data"]:
        prompt = str(job["request"].get("prompt", ""))
        table.add_row(job["id"], job["status"], job["model"], job["created_at"][:19], prompt[:50])
    # A pipe has no width: give it whole lines rather than Rich's 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@jobs.command("show")
@click.argument("job_id")
@connection_options
def jobs_show(job_id: str, url: str, api_key: str | None) -> None:
    """One job as JSON, with download links for its images."""
    with reporting_errors(), Settings(url, api_key).client() as client:
        click.echo(json.dumps(client.job(job_id), indent=2))


@jobs.command("cancel")
@click.argument("job_id")
@connection_options
def jobs_cancel(job_id: str, url: str, api_key: str | None) -> None:
    """Cancel a job that has not ended."""
    with reporting_errors(), Settings(url, api_key).client() as client:
        job = client.cancel(job_id)
    click.echo(f"{job['id']} {job['status']}")


@jobs.command("wait")
@click.argument("job_id")
@follow_options
@connection_options
def jobs_wait(job_id: str, out: Path, timeout: float, as_json: bool, url: str, api_key: str | None) -> None:
    """Follow a job until it ends, then write its images to --out."""
    with reporting_errors(), Settings(url, api_key).client() as client:
        sys.exit(follow_and_save(client, client.job(job_id), out, timeout, as_json))
