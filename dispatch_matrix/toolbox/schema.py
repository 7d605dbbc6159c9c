"""The inputs of the agent toolset (`agent_toolset_20260401`): names, fields and schemas.

Field names and types mirror the SDK's `BetaManagedAgentsAgentToolset20260401*Input`
models, because the models are trained on them; a test pins them to the SDK. The
descriptions are ours: they say what this daemon's implementation does.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.toolbox.base import ToolResult


class _Input(BaseModel):
    # Extra keys are ignored, as the SDK's schemas allow additional properties.
    model_config = ConfigDict(extra="ignore", frozen=True)


class BashInput(_Input):
    command: str | None = None
    restart: bool | None = None
    timeout_ms: int | None = None


class ReadInput(_Input):
    file_path: str
    view_range: list[int] | None = None


class WriteInput(_Input):
    file_path: str
    content: str


class EditInput(_Input):
    file_path: str
    old_string: str
    new_string: str
    replace_all: bool | None = None


class GlobInput(_Input):
    pattern: str
    path: str | None = None


class GrepInput(_Input):
    pattern: str
    path: str | None = None


M = TypeVar("M", bound=_Input)


def parse_input(model: type[M], data: dict[str, Any]) -> M:
    """`data` validated as `model`; a ToolError naming every bad field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ToolError(f"invalid input: {describe_validation(err)}") from None


def describe_validation(err: ValidationError) -> str:
    """Each bad field and what is wrong with it, on one line."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
    )


async def guarded(tool: str, call: Awaitable[ToolResult]) -> ToolResult:
    """The call's result, or its ToolError as an error result the model sees."""
    try:
        return await call
    except ToolError as err:
        return ToolResult.error(f"{tool}: {err.message}")


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


BASH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "command": _string("The shell command to run with /bin/bash -c."),
        "restart": {
            "type": "boolean",
            "description": "Accepted for compatibility; every call already gets a fresh shell.",
        },
        "timeout_ms": {
            "type": "integer",
            "description": "Timeout in milliseconds (default 120000, capped by the owner's limit).",
        },
    },
}

READ_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "file_path": _string(
            "Path of the file to read (absolute, ~/…, or relative to the workdir)."
        ),
        "view_range": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "Optional [start_line, end_line], 1-indexed and inclusive; "
            "end_line 0 or negative means to the end of the file.",
        },
    },
    "required": ["file_path"],
}

WRITE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "file_path": _string("Path of the file to write."),
        "content": _string("The full contents of the file."),
    },
    "required": ["file_path", "content"],
}

EDIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "file_path": _string("Path of the file to edit."),
        "old_string": _string("Exact text to find; must occur once unless replace_all is set."),
        "new_string": _string("Replacement text."),
        "replace_all": {
            "type": "boolean",
            "description": "Replace every occurrence instead of requiring a unique match.",
        },
    },
    "required": ["file_path", "old_string", "new_string"],
}

GLOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pattern": _string("Doublestar glob relative to the search root, e.g. **/*.py."),
        "path": _string("Folder to search under; defaults to the workdir."),
    },
    "required": ["pattern"],
}

GREP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pattern": _string("Regular expression (Python syntax) to search for."),
        "path": _string("File or folder to search; defaults to the workdir."),
    },
    "required": ["pattern"],
}
