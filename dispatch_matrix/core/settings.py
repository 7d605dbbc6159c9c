"""What every config section shares: the frozen, strict base model, the mark of a field that
names a secret file (and the walk that finds every such path), and how a secret given inline
or as a file is read. The sections live beside their feature (`agent/settings.py`,
`voice/config.py`, `connectors/settings.py`…); `app/config.py` assembles them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr


class Section(BaseModel):
    """A config table: unknown keys are errors, values never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# The mark a config field carries when the file(s) it names hold a secret: every path under a
# marked field is hidden from shell commands and refused to the file tools (`secret_files`).
# A unit test fails when a field that names a file is neither marked nor listed as harmless.
SECRET_FILE: dict[str, Any] = {"secret_file": True}


def is_secret_file_field(extra: object) -> bool:
    """Whether a field's `json_schema_extra` carries the secret-file mark."""
    return isinstance(extra, dict) and extra.get("secret_file") is True


def _paths_in(value: object) -> Iterator[Path]:
    if isinstance(value, Path):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _paths_in(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _paths_in(item)


def secret_files(model: object) -> list[Path]:
    """Every path named by a field marked `SECRET_FILE`, anywhere in `model` (sections,
    dicts and lists of sections included), in field order. Generic: a new marked field is
    found without changing this function."""
    found: list[Path] = []
    if isinstance(model, BaseModel):
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            if is_secret_file_field(info.json_schema_extra):
                found += _paths_in(value)
            else:
                found += secret_files(value)
    elif isinstance(model, dict):
        for item in model.values():
            found += secret_files(item)
    elif isinstance(model, list | tuple):
        for item in model:
            found += secret_files(item)
    return found


def read_secret(inline: SecretStr | None, file: Path | None) -> SecretStr | None:
    """A secret given inline, or read from the file named."""
    if inline is not None:
        return inline
    if file is None:
        return None
    try:
        return SecretStr(file.expanduser().read_text().strip())
    except OSError as err:
        raise ValueError(f"cannot read {file}: {err.strerror}") from err
