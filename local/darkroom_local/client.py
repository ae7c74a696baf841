"""darkroom's HTTP API as the CLI uses it: submit, follow, download. Never shipped to Lambda."""

from __future__ import annotations

import mimetypes
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "canceled")
# Edits up to this size go inline as multipart, as the openai SDK sends them; larger ones through presigned
# uploads, since the API takes at most 4 MB of body (Lambda's 6 MB event holds the base64 of it).
INLINE_EDIT_BYTES = 3 * 1024 * 1024
EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}


class ApiError(Exception):
    """darkroom answered with an error: its status, code, message and the fields it names."""

    def __init__(self, status: int, body: Any) -> None:
        body = body if isinstance(body, dict) else {}
        error = body["error"] if isinstance(body.get("error"), dict) else {}
        self.status = status
        self.code = str(error.get("code") or "error")
        # API Gateway's own refusals are {"message": ...}
        self.message = str(error.get("message") or body.get("message") or f"HTTP {status}")
        self.fields: list[dict[str, str]] = [f for f in error.get("fields") or [] if isinstance(f, dict)]
        super().__init__(self.message)

    @property
    def clients_mistake(self) -> bool:
        """A request darkroom will refuse however often it is sent (4xx but 429)."""
        return 400 <= self.status < 500 and self.status != 429


class Unreachable(Exception):
    """No answer from darkroom at all."""


class Client:
    def __init__(self, url: str, api_key: str, *, timeout_s: float = 60) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unreachable(f"could not reach darkroom at {self.url} ({exc.__class__.__name__})") from None
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status_code >= 400:
            raise ApiError(answer.status_code, body if isinstance(body, dict) else {"message": answer.text[:200]})
        if not 200 <= answer.status_code < 300 or not isinstance(body, dict):
            # A redirect, a proxy's or portal's page: not darkroom's API, whatever its status says
            kind = answer.headers.get("content-type", "no content type").split(";")[0]
            raise Unreachable(
                f"{self.url} answered HTTP {answer.status_code} ({kind}), not darkroom's API: check DARKROOM_URL"
            )
        return body

    def _job(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A job document, checked for what the CLI reads of every job."""
        job = self._call(method, path, **kwargs)
        if not isinstance(job.get("id"), str) or not isinstance(job.get("status"), str):
            raise Unreachable(f"{self.url} answered {path} without a job in it: check DARKROOM_URL")
        return job

    def generate(self, body: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._job("POST", "/v1/images/generations", json=body, headers=headers)

    def edit(self, images: list[Path], mask: Path | None, fields: dict[str, Any]) -> dict[str, Any]:
        """Inline multipart when the files are small, else an upload whose files go straight to storage."""
        files = [*images, *([mask] if mask else [])]
        if sum(path.stat().st_size for path in files) <= INLINE_EDIT_BYTES:
            parts = [("image[]", _part(path)) for path in images]
            if mask:
                parts.append(("mask", _part(mask)))
            form = {k: str(v) for k, v in fields.items()}
            return self._job("POST", "/v1/images/edits", data=form, files=parts)
        opened = self._job("POST", "/v1/uploads", json={**fields, "files": {"images": len(images), "mask": bool(mask)}})
        by_field = {f"image[{i}]": path for i, path in enumerate(images)}
        if mask:
            by_field["mask"] = mask
        for post in opened["uploads"]:
            path = by_field[post["field"]]
            name, content, content_type = _part(path)
            try:
                sent = httpx.post(
                    post["url"],
                    data={**post["fields"], "Content-Type": content_type},
                    files={"file": (name, content, content_type)},
                    timeout=120,
                )
            except httpx.HTTPError as exc:
                raise Unreachable(f"could not upload {path} ({exc.__class__.__name__})") from None
            if sent.status_code >= 300:
                raise ApiError(sent.status_code, {"error": {"code": "upload_refused", "message": sent.text[:300]}})
        return opened

    def job(self, job_id: str) -> dict[str, Any]:
        return self._job("GET", f"/v1/jobs/{job_id}")

    def jobs(self, *, status: str | None, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        return self._call("GET", "/v1/jobs", params=params)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._job("DELETE", f"/v1/jobs/{job_id}")

    def follow(
        self,
        job_id: str,
        *,
        timeout_s: float,
        on_change: Callable[[dict[str, Any]], None] = lambda job: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        """The job once it has ended, or as it stands after `timeout_s`; looks every 0.5 s growing to 2 s."""
        deadline = clock() + timeout_s
        gap = 0.5
        while True:
            job = self.job(job_id)
            on_change(job)
            if job["status"] in TERMINAL or clock() >= deadline:
                return job
            sleep(min(gap, max(0.0, deadline - clock())))
            gap = min(gap * 1.5, 2.0)

    def download(self, job: dict[str, Any], folder: Path) -> list[Path]:
        """Each output saved as {job id}-{index}.{ext} in `folder` (made by the --out option before anything is sent).
        The same job's images always get the same names, so saving a job again rewrites the same bytes; a download
        cut short leaves no file."""
        if any("url" not in output for output in job.get("outputs") or []):
            job = self.job(str(job["id"]))  # a replayed submission's answer carries no download links
        return [
            _save(output, folder / f"{_stem(job)}-{index}.{EXTENSIONS.get(output.get('format'), 'img')}")
            for index, output in enumerate(job["outputs"])
        ]

    def save_previews(self, job: dict[str, Any], folder: Path, saved: set[int]) -> list[Path | Exception]:
        """The job's previews (partial_images) not in `saved` yet, as {job id}-preview-{index}.{ext}; `saved` grows.
        A preview that cannot be downloaded is its error in the list, and tried again at the next look: a preview is
        a nicety, and never costs the job's images."""
        done: list[Path | Exception] = []
        for preview in (job.get("progress") or {}).get("previews") or []:
            index = preview.get("index")
            if not isinstance(index, int) or index in saved or "url" not in preview:
                continue
            ext = EXTENSIONS.get(preview.get("format"), "img")
            try:
                done.append(_save(preview, folder / f"{_stem(job)}-preview-{index}.{ext}"))
            except (ApiError, Unreachable) as exc:
                done.append(exc)
                continue
            saved.add(index)
        return done


def _stem(job: dict[str, Any]) -> str:
    # Names from darkroom's answer are never trusted as paths: an id of letters, digits and _, a known extension.
    return re.sub(r"[^A-Za-z0-9_]", "_", str(job["id"]))[:64]


def _save(image: dict[str, Any], path: Path) -> Path:
    """The image at its download link, written whole or not at all."""
    partial = path.with_name(f".{path.name}.part")
    try:
        with httpx.stream("GET", str(image.get("url")), timeout=120) as answer:
            if answer.status_code != 200:
                raise ApiError(answer.status_code, {"message": f"download of {path.name} failed"})
            with partial.open("wb") as file:
                for chunk in answer.iter_bytes():
                    file.write(chunk)
        os.replace(partial, path)
    except httpx.HTTPError as exc:
        raise Unreachable(f"could not download {path.name} ({exc.__class__.__name__})") from None
    finally:
        partial.unlink(missing_ok=True)
    return path


def _part(path: Path) -> tuple[str, bytes, str]:
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, path.read_bytes(), content_type
