"""migration.toml: known keys only, checked values, clear messages."""

from __future__ import annotations

import pytest

from aleph2alma.settings import SettingsError, from_mapping, load


def test_the_demo_settings_load() -> None:
    settings = load("demo")
    assert [lib.code for lib in settings.bib_libraries] == ["BNU01", "BNU02"]
    assert settings.items_in_bib_field == "949"


def test_an_unknown_key_is_named() -> None:
    with pytest.raises(SettingsError, match="unknown setting.*items_in_bib_feld"):
        from_mapping({"migration_id": "x", "items_in_bib_feld": "949"})


@pytest.mark.parametrize("tag", ["9490", "001", "LOC", "94"])
def test_items_in_bib_field_must_be_a_data_field_tag(tag: str) -> None:
    with pytest.raises(SettingsError, match="items_in_bib_field must be a data-field tag"):
        from_mapping({"migration_id": "x", "items_in_bib_field": tag})


def test_items_in_bib_field_accepts_a_data_field_tag() -> None:
    assert from_mapping({"migration_id": "x", "items_in_bib_field": "949"}).items_in_bib_field == "949"
