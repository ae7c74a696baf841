"""multipart/form-data as the official openai SDK sends an edit: file parts and text fields, read strictly.

The SDK flattens what does not fit a form the way its `_serialize_multipartform` does: a list as repeated `name[]`
fields (`image[]`, `webhook_events[]`), a dict as `name[key]` (`metadata[order]`). Text fields arrive as text, so the
integer and boolean fields of an image request are converted here, and anything else is left for the request model
to judge. Only the edit route reads forms, so the parser (the standard library's email package) loads only there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from darkroom.errors import InvalidRequest

FILE_FIELDS = ("image", "mask", "markup")
INTEGER_FIELDS = ("n", "output_compression", "partial_images")
BOOLEAN_FIELDS = ("stream", "cache", "cache_variations")
MAX_PARTS = 64  # 16 images, a mask, a markup and every text field, with room to spare
MAX_PART_HEADERS = 1024  # the SDK sends about 100 bytes: a name, a file name and a type
_NESTED = re.compile(rb"content-type:\s*(multipart|message)/", re.IGNORECASE)
_KEYED = re.compile(r"([a-z_]+)\[([^\[\]]*)\]")
_INTEGER = re.compile(r"-?[0-9]{1,9}")


@dataclass
class Form:
    fields: dict[str, Any] = field(default_factory=dict)
    # By field name (`image` for both `image` and `image[]`), in the order sent.
    files: dict[str, list[bytes]] = field(default_factory=dict)


def parse_form(content_type: str, body: bytes) -> Form:
    """The form's fields and files; InvalidRequest (400) for anything that is not a readable form."""
    from email.parser import BytesParser
    from email.policy import HTTP

    _check_shape(body, _boundary(content_type))
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart() or message.defects:
        raise _unreadable("The body is not well-formed multipart/form-data.")
    parts = list(message.iter_parts())
    if not parts:
        raise _unreadable("The form has no parts.")
    if len(parts) > MAX_PARTS:
        raise _unreadable(f"The form has {len(parts)} parts; at most {MAX_PARTS} are read.")
    form = Form()
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            raise _unreadable("Every part needs a Content-Disposition with a name.")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        base = name[:-2] if name.endswith("[]") else name
        if base in FILE_FIELDS:
            form.files.setdefault(base, []).append(data)
        else:
            _add_text_field(form.fields, name, data)
    return form


def _boundary(content_type: str) -> bytes:
    """The boundary exactly as the parser will read it (a `boundary=` inside another parameter's value is not it)."""
    from email.policy import HTTP

    boundary = None
    if content_type.isascii():
        header = HTTP.header_factory("content-type", content_type)
        if header.content_type == "multipart/form-data" and not header.defects:
            boundary = header.params.get("boundary")
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 70:
        raise _unreadable("The Content-Type needs a boundary of printable ASCII (RFC 2046).")
    return boundary.encode()


def _check_shape(body: bytes, boundary: bytes) -> None:
    """The limits, checked on the raw bytes before the email parser, whose time grows faster than the body: at
    most MAX_PARTS parts, each with a short header block."""
    pieces = body.split(b"--" + boundary)
    if len(pieces) > MAX_PARTS + 2:  # the preamble and the epilogue around the parts
        raise _unreadable(f"The form has more than {MAX_PARTS} parts.")
    for piece in pieces[1:-1]:
        headers_end = piece.find(b"\r\n\r\n")
        if headers_end < 0 or headers_end > MAX_PART_HEADERS:
            raise _unreadable(f"Every part needs its headers, in at most {MAX_PART_HEADERS} bytes.")
        # A part that is itself a multipart (or a message) would hide parts and headers from these limits.
        if _NESTED.search(piece[:headers_end]):
            raise _unreadable("A form's parts are files and text, not nested multiparts or messages.")


def _add_text_field(fields: dict[str, Any], name: str, data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"The form field {name} is not UTF-8 text.", field=name, rule="form_field_encoding"
        ) from None
    if name.endswith("[]"):
        values = fields.setdefault(name[:-2], [])
        if isinstance(values, list):
            values.append(text)
            return
    keyed = _KEYED.fullmatch(name)
    if keyed:
        mapping = fields.setdefault(keyed.group(1), {})
        if isinstance(mapping, dict) and keyed.group(2) not in mapping:
            mapping[keyed.group(2)] = text
            return
    elif name not in fields:
        fields[name] = _typed(name, text)
        return
    raise InvalidRequest(f"The form field {name} is sent more than once.", field=name, rule="form_field_repeated")


def _typed(name: str, text: str) -> Any:
    """Form text as the JSON value it stands for; what does not convert is left as text for the model to refuse."""
    if name in INTEGER_FIELDS and _INTEGER.fullmatch(text):
        return int(text)
    if name in BOOLEAN_FIELDS and text in ("true", "false"):
        return text == "true"
    return text


def _unreadable(message: str) -> InvalidRequest:
    return InvalidRequest(message, field="body", rule="multipart_invalid")
