"""Settings: documented in docs/settings.md, which cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from vre import client
from vre.config import Settings, get_settings, settings_table

DOC = Path(__file__).parent.parent / "docs" / "settings.md"


def test_the_doc_holds_the_table_of_every_setting() -> None:
    table = settings_table()
    text = DOC.read_text()
    assert table in text, "docs/settings.md is stale: paste vre.config.settings_table() in"
    rows = table.splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [
        f"VRE_{name.upper()}" for name in Settings.model_fields
    ]
    for name, info in Settings.model_fields.items():
        assert info.description, f"{name} has no description"
        assert f"`VRE_{name.upper()}`" in text
    for variable in ("VRE_URL", "VRE_TOKEN"):  # the client's own, read by vre.client
        assert f"`{variable}`" in text


def test_the_client_default_block_size_is_the_servers() -> None:
    assert Settings.model_fields["block_size"].default == client.DEFAULT_BLOCK_SIZE


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VRE_BLOCK_SIZE", "65536")
    monkeypatch.setenv("VRE_TRANSFER_ATTEMPTS", "7")
    monkeypatch.setenv("VRE_IMAGE_PULL_TIMEOUT", "30")
    get_settings.cache_clear()
    settings = get_settings()
    assert (settings.block_size, settings.transfer_attempts) == (65536, 7)
    assert settings.image_pull_timeout == 30.0
    assert client.block_size() == 65536  # the client reads the same variable itself
    monkeypatch.setenv("VRE_BLOCK_SIZE", "0")
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(ValueError, match="VRE_BLOCK_SIZE"):
        client.block_size()


def test_home_expands_the_tilde(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VRE_HOME")
    assert Settings().home == tmp_path / ".vre"
    monkeypatch.setenv("VRE_HOME", "~/elsewhere")
    assert Settings().home == tmp_path / "elsewhere"
