"""Write the JSON Schema of every topic's event, one file per topic, for upstream teams."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from schemas.events import CONSUMED_EVENT_MODELS, PRODUCED_EVENT_MODELS, Event

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_PREFIX = "urn:giftledger:event:"


def topic_json_schema(topic: str, model: type[Event]) -> dict[str, Any]:
    """The JSON Schema a message on `topic` must satisfy, named by `$id` and `title`."""
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = f"{SCHEMA_ID_PREFIX}{topic}"
    schema["title"] = f"{model.__name__} ({topic})"
    return schema


def export_json_schemas(directory: pathlib.Path) -> list[pathlib.Path]:
    """Write `<topic>.schema.json` for every consumed and produced topic; return the paths.

    The output is byte-for-byte stable (sorted keys, two-space indent, trailing newline), so the
    files can be checked in and diffed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[pathlib.Path] = []
    for topic, model in sorted({**CONSUMED_EVENT_MODELS, **PRODUCED_EVENT_MODELS}.items()):
        text = json.dumps(topic_json_schema(topic, model), indent=2, sort_keys=True) + "\n"
        path = directory / f"{topic}.schema.json"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
