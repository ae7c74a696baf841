"""find_batch stands between a lost create and a second, twice billed, batch: a list that cannot be read to its end
is no answer of "none". And one unreadable results line hides none after it."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import pytest

from darkroom.errors import ProviderError
from darkroom.providers.batches import OpenAIBatchApi, read_results_lines

KEY = "sk-lists-0123456789"
NOW = 1_800_000_000


def batch(batch_id: str, created_at: int = NOW, **metadata: str) -> dict[str, Any]:
    return {"id": batch_id, "status": "in_progress", "created_at": created_at, "metadata": metadata or None}


def api_listing(pages: list[dict[str, Any]]) -> OpenAIBatchApi:
    answers = iter(pages)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"object": "list", **next(answers)})

    return OpenAIBatchApi("https://api.example/v1", lambda: KEY, transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(
    "pages",
    [
        # "there is more", but this page holds nothing (a page cut short, a replica behind)
        [{"data": [], "has_more": True}],
        # the next page starts at the same batch: the cursor did not move
        [{"data": [batch("batch_other")], "has_more": True}, {"data": [batch("batch_other")], "has_more": True}],
    ],
    ids=["empty_page_with_has_more", "cursor_that_does_not_move"],
)
def test_a_list_that_cannot_be_read_to_its_end_is_not_an_answer_of_none(pages: list[dict[str, Any]]) -> None:
    api = api_listing(pages)
    # When darkroom looks for its batch after a lost create / Then it must not be told "there is none" (None), which
    # makes _create create a second batch: it must raise, so the record is carried on later
    with pytest.raises(ProviderError):
        found = api.find_batch("darkroom_batch", "dbatch_x", created_after=NOW - 600, timeout_s=5)
        print("find_batch answered", found)


def test_one_unreadable_line_does_not_hide_the_lines_after_it() -> None:
    good = b'{"custom_id":"job_b","response":null,"error":{"code":"batch_expired","message":"m"}}\n'
    chunks = [good.replace(b"job_b", b"job_a"), b"not json\n", good]
    read: list[str] = []
    with contextlib.suppress(ProviderError):
        for line, _ in read_results_lines(chunks):
            read.append(line.custom_id)
    read = [custom_id for custom_id in read if custom_id]  # the unreadable line is an error of no job
    # The line after the bad one still reaches its job
    assert read == ["job_a", "job_b"], read
