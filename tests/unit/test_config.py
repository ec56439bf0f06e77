"""config: one readable ConfigError for any TOML file that does not fit its model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from aleph2alma.config import key_path, load_toml, show
from aleph2alma.errors import ConfigError, PermanentError


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="The block's name")
    kind: Literal["a", "b"] = "a"


class File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(default=1, ge=0, description="How big")
    block: list[Block] = Field(default_factory=list, description="[[block]] tables")
    where: dict[str, str] = Field(default_factory=dict, examples=['{ x = "y" }'])


class FileError(ConfigError):
    """The test file is wrong."""


def load(tmp_path: Path, text: str | bytes) -> File:
    path = tmp_path / "file.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return load_toml(path, File, FileError)


MESSAGES = {
    "unknown-key": ("sise = 3\n", "sise: unknown key; known keys: size, block, where"),
    "unknown-nested-key": (
        '[[block]]\nname = "x"\nkinds = "a"\n',
        "block[1].kinds: unknown key; known keys: name, kind",
    ),
    "wrong-type": ("size = 1.5\n", "size: expected a whole number, got 1.5"),
    "bad-literal": (
        '[[block]]\nname = "x"\n[[block]]\nname = "y"\nkind = "c"\n',
        "block[2].kind: \"c\" is not allowed; allowed: 'a' or 'b'",
    ),
    "missing": ('[[block]]\nkind = "a"\n', "block[1].name: required key missing: The block's name"),
    "out-of-range": ("size = -1\n", "size: -1 is out of range; allowed: a whole number ≥ 0"),
    "table-for-array": (
        '[block]\nname = "x"\n',
        'block: expected an array, got a table {name = "x"}; '
        "write [[block]] blocks (an array of tables), not one [block] table",
    ),
    "with-example": ('where = "y"\n', 'where: expected a table, got "y"; e.g. where = { x = "y" }'),
    "dict-value": ("where = { x = 1 }\n", "where.x: expected a string, got 1"),
}


@pytest.mark.parametrize(("text", "message"), MESSAGES.values(), ids=MESSAGES.keys())
def test_one_line_names_file_key_and_what_is_allowed(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(FileError) as err:
        load(tmp_path, text)
    assert str(err.value) == f"{tmp_path / 'file.toml'}: {message}"
    assert isinstance(err.value, ConfigError) and isinstance(err.value, PermanentError)


def test_every_problem_is_listed(tmp_path: Path) -> None:
    with pytest.raises(FileError) as err:
        load(tmp_path, 'size = -1\nsise = 3\n[[block]]\nkind = "c"\n')
    assert [line.split(": ")[1] for line in str(err.value).splitlines()] == [
        "size",
        "block[1].name",
        "block[1].kind",
        "sise",
    ]


FILE_ERRORS = {
    "syntax": ("size = \n", r"file.toml: not valid TOML: .*line 1"),
    "not-utf8": ("名字 = 1\n".encode("gbk"), r"file.toml: not UTF-8 text \(byte 0\)"),
}


@pytest.mark.parametrize(("text", "message"), FILE_ERRORS.values(), ids=FILE_ERRORS.keys())
def test_unreadable_files(tmp_path: Path, text: str | bytes, message: str) -> None:
    with pytest.raises(FileError, match=message):
        load(tmp_path, text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileError, match=r"absent.toml: no such file; try x$"):
        load_toml(tmp_path / "absent.toml", File, FileError, missing_hint="try x")


def test_key_path_and_values() -> None:
    assert key_path(("remap", 1, "where", "Z30_SUB_LIBRARY")) == "remap[2].where.Z30_SUB_LIBRARY"
    assert key_path(("schemas", "a b", "[key]")) == 'schemas."a b"'
    assert [show(v) for v in (True, "条码", 1.5, ["a", 1])] == ["true", '"条码"', "1.5", '["a", 1]']
    assert show("x" * 100).endswith("…") and len(show("x" * 100)) == 78
