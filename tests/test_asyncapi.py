"""The AsyncAPI document `giftledger schemas export` writes: valid for the AsyncAPI project's own
parser, one message per event model named after it, the Kafka key as a message binding, the
dead-letter headers the consumer sends and no other header.

The validator is `@asyncapi/parser` (npm), run with node. It is installed once into
`.cache/asyncapi-parser` in the repository (gitignored), where later runs find it; the test is
skipped when node or npm is missing.
"""

from __future__ import annotations

import copy
import fcntl
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from schemas import topics
from schemas.events import CONSUMED_EVENT_MODELS, PRODUCED_EVENT_MODELS
from services.app.asyncapi import asyncapi_document
from services.app.consumer import dead_letter_headers, stand_in_headers
from services.cli import main
from services.ingestion.records import DeadLetter, InputRecord

REPOSITORY = Path(__file__).resolve().parents[1]
PARSER_DIRECTORY = REPOSITORY / ".cache" / "asyncapi-parser"
PARSER_PACKAGE = "@asyncapi/parser"
PARSER_VERSION = "3.6.6"
NPM_INSTALL_TIMEOUT_S = 300
NODE_TIMEOUT_S = 120

# Parses each document named on the command line and prints, for each, the parser's diagnostics
# and what it understood: the channels, their messages' names, Kafka keys and header names.
PARSE_SCRIPT = """\
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');
const SEVERITIES = ['error', 'warning', 'information', 'hint'];  // the parser's, by number

async function parse(path) {
  const { document, diagnostics } = await new Parser().parse(fs.readFileSync(path, 'utf8'));
  return {
    parsed: document !== undefined,
    diagnostics: diagnostics.map((d) => ({
      severity: SEVERITIES[d.severity],
      code: String(d.code),
      message: d.message,
      path: d.path.join('/'),
    })),
    channels: document === undefined ? [] : document.channels().all().map((channel) => ({
      id: channel.id(),
      address: channel.address(),
      messages: channel.messages().all().map((message) => ({
        name: message.name(),
        key: message.bindings().has('kafka') ? message.bindings().get('kafka').value().key : null,
        headers: message.hasHeaders() ? Object.keys(message.headers().properties() || {}) : [],
      })),
    })),
  };
}

(async () => {
  const results = [];
  for (const path of process.argv.slice(2)) results.push(await parse(path));
  process.stdout.write(JSON.stringify(results));
})().catch((error) => { console.error(error); process.exit(1); });
"""


def _install_parser(directory: Path) -> None:
    """`npm install` the pinned parser into `directory`, unless a finished install is there,
    and write the script that runs it."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / "installed"
    wanted = f"{PARSER_PACKAGE}@{PARSER_VERSION}\n"
    with (directory / "install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be installing
        (directory / "parse.js").write_text(PARSE_SCRIPT)
        if stamp.exists() and stamp.read_text() == wanted:
            return
        stamp.unlink(missing_ok=True)
        shutil.rmtree(directory / "node_modules", ignore_errors=True)
        (directory / "package.json").write_text(
            json.dumps(
                {"private": True, "dependencies": {PARSER_PACKAGE: PARSER_VERSION}}, indent=2
            )
            + "\n"
        )
        installed = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=NPM_INSTALL_TIMEOUT_S,
            check=False,
        )
        if installed.returncode != 0:
            pytest.fail(
                f"npm install {PARSER_PACKAGE}@{PARSER_VERSION} failed:\n{installed.stderr}"
            )
        stamp.write_text(wanted)


@pytest.fixture(scope="module")
def parser_directory() -> Path:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: {PARSER_PACKAGE} needs node and npm")
    _install_parser(PARSER_DIRECTORY)
    return PARSER_DIRECTORY


def _parse(parser: Path, *documents: Path) -> list[dict[str, Any]]:
    ran = subprocess.run(
        ["node", str(parser / "parse.js"), *map(str, documents)],
        cwd=parser,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    results: list[dict[str, Any]] = json.loads(ran.stdout)
    return results


def _problems(result: dict[str, Any]) -> list[str]:
    return [
        f"{item['severity']} {item['code']} at {item['path'] or '/'}: {item['message']}"
        for item in result["diagnostics"]
        if item["severity"] in ("error", "warning")
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory `giftledger schemas export` wrote: asyncapi.json and the JSON Schemas."""
    directory = tmp_path_factory.mktemp("export")
    assert main(["schemas", "export", str(directory)]) == 0
    return directory


@pytest.fixture(scope="module")
def document(exported: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((exported / "asyncapi.json").read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def parsed(
    parser_directory: Path,
    exported: Path,
    document: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parser's verdict on the exported document, and on a copy with a broken key binding
    (which it must refuse, or it is not checking what this test relies on)."""
    broken = copy.deepcopy(document)
    broken["components"]["messages"]["GiftSent"]["bindings"]["kafka"]["key"] = "creator_id"
    broken_path = tmp_path_factory.mktemp("broken") / "asyncapi.json"
    broken_path.write_text(json.dumps(broken))
    good, bad = _parse(parser_directory, exported / "asyncapi.json", broken_path)
    return good, bad


def _channels_by_address(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {channel["address"]: channel for channel in document["channels"].values()}


def _message(document: dict[str, Any], channel: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    [(name, reference)] = channel["messages"].items()
    prefix = "#/components/messages/"
    assert reference["$ref"].startswith(prefix)
    message: dict[str, Any] = document["components"]["messages"][reference["$ref"][len(prefix) :]]
    return name, message


def test_the_asyncapi_parser_accepts_the_exported_document(
    parsed: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    good, bad = parsed
    assert good["parsed"]
    assert _problems(good) == []
    assert not bad["parsed"]
    assert any("key" in problem for problem in _problems(bad)), _problems(bad)


def test_the_parser_reads_every_topic_with_its_model_named_message_and_key(
    parsed: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    good, _ = parsed
    read = {channel["address"]: channel["messages"] for channel in good["channels"]}
    expected = {topic: model.__name__ for topic, model in CONSUMED_EVENT_MODELS.items()}
    expected |= {topic: model.__name__ for topic, model in PRODUCED_EVENT_MODELS.items()}
    expected |= {topics.dead_letter_topic(topic): "DeadLetter" for topic in CONSUMED_EVENT_MODELS}
    assert sorted(read) == sorted(topics.all_topics())
    for address, name in expected.items():
        [message] = read[address]
        assert message["name"] == name, address
        assert message["key"]["type"] == "string", address
        assert "creator_id" in message["key"]["description"], address


def test_every_event_message_carries_the_exported_json_schema(
    exported: Path, document: dict[str, Any]
) -> None:
    channels = _channels_by_address(document)
    for topic, model in {**CONSUMED_EVENT_MODELS, **PRODUCED_EVENT_MODELS}.items():
        name, message = _message(document, channels[topic])
        assert name == message["name"] == model.__name__
        assert message["payload"] == {"$ref": f"#/components/schemas/{model.__name__}"}
        written = json.loads((exported / f"{topic}.schema.json").read_text(encoding="utf-8"))
        assert document["components"]["schemas"][model.__name__] == written, topic
        assert "headers" not in message, topic
        assert message["bindings"]["kafka"]["key"]["type"] == "string"


def test_operations_say_what_giftledger_receives_and_sends(document: dict[str, Any]) -> None:
    actions = {
        document["channels"][operation["channel"]["$ref"].split("/")[-1]]["address"]: operation[
            "action"
        ]
        for operation in document["operations"].values()
    }
    assert actions == {
        **dict.fromkeys(topics.CONSUMED_TOPICS, "receive"),
        **dict.fromkeys(topics.PRODUCED_TOPICS, "send"),
        **{topics.dead_letter_topic(topic): "send" for topic in topics.CONSUMED_TOPICS},
    }
    assert "on_gifts_sent" in document["operations"]


def test_dead_letter_messages_declare_exactly_the_headers_the_consumer_sends(
    document: dict[str, Any], parsed: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    original = ("trace", b"abc")
    record = InputRecord("gifts.sent", 3, 17, b"creator-42", b"{", (original,))
    with_id = dead_letter_headers(DeadLetter(record, "malformed_json", "x", "gift-1"), "gifts.sent")
    without_id = dead_letter_headers(DeadLetter(record, "malformed_json", "x"), "gifts.sent")
    too_large = stand_in_headers(DeadLetter(record, "malformed_json", "x", "gift-1"), "gifts.sent")
    long_key = record._replace(key=b"k" * 2_000)
    key_too_large = stand_in_headers(DeadLetter(long_key, "malformed_json", "x"), "gifts.sent")
    keyless_tombstone = record._replace(key=None, value=None)
    without_key = dead_letter_headers(
        DeadLetter(keyless_tombstone, "empty_value", "x"), "gifts.sent"
    )
    sent = sorted(
        {
            name
            for name, value in [*with_id, *too_large, *key_too_large, *without_key]
            if (name, value) != original
        }
    )
    always = [name for name, value in without_id if (name, value) != original]

    channels = _channels_by_address(document)
    for topic in topics.CONSUMED_TOPICS:
        name, message = _message(document, channels[topics.dead_letter_topic(topic)])
        assert name == message["name"] == "DeadLetter"
        headers = message["headers"]
        assert headers["type"] == "object"
        assert sorted(headers["properties"]) == sorted(sent)
        assert sorted(headers["required"]) == sorted(always)
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
    good, _ = parsed
    for channel in good["channels"]:
        [message] = channel["messages"]
        expected = sent if channel["address"].endswith(topics.DEAD_LETTER_SUFFIX) else []
        assert sorted(message["headers"]) == sorted(expected), channel["address"]


def test_no_header_the_service_does_not_send(exported: Path) -> None:
    text = (exported / "asyncapi.json").read_text(encoding="utf-8").lower()
    assert "correlation" not in text


def test_a_prefix_moves_the_addresses_not_the_names() -> None:
    plain, prefixed = asyncapi_document(""), asyncapi_document("staging.")
    assert plain["channels"].keys() == prefixed["channels"].keys()
    assert plain["components"] == prefixed["components"]
    assert sorted(channel["address"] for channel in prefixed["channels"].values()) == sorted(
        topics.all_topics("staging.")
    )
    for channel in prefixed["channels"].values():
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]
