"""The emulator's Files and Batch APIs: a batch's lifecycle on a clock the test moves, OpenAI's validation, refused
lines in the error file, cancel and expiry, each line billed once, and the list's pages."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from darkroom_local.emulator import Emulator, EmulatorConfig
from tests.images import image_bytes, mask_bytes

GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"
AUTH = {"Authorization": "Bearer sk-test"}


class Clock:
    """The batch store's clock, moved by the test: seconds since the batch under test was created."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Api:
    """The emulator's Files and Batch endpoints over HTTP, as a test calls them, its batches on a clock the test
    moves."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.clock = Clock()
        emulator.batches.clock = self.clock
        self.http = httpx.Client(base_url=f"{emulator.url}/v1", headers=AUTH, timeout=30)

    def upload(self, data: bytes, *, purpose: str = "batch", filename: str = "in.jsonl") -> str:
        response = self.http.post("/files", data={"purpose": purpose}, files={"file": (filename, data)})
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def create(self, lines: list[dict[str, Any]], endpoint: str = GENERATIONS, **params: Any) -> dict[str, Any]:
        file_id = self.upload(jsonl(lines))
        body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **params}
        response = self.http.post("/batches", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        response = self.http.get(f"/batches/{batch_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        assert file_id is not None
        response = self.http.get(f"/files/{file_id}/content")
        assert response.status_code == 200
        return [json.loads(line) for line in response.content.splitlines()]


@pytest.fixture
def api(emulator: Emulator) -> Iterator[Api]:
    """A fresh emulator state whose batches live one second on `api.clock`; a test may change `emulator.config`."""
    emulator.config = EmulatorConfig(batch_ms=1000)
    emulator.reset()
    client = Api(emulator)
    yield client
    client.http.close()


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def line(custom_id: str, prompt: str, url: str = GENERATIONS, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"prompt": prompt, "quality": "low", **body}}


def image_of(result_line: dict[str, Any], index: int = 0) -> Image.Image:
    b64 = result_line["response"]["body"]["data"][index]["b64_json"]
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_a_batch_validates_runs_its_lines_in_turn_finalizes_and_completes(api: Api) -> None:
    # Given a batch of three generation lines that lives one second
    clock = api.clock
    created = api.create([line("a", "a fox"), line("b", "an owl", size="1536x1024"), line("c", "a hare")])
    assert created["status"] == "validating" and created["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    # When its clock passes a tenth of its life, then two thirds of its processing time
    clock.now = 0.1
    started = api.retrieve(created["id"])
    clock.now = 0.1 + 0.7 * 2 / 3 + 0.001
    halfway = api.retrieve(created["id"])
    clock.now = 0.85
    finalizing = api.retrieve(created["id"])
    clock.now = 1.0
    done = api.retrieve(created["id"])
    # Then it was in progress with nothing run, then with two lines run, then finalizing, then completed
    assert (started["status"], started["request_counts"]["completed"]) == ("in_progress", 0)
    assert started["request_counts"]["total"] == 3 and started["in_progress_at"] is not None
    assert (halfway["status"], halfway["request_counts"]["completed"]) == ("in_progress", 2)
    assert (finalizing["status"], finalizing["output_file_id"]) == ("finalizing", None)
    assert done["status"] == "completed" and done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert done["error_file_id"] is None and done["completed_at"] >= done["created_at"]
    assert done["usage"]["output_tokens"] > 0 and done["model"] == "gpt-image-2"
    # And the output file holds each line's answer under its custom_id, in order
    results = api.lines(done["output_file_id"])
    assert [r["custom_id"] for r in results] == ["a", "b", "c"]
    assert all(r["id"].startswith("batch_req_") and r["error"] is None for r in results)
    assert all(r["response"]["status_code"] == 200 and r["response"]["request_id"] for r in results)
    assert image_of(results[1]).size == (1536, 1024)
    output = api.http.get(f"/files/{done['output_file_id']}").json()
    content = api.http.get(f"/files/{done['output_file_id']}/content").content
    assert (output["purpose"], output["object"], output["bytes"]) == ("batch_output", "file", len(content))


@pytest.mark.parametrize(
    ("content", "code", "line_number"),
    [
        (b"", "empty_file", None),
        (b'{"custom_id": "a"\n', "invalid_json_line", 1),
        (jsonl([line("a", "x")]) + b"[1, 2]\n", "invalid_json_line", 2),
        (jsonl([line("a", "x"), line("b", "y", url=EDITS)]), "url_mismatch", 2),
        (jsonl([line("a", "x"), line("a", "y")]), "duplicate_custom_id", 2),
        (jsonl([line("a", "x"), line("b", "y", model="gpt-image-1.5")]), "model_mismatch", 2),
        (jsonl([{"custom_id": "a", "method": "POST", "url": GENERATIONS}]), "missing_required_parameter", 1),
        (jsonl([{**line("a", "x"), "method": "GET"}]), "invalid_value", 1),
    ],
)
def test_a_malformed_input_file_fails_the_batch_naming_each_line(
    api: Api, content: bytes, code: str, line_number: int | None
) -> None:
    # Given an input file that breaks one of OpenAI's rules for batch files
    clock = api.clock
    file_id = api.upload(content)
    body = {"input_file_id": file_id, "endpoint": GENERATIONS, "completion_window": "24h"}
    created = api.http.post("/batches", json=body).json()
    # When its validation ends
    clock.now = 0.1
    batch = api.retrieve(created["id"])
    # Then the batch failed with the rule and the line that broke it, and nothing ran or was billed
    assert batch["status"] == "failed" and batch["failed_at"] is not None
    (error,) = batch["errors"]["data"]
    assert (error["code"], error["line"]) == (code, line_number) and error["message"]
    assert batch["request_counts"]["total"] == 0 and batch["output_file_id"] is None
    assert api.emulator.calls()["totals"]["requests"] == 0


def test_a_line_over_the_size_limit_fails_the_batch(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a line limit of 300 bytes and a file whose second line is longer
    from darkroom_local import batch_emulator

    monkeypatch.setattr(batch_emulator, "MAX_LINE_BYTES", 300)
    clock = api.clock
    created = api.create([line("a", "short"), line("b", "long " * 80)])
    # When validation ends / Then the batch failed on line 2
    clock.now = 0.1
    assert api.retrieve(created["id"])["errors"]["data"][0] | {"message": ""} == {
        "code": "line_too_large",
        "line": 2,
        "param": None,
        "message": "",
    }


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"input_file_id": "file-nothere"}, 404, "id"),
        ({"endpoint": "/v1/chat/completions"}, 400, "endpoint"),
        ({"completion_window": "48h"}, 400, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, 400, "metadata"),
        ({"metadata": {"k": "v" * 513}}, 400, "metadata"),
        ({"output_expires_after": {"anchor": "created_at", "seconds": 60}}, 400, "output_expires_after"),
        ({"priority": "high"}, 400, "priority"),
    ],
)
def test_a_batch_openai_would_refuse_is_refused_at_once(
    api: Api, change: dict[str, Any], status: int, param: str
) -> None:
    # Given a valid input file
    body = {"input_file_id": api.upload(jsonl([line("a", "x")])), "endpoint": GENERATIONS, "completion_window": "24h"}
    # When a batch is asked for with one wrong parameter
    response = api.http.post("/batches", json={**body, **change})
    # Then it is OpenAI's error for that parameter, and no batch exists
    assert (response.status_code, response.json()["error"]["param"]) == (status, param)
    assert api.http.get("/batches").json()["data"] == []


def test_a_file_of_another_purpose_is_no_batch_input(api: Api) -> None:
    file_id = api.upload(image_bytes(), purpose="vision", filename="in.png")
    body = {"input_file_id": file_id, "endpoint": GENERATIONS, "completion_window": "24h"}
    response = api.http.post("/batches", json=body)
    assert (response.status_code, response.json()["error"]["param"]) == (400, "input_file_id")


def test_uploads_follow_openais_rules_and_files_can_be_read_back(api: Api) -> None:
    # A batch file must be JSONL; a purpose must be one OpenAI knows
    refused = api.http.post("/files", data={"purpose": "batch"}, files={"file": ("in.txt", b"{}")})
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "file")
    unknown = api.http.post("/files", data={"purpose": "memes"}, files={"file": ("in.jsonl", b"{}")})
    assert (unknown.status_code, unknown.json()["error"]["param"]) == (400, "purpose")
    # A stored file answers its metadata and its bytes; an unknown one is 404
    file_id = api.upload(b'{"a": 1}\n')
    described = api.http.get(f"/files/{file_id}").json()
    assert described | {"created_at": 0} == {
        "id": file_id,
        "object": "file",
        "bytes": 9,
        "created_at": 0,
        "expires_at": None,
        "filename": "in.jsonl",
        "purpose": "batch",
        "status": "processed",
        "status_details": None,
    }
    assert api.http.get(f"/files/{file_id}/content").content == b'{"a": 1}\n'
    assert api.http.get("/files/file-nothere").status_code == 404


def test_refused_lines_go_to_the_error_file_with_openais_answer(api: Api) -> None:
    # Given a batch with a good line, a prompt the content policy refuses and an invalid size
    clock = api.clock
    created = api.create([line("ok", "a fox"), line("nsfw", "[refuse] x"), line("big", "a whale", size="999x999")])
    # When it completes
    clock.now = 1.0
    batch = api.retrieve(created["id"])
    # Then one line is in the output file and two in the error file, each with its 400 and OpenAI's error body
    assert batch["status"] == "completed" and batch["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    assert [r["custom_id"] for r in api.lines(batch["output_file_id"])] == ["ok"]
    refused = {r["custom_id"]: r for r in api.lines(batch["error_file_id"])}
    assert refused["nsfw"]["error"] is None and refused["nsfw"]["response"]["status_code"] == 400
    assert refused["nsfw"]["response"]["body"]["error"]["code"] == "moderation_blocked"
    assert refused["big"]["response"]["body"]["error"]["param"] == "size"
    # And only the good line was billed
    totals = api.emulator.calls()["totals"]
    assert (totals["requests"], totals["generations"], totals["batched"]) == (3, 1, 1)


def test_a_cancel_keeps_the_lines_already_run_and_cancels_the_rest(api: Api) -> None:
    # Given a batch of four lines, two of them run
    clock = api.clock
    created = api.create([line(f"l{i}", f"prompt {i}") for i in range(4)])
    clock.now = 0.1 + 0.7 * 2 / 4 + 0.001
    assert api.retrieve(created["id"])["request_counts"]["completed"] == 2
    # When it is cancelled, and read again a little later and once its cancelling is over
    cancelling = api.http.post(f"/batches/{created['id']}/cancel").json()
    clock.now += 0.05
    still = api.retrieve(created["id"])
    clock.now += 0.1
    cancelled = api.retrieve(created["id"])
    # Then it was cancelling, ran nothing more, and ended cancelled
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
    assert (still["status"], still["request_counts"]["completed"]) == ("cancelling", 2)
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
    assert cancelled["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    # And the two lines run stay in the output file; the others are in the error file as batch_cancelled
    assert [r["custom_id"] for r in api.lines(cancelled["output_file_id"])] == ["l0", "l1"]
    errors = api.lines(cancelled["error_file_id"])
    assert [(r["custom_id"], r["response"], r["error"]["code"]) for r in errors] == [
        ("l2", None, "batch_cancelled"),
        ("l3", None, "batch_cancelled"),
    ]
    assert api.emulator.calls()["totals"]["batched"] == 2
    # And an ended batch cannot be cancelled again
    assert api.http.post(f"/batches/{created['id']}/cancel").status_code == 409


def test_an_expiring_batch_runs_half_its_lines_and_fails_the_rest_as_expired(api: Api) -> None:
    # Given batches that expire / When one of four lines reaches the end of its life
    api.emulator.config.batch_outcome = "expire"
    clock = api.clock
    created = api.create([line(f"l{i}", f"prompt {i}") for i in range(4)])
    clock.now = 0.9
    waiting = api.retrieve(created["id"])
    clock.now = 1.0
    batch = api.retrieve(created["id"])
    # Then it stalled in progress, then expired with two lines done and two expired
    assert (waiting["status"], waiting["request_counts"]["completed"]) == ("in_progress", 2)
    assert batch["status"] == "expired" and batch["expired_at"] is not None and batch["completed_at"] is None
    assert batch["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert len(api.lines(batch["output_file_id"])) == 2
    expired = api.lines(batch["error_file_id"])
    assert [(r["custom_id"], r["error"]["code"]) for r in expired] == [("l2", "batch_expired"), ("l3", "batch_expired")]
    assert all(r["error"]["message"] for r in expired)


def test_a_failing_batch_fails_after_validation_and_bills_nothing(api: Api) -> None:
    api.emulator.config.batch_outcome = "fail"
    clock = api.clock
    created = api.create([line("a", "a fox")])
    clock.now = 1.0
    batch = api.retrieve(created["id"])
    assert batch["status"] == "failed" and batch["errors"]["data"][0]["code"] == "token_limit_exceeded"
    assert batch["output_file_id"] is None and api.emulator.calls()["totals"]["generations"] == 0


def test_each_line_is_billed_once_however_often_the_batch_is_read(api: Api) -> None:
    # Given a completed batch of two lines
    clock = api.clock
    created = api.create([line("a", "a fox"), line("b", "an owl")])
    clock.now = 1.0
    # When it is read, listed and read again
    for _ in range(3):
        api.retrieve(created["id"])
        api.http.get("/batches")
    # Then each line is one request, one generation, and one generation through a batch
    calls = httpx.get(f"{api.emulator.url}/_emulator/calls").json()
    assert calls["totals"] == {"requests": 2, "generations": 2, "submissions": 0, "batched": 2}
    assert calls["prompts"]["a fox"] | {"edits": []} == {
        "requests": 1,
        "generations": 1,
        "submissions": 0,
        "batched": 1,
        "edits": [],
    }
    # And each generation is counted under the darkroom job its custom_id names
    assert api.emulator.stats.as_dict()["generations"] == {"a": 1, "b": 1}


def test_the_list_pages_newest_first(api: Api) -> None:
    # Given five batches
    ids = [api.create([line("a", f"prompt {i}")], metadata={"n": str(i)})["id"] for i in range(5)]
    # When they are listed two at a time
    first = api.http.get("/batches", params={"limit": 2}).json()
    second = api.http.get("/batches", params={"limit": 2, "after": first["last_id"]}).json()
    third = api.http.get("/batches", params={"limit": 2, "after": second["last_id"]}).json()
    # Then the pages run from the newest to the oldest, and only the last says there is no more
    assert [b["id"] for b in first["data"] + second["data"] + third["data"]] == ids[::-1]
    assert (first["object"], first["first_id"], first["has_more"]) == ("list", ids[4], True)
    assert (second["has_more"], third["has_more"], third["last_id"]) == (True, False, ids[0])
    assert [b["metadata"] for b in third["data"]] == [{"n": "0"}]
    assert api.http.get("/batches", params={"limit": 101}).status_code == 400


def test_edit_lines_take_uploaded_files_and_data_urls(api: Api) -> None:
    # Given a source image and a mask uploaded as vision files, and the same image as a data URL
    clock = api.clock
    source = image_bytes(size=(64, 48), color=(200, 10, 10))
    image_id = api.upload(source, purpose="vision", filename="in.png")
    mask_id = api.upload(mask_bytes((64, 48), hole=(0, 0, 32, 48)), purpose="vision", filename="mask.png")
    data_url = "data:image/png;base64," + base64.b64encode(source).decode()
    lines = [
        line("masked", "paint", url=EDITS, images=[{"file_id": image_id}], mask={"file_id": mask_id}),
        line("inline", "paint", url=EDITS, images=[{"image_url": data_url}]),
        line("missing", "paint", url=EDITS, images=[{"file_id": "file-nothere"}]),
    ]
    created = api.create(lines, endpoint=EDITS)
    # When the batch completes
    clock.now = 1.0
    batch = api.retrieve(created["id"])
    # Then both edits are the source tinted (only the mask's hole for the first), and the unknown file is refused
    results = {r["custom_id"]: r for r in api.lines(batch["output_file_id"])}
    masked, inline = image_of(results["masked"]).convert("RGB"), image_of(results["inline"]).convert("RGB")
    assert masked.size == (64, 48) and masked.getpixel((5, 5)) != masked.getpixel((60, 5)) == (200, 10, 10)
    assert inline.getpixel((60, 5)) != (200, 10, 10)
    (refused,) = api.lines(batch["error_file_id"])
    assert refused["response"]["body"]["error"]["param"] == "images[0].file_id"
    # And the billing view shows what reached the provider
    edits = api.emulator.calls()["prompts"]["paint"]["edits"]
    assert sorted(edit["mask"] for edit in edits) == [False, True]


def test_the_batch_endpoints_take_the_images_endpoints_key_and_reset_forgets_them(api: Api) -> None:
    api.emulator.config.api_key = "sk-right"
    assert httpx.get(f"{api.emulator.url}/v1/batches").status_code == 401
    api.http.headers["Authorization"] = "Bearer sk-right"
    created = api.create([line("a", "a fox")])
    httpx.post(f"{api.emulator.url}/_emulator/reset")
    assert api.http.get(f"/batches/{created['id']}").status_code == 404
    assert api.http.get(f"/files/{created['input_file_id']}").status_code == 404
