"""An edit's fields and forms: the SDK's multipart read back exactly, and the edit rules of the model table."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from darkroom import routing
from darkroom.api.forms import parse_form
from darkroom.errors import InvalidRequest, ValidationFailed
from darkroom.models import EditRequest, parse_edit_request

BOTH_ROUTES = routing.RouteConfig(frozenset({"openai", "wavespeed"}))


def multipart(data: dict[str, Any], files: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[str, bytes]:
    request = httpx.Request("POST", "https://x/v1/images/edits", data=data, files=files)
    return request.headers["content-type"], request.read()


def test_a_form_gives_its_files_by_field_and_its_text_typed() -> None:
    # Given a form as the SDK flattens it: image[] parts, a mask, numbers as text, metadata[...] and events[]
    content_type, body = multipart(
        {
            "prompt": "a red door",
            "n": "2",
            "output_compression": "80",
            "stream": "false",
            "metadata[order]": "42",
            "webhook_events[]": ["job.failed", "job.succeeded"],
        },
        [
            ("image[]", ("a.png", b"A", "image/png")),
            ("image[]", ("b.png", b"B", "image/png")),
            ("mask", ("m.png", b"M", "image/png")),
        ],
    )

    # When it is parsed
    form = parse_form(content_type, body)

    # Then files keep their order and bytes, and the fields are what JSON would have carried
    assert form.files == {"image": [b"A", b"B"], "mask": [b"M"]}
    assert form.fields == {
        "prompt": "a red door",
        "n": 2,
        "output_compression": 80,
        "stream": False,
        "metadata": {"order": "42"},
        "webhook_events": ["job.failed", "job.succeeded"],
    }


def test_a_single_image_part_is_the_first_image() -> None:
    content_type, body = multipart({"prompt": "p"}, [("image", ("a.png", b"A", "image/png"))])
    assert parse_form(content_type, body).files == {"image": [b"A"]}


@pytest.mark.parametrize(
    ("content_type", "body", "rule"),
    [
        ("multipart/form-data", b"--x\r\n\r\n--x--", "multipart_invalid"),  # no boundary
        ("multipart/form-data; boundary=x", b"not a form at all", "multipart_invalid"),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\ncontent-disposition: form-data\r\n\r\nv\r\n--x--\r\n",
            "multipart_invalid",
        ),
    ],
    ids=["no-boundary", "no-parts", "part-without-name"],
)
def test_an_unreadable_form_is_a_400(content_type: str, body: bytes, rule: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_form(content_type, body)
    assert refused.value.errors[0].rule == rule


def test_a_repeated_text_field_and_a_non_utf8_one_are_refused_by_name() -> None:
    content_type, body = multipart({"prompt": ["a", "b"]}, [("image", ("a.png", b"A", "image/png"))])
    with pytest.raises(InvalidRequest) as repeated:
        parse_form(content_type, body)
    assert (repeated.value.errors[0].field, repeated.value.errors[0].rule) == ("prompt", "form_field_repeated")
    content_type, body = multipart({}, [("image", ("a.png", b"A", "image/png"))])
    body = body.replace(b"--\r\n", b"", 1)
    boundary = content_type.split("boundary=")[1].encode()
    latin = (
        b"--"
        + boundary
        + b'\r\ncontent-disposition: form-data; name="prompt"\r\n\r\ncaf\xe9\r\n--'
        + boundary
        + b"--\r\n"
    )
    with pytest.raises(InvalidRequest) as encoded:
        parse_form(content_type, latin)
    assert (encoded.value.errors[0].field, encoded.value.errors[0].rule) == ("prompt", "form_field_encoding")


def rules_of(body: dict[str, Any], files: dict[str, int] | None = None) -> set[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as refused:
        parse_edit_request({"prompt": "p", **body}, files=files, routes=BOTH_ROUTES)
    return {(e.field, e.rule) for e in refused.value.errors}


@pytest.mark.parametrize(
    ("model", "fidelity"), [("gpt-image-1.5", "high"), ("gpt-image-1.5", "low"), ("gpt-image-1-mini", "low")]
)
def test_input_fidelity_is_taken_where_the_model_takes_it(model: str, fidelity: str) -> None:
    request = parse_edit_request({"prompt": "p", "model": model, "input_fidelity": fidelity}, files={"image": 1})
    assert isinstance(request, EditRequest) and request.provider_params()["input_fidelity"] == fidelity


@pytest.mark.parametrize(
    ("body", "files", "expected"),
    [
        (
            {"model": "gpt-image-2", "input_fidelity": "high"},
            {"image": 1},
            ("input_fidelity", "input_fidelity_not_supported"),
        ),
        (
            {"model": "gpt-image-1-mini", "input_fidelity": "high"},
            {"image": 1},
            ("input_fidelity", "input_fidelity_not_supported"),
        ),
        ({"model": "gpt-image-1.5"}, {"image": 1, "markup": 1}, ("markup", "markup_not_supported")),
        ({"model": "gpt-image-2.6-flare"}, {"image": 1, "markup": 1, "mask": 1}, ("markup", "markup_with_mask")),
        ({}, {"image": 0}, ("image", "image_required")),
        ({}, {}, ("image", "image_required")),
        ({}, {"image": 17}, ("image", "too_many_images")),
        ({}, {"image": 1, "mask": 2}, ("mask", "one_mask")),
        ({"provider": "wavespeed"}, {"image": 1, "mask": 1}, ("mask", "provider_not_supported")),
        ({"images": []}, {"image": 1}, ("images", "json_field_in_form")),
        ({"size": "1000x1000"}, {"image": 17}, ("size", "size_multiple_of_16")),
    ],
)
def test_an_edit_breaking_a_rule_names_its_field(
    body: dict[str, Any], files: dict[str, int], expected: tuple[str, str]
) -> None:
    assert expected in rules_of(body, files)


def test_every_broken_rule_is_reported_at_once() -> None:
    assert rules_of({"size": "1000x1000", "n": "two"}, {"image": 17}) >= {
        ("size", "size_multiple_of_16"),
        ("n", "int_type"),
        ("image", "too_many_images"),
    }


def test_markup_on_a_2_5_model_without_a_mask_is_accepted_and_not_sent_as_a_field() -> None:
    request = parse_edit_request({"prompt": "p", "model": "gpt-image-2.5-sunburst"}, files={"image": 1, "markup": 1})
    assert "markup" not in request.provider_params() and "images" not in request.provider_params()


def test_a_mistyped_field_beside_images_is_a_422_listing_both_problems() -> None:
    # The images passed their type checks and are judged in a rebuilt request: as plain objects, not models
    assert rules_of({"n": "2", "images": [{"b64_json": "aGk="}, {"b64_json": "aGk=", "file": "x.png"}]}) == {
        ("n", "int_type"),
        ("images[1]", "image_source"),
    }


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=\u20ac", "--\u20ac".encode()),
        ("multipart/form-data; boundary=x", b"--x\r\n\r\n\r\n" * 70_000 + b"--x--\r\n"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\ncontent-disposition: form-data; name="p"' + b"; a=b" * 100_000 + b"\r\n\r\nv\r\n--x--\r\n",
        ),
    ],
    ids=["non-ascii-boundary", "seventy-thousand-parts", "half-a-megabyte-of-header-parameters"],
)
def test_a_form_shaped_to_be_slow_or_unreadable_is_refused_before_it_is_parsed(content_type: str, body: bytes) -> None:
    # The email parser's time grows faster than these bodies (13 s and 17 s for the last two): the limits are
    # checked on the raw bytes first, which is what each message says.
    with pytest.raises(InvalidRequest) as refused:
        parse_form(content_type, body)
    assert refused.value.errors[0].rule == "multipart_invalid"
    assert any(words in refused.value.message for words in ("ASCII", "more than 64 parts", "at most 1024 bytes"))


SLOW_HEADER = b'--real\r\ncontent-disposition: form-data; name="p"' + b"; a=b" * 40_000 + b"\r\n\r\nv\r\n--real--\r\n"
NESTED = (
    b'--real\r\ncontent-disposition: form-data; name="p"\r\ncontent-type: multipart/mixed; boundary=inner\r\n\r\n'
    + b"--inner\r\n\r\nx\r\n" * 2_000
    + b"--inner--\r\n--real--\r\n"
)


@pytest.mark.parametrize(
    ("content_type", "body", "words"),
    [
        ('multipart/form-data; x="boundary=decoy"; boundary=real', SLOW_HEADER, "at most 1024 bytes"),
        ("multipart/form-data; boundary=real", NESTED, "not nested"),
    ],
    ids=["decoy-boundary-parameter", "nested-multipart-part"],
)
def test_a_form_hiding_its_parts_from_the_limits_is_refused_before_it_is_parsed(
    content_type: str, body: bytes, words: str
) -> None:
    # The limits must see what the parser will: the real boundary, and no parts nested inside a part.
    with pytest.raises(InvalidRequest) as refused:
        parse_form(content_type, body)
    assert refused.value.errors[0].rule == "multipart_invalid" and words in refused.value.message


def test_a_quoted_boundary_in_another_case_is_read_as_the_parser_reads_it() -> None:
    body = b'--a"b\r\ncontent-disposition: form-data; name="prompt"\r\n\r\nhi\r\n--a"b--\r\n'
    form = parse_form('multipart/form-data; Boundary="a\\"b"', body.replace(b'a"b', b'a"b'))
    assert form.fields == {"prompt": "hi"}
