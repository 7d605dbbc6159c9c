"""Pure checks of a config file that pydantic alone does not make, each said as a ConfigError
naming the key, the value and the fix.

pydantic's lax mode turns `enabled = "yes"` into True, `max_tokens = "4096"` into 4096 and
`port = 8008.5`… into an error only sometimes: a typo'd boolean or a number in quotes would
pass unnoticed, and a quoted `"false"` would even mean what it says only by luck. TOML has
native booleans and numbers, so the file must use them (`strict_scalars`). The environment
can only give text, so its overrides stay lax: `DISPATCH_WEB__SEARCH=true` keeps working.

Also here: which keys a table knows (for "did you mean"), through nested tables such as
`[mcp.servers.NAME]`, and a TOML syntax error as the line it is on.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from dispatch_matrix.core.errors import ConfigError

# What each strict scalar type is called in an error, and the types TOML gives for it.
_EXPECTED: dict[type, tuple[str, tuple[type, ...]]] = {
    bool: ("true or false", (bool,)),
    int: ("a whole number", (int,)),
    float: ("a number", (int, float)),
}


def _unwrapped(annotation: object) -> list[object]:
    """The types an annotation allows: `int | None` → [int, NoneType]; others as they are."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _model_of(annotation: object) -> type[BaseModel] | None:
    for kind in _unwrapped(annotation):
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
    return None


def _named_models_of(annotation: object) -> type[BaseModel] | None:
    """The model of a `dict[str, Model]` field (a table of named tables), if it is one."""
    for kind in _unwrapped(annotation):
        if typing.get_origin(kind) is dict:
            args = typing.get_args(kind)
            if len(args) == 2:
                return _model_of(args[1])
    return None


def _scalar_of(annotation: object) -> type | None:
    for kind in _unwrapped(annotation):
        if kind in _EXPECTED:
            return kind
    return None


def toml_value(value: object) -> str:
    """A value as TOML writes it, for an error message (pure)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _loose(key: str, value: object, scalar: type) -> ConfigError | None:
    expected, accepted = _EXPECTED[scalar]
    if isinstance(value, accepted) and not (scalar is not bool and isinstance(value, bool)):
        return None
    name = key.rsplit(".", 1)[-1]
    shown = toml_value(value)
    what = "text in quotes" if isinstance(value, str) else None
    problem = f"{shown} is {what or 'not ' + expected}" + (f", not {expected}" if what else "")
    return ConfigError(key, problem, _strict_fix(name, value, scalar))


def _strict_fix(name: str, value: object, scalar: type) -> str:
    """How to write it: the corrected line when the intent is plain, else the form."""
    text = value.strip().lower() if isinstance(value, str) else None
    if scalar is bool:
        meant = {"true": "true", "false": "false", "yes": "true", "no": "false"}
        if text in meant:
            return f"write {name} = {meant[text]}, without quotes"
        if value in (0, 1):
            return f"write {name} = {'true' if value else 'false'}"
        return f"write {name} = true or {name} = false, without quotes"
    quotes = ", without quotes" if text is not None else ""
    number = _number_in(text) if text is not None else value
    if scalar is int and isinstance(number, float) and number.is_integer():
        number = int(number)
    plain = isinstance(number, int | float) and not isinstance(number, bool)
    if plain and (scalar is float or isinstance(number, int)):
        return f"write {name} = {number}{quotes}"
    kind = "a whole number" if scalar is int else "a number"
    return f"write {name} as {kind}{quotes}"


def _number_in(text: str) -> int | float | None:
    for parse in (int, float):
        try:
            return parse(text.replace("_", ""))
        except ValueError:
            continue
    return None


def strict_scalars(
    data: Mapping[str, Any], model: type[BaseModel], prefix: str = ""
) -> ConfigError | None:
    """The first value in a parsed config file given where a boolean or a number belongs
    but not written as one (text in quotes, a number for a boolean, 4096.0 for a whole
    number), as the error to raise; None when every such value is TOML's own (pure)."""
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue  # an unknown key: pydantic refuses it, with "did you mean"
        path = f"{prefix}{key}"
        annotation = field.annotation
        table = _model_of(annotation)
        named = _named_models_of(annotation)
        scalar = _scalar_of(annotation)
        found: ConfigError | None = None
        if table is not None and isinstance(value, Mapping):
            found = strict_scalars(value, table, f"{path}.")
        elif named is not None and isinstance(value, Mapping):
            for name, item in value.items():
                if isinstance(item, Mapping):
                    found = found or strict_scalars(item, named, f"{path}.{name}.")
        elif scalar is not None and value is not None:
            found = _loose(path, value, scalar)
        if found is not None:
            return found
    return None


def known_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys the table holding `loc`'s last part knows: `("mcp", "servers", "x",
    "timout_s")` → the keys of an MCP server's table (pure)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            break
        table = _model_of(field.annotation)
        named = _named_models_of(field.annotation)
        if table is not None:
            model = table
        elif named is not None:
            # The next part is the table's own name (`servers.NAME`): its keys are the model's.
            model = named
        else:
            break
    return list(model.model_fields)


_WHERE = re.compile(
    r"^(?P<what>.*) \((?:at line (?P<line>\d+), column (?P<col>\d+)|at end of document)\)$"
)


def toml_problem(message: str, text: str) -> tuple[str, str]:
    """A TOML syntax error as (problem, fix), with the line it is on when the parser names
    one (pure): `line 7, column 7: expected ']' at the end of a table declaration` and the
    line itself, so the slip is seen without opening the file."""
    match = _WHERE.match(message)
    if match is None:
        return f"not valid TOML ({message})", "fix the syntax there"
    what = match["what"][:1].lower() + match["what"][1:]
    if match["line"] is None:
        return f"not valid TOML at the end of the file: {what}", _end_fix(what)
    number = int(match["line"])
    lines = text.splitlines()
    shown = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    where = f"line {number}, column {match['col']}"
    fix = f"fix line {number}: {shown[:80]}" if shown else f"fix line {number}"
    if what == "invalid value":
        fix += ' (text needs double quotes: key = "…"; true, false and numbers do not)'
    return f"not valid TOML at {where}: {what}", fix


def _end_fix(what: str) -> str:
    if what.startswith("unclosed") or what.startswith("unterminated"):
        return "close the bracket or quote that was opened (the parser reached the end first)"
    if what == "cannot overwrite a value":
        return "a key is given twice in the same table: keep one"
    return "fix the syntax there"


_ENV_FORMS = {
    "bool_parsing": "true or false",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
}


def env_fix(variable: str, kind: str, file_fix: str) -> str:
    """The fix for a bad value that came from an environment variable, not the file (pure):
    the variable is what to change, and `key = value` is not how a variable is written."""
    if kind in _ENV_FORMS:
        return f"set {variable} to {_ENV_FORMS[kind]}, or unset it"
    if kind == "extra_forbidden":
        hint = file_fix.split("? ", 1)[0] + "? " if file_fix.startswith("did you mean") else ""
        return f"{hint}rename or unset {variable}"
    return f"{file_fix} (in {variable}, or unset it)"
