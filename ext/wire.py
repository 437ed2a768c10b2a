"""What the adapters share about HTTP: the answer tuple, header lookup, body limits, forms."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from ext.errors import NotificationInvalid

# Channel notifications are a few KiB (UnionPay's carries a certificate); anything larger is
# refused before parsing so a hostile body cannot cost memory or CPU.
NOTIFICATION_BODY_MAX_BYTES = 64 * 1024
FORM_FIELDS_MAX = 200
HEADER_VALUE_MAX_CHARS = 4096


class Ack(NamedTuple):
    """The HTTP answer to a channel's notification: status, Content-Type ('' for none), body."""

    status: int
    content_type: str
    body: bytes


def header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive header lookup (HTTP field names are); '' when absent."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            if len(value) > HEADER_VALUE_MAX_CHARS:
                raise NotificationInvalid(f"header {name} is too long")
            return value.strip()
    return ""


def check_body(body: bytes) -> None:
    if not isinstance(body, bytes | bytearray):
        raise NotificationInvalid("the notification body must be bytes")
    if len(body) > NOTIFICATION_BODY_MAX_BYTES:
        raise NotificationInvalid(f"notification body over {NOTIFICATION_BODY_MAX_BYTES} bytes")


def parse_form(body: bytes, encoding: str) -> dict[str, str]:
    """An application/x-www-form-urlencoded body; a repeated key is refused as ambiguous."""
    check_body(body)
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            encoding=encoding,
            errors="strict",
            max_num_fields=FORM_FIELDS_MAX,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotificationInvalid(f"body is not a {encoding} form: {exc}") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            # Two values for one key: the signed one and the used one could differ.
            raise NotificationInvalid(f"form field {key!r} appears twice")
        form[key] = value
    return form


def parse_json_object(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotificationInvalid(f"{what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise NotificationInvalid(f"{what} is not a JSON object")
    return value


def require(fields: Mapping[str, Any], name: str) -> str:
    """A required non-empty string field of a notification."""
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise NotificationInvalid(f"required field {name!r} is missing or empty")
    return value
