"""A DATA_DIR too deep for the embedded PostgreSQL's Unix socket, or one that cannot be made, is
refused naming DATA_DIR (one line, exit 1). Too deep, the wheel would put the socket in a
directory anyone may write to, and any local user could connect as the superuser."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import main
from services.commands.common import EXIT_FAILURE
from services.runtime.embedded_postgres import UNIX_SOCKET_PATH_BYTES_MAX
from services.runtime.settings import get_settings


def _too_deep(base: Path) -> Path:
    deep = base
    while len(str(deep / "postgres" / "pgdata" / ".s.PGSQL.5432")) <= UNIX_SOCKET_PATH_BYTES_MAX:
        deep = deep / "a-directory-deep-enough"
    return deep


def _verify_with_the_embedded_database_in(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    get_settings.cache_clear()  # the settings are read once a process
    try:
        return main(["verify"])
    finally:
        get_settings.cache_clear()


def test_a_data_dir_too_deep_for_the_socket_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _verify_with_the_embedded_database_in(_too_deep(tmp_path), monkeypatch)
    assert code == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("giftledger: DATA_DIR is too deep for the embedded PostgreSQL's socket")
    assert err.endswith("set DATA_DIR to a shorter path\n")
    assert not (_too_deep(tmp_path) / "postgres" / "pgdata" / "PG_VERSION").exists()


def test_a_data_dir_that_cannot_be_made_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    assert _verify_with_the_embedded_database_in(a_file, monkeypatch) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err == (
        f"giftledger: DATA_DIR {a_file}: cannot make {a_file / 'postgres'} (Not a directory):"
        " set DATA_DIR to a directory giftledger may write, or DATABASE_URL\n"
    )
