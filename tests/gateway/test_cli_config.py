"""`privaterouter config check [FILE]`: the server's own validation, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.registry import RegistryError, load
from tests.conftest import MODELS_FILE


def test_valid_file_passes_with_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(MODELS_FILE)]) == 0
    out = capsys.readouterr().out
    assert f"{MODELS_FILE} is valid:" in out and "6 models, 5 plans" in out


def test_default_is_models_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODELS_FILE", str(MODELS_FILE))
    assert main(["config", "check"]) == 0
    assert str(MODELS_FILE) in capsys.readouterr().out


@pytest.mark.parametrize("old, new", [("rpm: 60", "rpn: 60"), ("kind: embedding", "kind: embeddings"),
                                      ("input_price: \"0.100000\"", "input_price: \"ten\"")])
def test_invalid_file_exits_1_with_the_servers_message(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       old: str, new: str) -> None:
    bad = tmp_path / "models.yaml"
    text = MODELS_FILE.read_text()
    assert old in text
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(RegistryError) as server_error:
        load(bad)  # what `serve` and `/api/admin/reload` say
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"privaterouter: error: {server_error.value}"
    assert err.startswith(f"privaterouter: error: {bad}:") and "\n" not in err


def test_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err
