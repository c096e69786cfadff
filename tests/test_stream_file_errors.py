"""A stream file that is not one (not gzip, cut short, a directory, where nothing can be written)
is refused in one line naming it, with exit 2, by `generate`, `replay` and `loadtest`: each
printed a traceback before."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from services.cli import main
from services.commands.common import EXIT_USAGE
from services.runtime.settings import get_settings


def _cut_short(path: Path) -> Path:
    whole = gzip.compress(b'{"topic": "gifts.sent"}\n' * 100)
    path.write_bytes(whole[: len(whole) // 2])
    return path


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("missing-directory/stream.jsonl.gz", "No such file or directory"),
        (".", "Is a directory"),
    ],
)
def test_generate_names_a_path_it_cannot_write(
    where: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / where
    assert main(["generate", str(path), "--events", "10"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"giftledger: error: {path}: {reason}")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not a gzip stream", "not a gzip stream file"),
        (None, "the gzip stream ends early: the file was cut short"),
    ],
)
def test_replay_names_a_file_that_is_no_stream(
    content: bytes | None,
    reason: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "stream.jsonl.gz"
    if content is None:
        _cut_short(path)
    else:
        path.write_bytes(content)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    get_settings.cache_clear()  # the settings are read once a process
    try:
        assert main(["replay", str(path), "--max"]) == EXIT_USAGE
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith(f"giftledger: error: {path}: {reason}")
    assert err.count("\n") == 1
