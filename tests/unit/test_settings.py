"""migration.toml: known keys only, checked values, one clear line per problem."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from aleph2alma.errors import ConfigError
from aleph2alma.settings import NightlySettings, SettingsError, describe, from_mapping, load, nightly_settings


def test_the_demo_settings_load() -> None:
    settings = load("demo")
    assert settings.migration_id == "demo"
    assert [(lib.code, lib.flavour, lib.file) for lib in settings.bib_libraries] == [
        ("BNU01", "CNMARC", "BNU01.seq"),
        ("BNU02", "MARC21", "BNU02.seq"),
    ]
    assert settings.items_in_bib_field == "949"
    assert settings.schemas == {"adm": None, "usr": None}  # "" in the file: the default schema
    assert settings.qualified_bib_ids
    assert settings.nightly == NightlySettings(schedule="0 2 * * *", time_zone="Asia/Shanghai")


def test_replace_keeps_working_and_checks_the_value() -> None:
    settings = load("demo")
    assert replace(settings, part_rows=10**12).part_rows == 10**12
    with pytest.raises(ValueError, match="part_rows"):
        replace(settings, part_rows=0)


def test_every_key_is_described() -> None:
    described = describe()
    assert list(described)[:3] == ["migration_id", "institution", "bib_libraries"]
    assert all(len(text) > 10 for text in described.values())


def test_the_migration_id_defaults_to_the_directory(tmp_path: Path) -> None:
    (tmp_path / "bnu").mkdir()
    (tmp_path / "bnu" / "migration.toml").write_text('hol_library = "BNU60"\n', encoding="utf-8")
    settings = load("bnu", tmp_path)
    assert (settings.migration_id, settings.hol_library, settings.part_rows) == ("bnu", "BNU60", 250_000)
    assert not settings.qualified_bib_ids


def test_an_unknown_key_is_named() -> None:
    with pytest.raises(
        SettingsError,
        match=r"^migration.toml: items_in_bib_feld: unknown key; known keys: "
        r"migration_id, .*items_in_bib_field",
    ):
        from_mapping({"migration_id": "x", "items_in_bib_feld": "949"})


@pytest.mark.parametrize("tag", ["9490", "001", "LOC", "94"])
def test_items_in_bib_field_must_be_a_data_field_tag(tag: str) -> None:
    with pytest.raises(
        SettingsError,
        match=f'items_in_bib_field: "{tag}" is not a data-field tag; allowed: a tag from 010 to 999',
    ):
        from_mapping({"migration_id": "x", "items_in_bib_field": tag})


def test_items_in_bib_field_accepts_a_data_field_tag() -> None:
    assert from_mapping({"migration_id": "x", "items_in_bib_field": "949"}).items_in_bib_field == "949"


KINDS_OF_ERROR = {
    "unknown-key": (
        '[[bib_libraries]]\ncode = "BNU01"\nflavor = "CNMARC"\n',
        "bib_libraries[1].flavor",
        "unknown key; known keys: code, flavour, file",
    ),
    "wrong-type": ('part_rows = "20000"\n', "part_rows", 'expected a whole number, got "20000"'),
    "bad-enum": (
        '[[bib_libraries]]\ncode = "BNU01"\n[[bib_libraries]]\ncode = "BNU02"\nflavour = "UNIMARC"\n',
        "bib_libraries[2].flavour",
        "\"UNIMARC\" is not allowed; allowed: 'MARC21' or 'CNMARC'",
    ),
    "missing-required-key": (
        '[[bib_libraries]]\nflavour = "CNMARC"\n',
        "bib_libraries[1].code",
        "required key missing: Aleph BIB library code",
    ),
}


@pytest.mark.parametrize(("text", "key", "allowed"), KINDS_OF_ERROR.values(), ids=KINDS_OF_ERROR.keys())
def test_an_error_names_the_file_the_key_and_what_is_allowed(
    tmp_path: Path, text: str, key: str, allowed: str
) -> None:
    path = tmp_path / "bnu" / "migration.toml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError) as err:
        load("bnu", tmp_path)
    assert str(err.value).startswith(f"{path}: {key}: {allowed}")
    assert isinstance(err.value, ConfigError)  # the task fails at once, no retries


VALUE_ERRORS = {
    "unknown-schema": (
        {"schemas": {"adm": "BNU50", "user": "BNU00"}},
        r"schemas: unknown key\(s\) user; known keys: adm, usr",
    ),
    "zero-part-rows": ({"part_rows": 0}, r"part_rows: 0 is out of range; allowed: a whole number > 0"),
    "float-chunk": ({"db_chunk_rows": 1e4}, r"db_chunk_rows: expected a whole number, got 10000.0"),
    "no-bib-library": ({"bib_libraries": []}, r"bib_libraries: must not be empty"),
    "library-twice": (
        {"bib_libraries": [{"code": "BNU01"}, {"code": "BNU01"}]},
        r"bib_libraries: code BNU01 given more than once",
    ),
    "table-not-array": (
        {"bib_libraries": {"code": "BNU01"}},
        r"bib_libraries: expected an array, .* write \[\[bib_libraries\]\] blocks",
    ),
    "number-for-text": ({"hol_library": 60}, r"hol_library: expected a string, got 60"),
    "nightly-time-zone": (
        {"nightly": {"time_zone": "Beijing"}},
        r'nightly.time_zone: "Beijing" is not a time zone; allowed: an IANA name such as "Asia/Shanghai"',
    ),
    "nightly-cron": (
        {"nightly": {"schedule": "02:00"}},
        r'nightly.schedule: "02:00" is not a cron expression; allowed: 5 fields',
    ),
    "nightly-lookback": (
        {"nightly": {"lookback_days": -1}},
        r"nightly.lookback_days: -1 is out of range; allowed: a whole number ≥ 0",
    ),
    "nightly-unknown": (
        {"nightly": {"deadline": "06:00"}},
        r"nightly.deadline: unknown key; known keys: schedule, time_zone, by_update_date, lookback_days",
    ),
}


@pytest.mark.parametrize(("values", "message"), VALUE_ERRORS.values(), ids=VALUE_ERRORS.keys())
def test_value_errors(values: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^migration.toml: {message}"):
        from_mapping({"migration_id": "x", **values})


def test_all_problems_one_line_each() -> None:
    with pytest.raises(SettingsError) as err:
        from_mapping(
            {
                "migration_id": "x",
                "part_rows": -1,
                "items_in_bib_field": "1",
                "bib_libraries": [{"code": "A", "flavour": "marc21"}],
            }
        )
    assert [line.split(": ")[1] for line in str(err.value).splitlines()] == [
        "bib_libraries[1].flavour",
        "part_rows",
        "items_in_bib_field",
    ]


def test_missing_file_lists_the_migrations(tmp_path: Path) -> None:
    (tmp_path / "bnu").mkdir()
    (tmp_path / "bnu" / "migration.toml").write_text("", encoding="utf-8")
    with pytest.raises(
        SettingsError,
        match=r"nope/migration.toml: no such file; no settings for migration 'nope'; "
        r"migrations with settings under .*: bnu$",
    ):
        load("nope", tmp_path)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bnu").mkdir()
    path = tmp_path / "bnu" / "migration.toml"
    path.write_text("part_rows = \n", encoding="utf-8")
    with pytest.raises(SettingsError, match=f"^{path}: not valid TOML: .*line 1"):
        load("bnu", tmp_path)


def test_the_nightly_table_defaults_to_02_00_utc_reading_by_update_date() -> None:
    nightly = from_mapping({"migration_id": "x"}).nightly
    assert (nightly.schedule, nightly.time_zone, nightly.by_update_date, nightly.lookback_days) == (
        "0 2 * * *",
        "UTC",
        True,
        1,
    )
    assert all(len(text) > 10 for text in describe_nightly().values())


def describe_nightly() -> dict[str, str]:
    from aleph2alma.config import describe as describe_model

    return describe_model(NightlySettings)


def test_the_dag_reads_only_the_nightly_table_at_parse_time(tmp_path: Path) -> None:
    path = tmp_path / "bnu" / "migration.toml"
    path.parent.mkdir()
    # A setting the full load would refuse does not stop the schedule from being read...
    path.write_text('part_rows = 0\n[nightly]\nschedule = "30 1 * * 1-5"\ntime_zone = "Asia/Shanghai"\n')
    assert nightly_settings("bnu", tmp_path) == NightlySettings("30 1 * * 1-5", "Asia/Shanghai")
    # ...but a bad nightly value is named with its file and key, like every settings error.
    path.write_text('[nightly]\ntime_zone = "CST"\n')
    with pytest.raises(SettingsError, match=rf'^{path}: nightly.time_zone: "CST" is not a time zone'):
        nightly_settings("bnu", tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "migration.toml").write_text("")
    assert nightly_settings("empty", tmp_path) == NightlySettings()
