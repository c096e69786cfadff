"""Whether one answer of the finance API is what its OpenAPI document says: the status code is
documented for the operation, the content type is one the document names for it, every required
header is there and every documented header matches its schema, and a JSON body matches the
documented schema (validated by jsonschema_rs, the validator schemathesis itself uses, with
formats checked).

`breaches(document, "GET /v1/cashouts", status, headers, body)` lists what does not hold; an
empty list means the answer is exactly what the document promises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema_rs


def _operation(document: dict[str, Any], label: str) -> dict[str, Any]:
    method, path = label.split(" ", 1)
    operation: dict[str, Any] = document["paths"][path][method.lower()]
    return operation


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """`schema` with the document's components beside it, so that its `#/components/...`
    references resolve."""
    root = {**schema, "components": document.get("components", {})}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def _header_value(value: str, schema: dict[str, Any]) -> object:
    if schema.get("type") == "integer" and value.isascii() and value.isdigit():
        return int(value)
    return value


def _header_breaches(
    document: dict[str, Any], response: dict[str, Any], headers: Mapping[str, str]
) -> list[str]:
    lowered = {name.lower(): value for name, value in headers.items()}
    found = []
    for name, header in response.get("headers", {}).items():
        value = lowered.get(name.lower())
        if value is None:
            if header.get("required", False):
                found.append(f"the required header {name} is missing")
            continue
        schema = header.get("schema", {})
        for error in _validator(document, schema).iter_errors(_header_value(value, schema)):
            found.append(f"header {name}: {value!r}: {error.message}")
    return found


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def breaches(
    document: dict[str, Any],
    label: str,
    status_code: int,
    headers: Mapping[str, str],
    body: bytes,
) -> list[str]:
    """What in an answer of the operation `label` (`"GET /v1/cashouts"`) the document does not
    say; empty when the answer is exactly what it promises."""
    response = _operation(document, label)["responses"].get(str(status_code))
    if response is None:
        return [f"{label} does not document {status_code}"]
    found = _header_breaches(document, response, headers)
    content = response.get("content", {})
    if not content:
        return found + ([f"{status_code} documents no body"] if body else [])
    received = _media_type(next((v for k, v in headers.items() if k.lower() == "content-type"), ""))
    documented = {_media_type(media_type): entry for media_type, entry in content.items()}
    if received not in documented:
        return [*found, f"content type {received!r} is not one of {sorted(documented)}"]
    if received != "application/json":
        return found
    try:
        value = json.loads(body)
    except ValueError:
        return [*found, f"the body is not JSON: {body[:200]!r}"]
    validator = _validator(document, documented[received].get("schema", {}))
    return found + [f"body: {error.message}" for error in validator.iter_errors(value)]
