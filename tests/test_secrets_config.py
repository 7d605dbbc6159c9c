"""Secrets in the config and the environment: a secret-looking name in `env_passthrough` is
refused with the fix; `secret_env_passthrough` reaches commands and is registered; every
field that names a secret file is marked in the model, and the wall hides all it finds."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from dispatch_matrix.app.agent_kit import build_tools, control_plane
from dispatch_matrix.app.config import Config, load_config
from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.core.redaction import environment_secrets
from dispatch_matrix.core.settings import is_secret_file_field, secret_files

BASE = """
[matrix]
homeserver = "https://matrix.example.org/"
user_id = "@bot:example.org"
password = "hunter2hunter2"
owners = ["@me:example.org"]

[agent]
workdir = "."
allowed_roots = ["."]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name", ["GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "OPENAI_API_KEY", "NPM_KEY"]
)
def test_a_secret_looking_name_in_env_passthrough_is_refused_with_the_fix(
    tmp_path: Path, name: str
) -> None:
    text = BASE + f'env_passthrough = ["LANGUAGE", "{name}"]\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert err.value.key == "agent.env_passthrough"
    assert name in err.value.problem and "LANGUAGE" not in err.value.problem
    assert "secret_env_passthrough" in (err.value.fix or "")


def test_ordinary_names_pass_through_and_secret_ones_only_when_named_as_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGUAGE", "en")
    monkeypatch.setenv("GH_TOKEN", "ghp_passed-on-purpose-123")
    monkeypatch.setenv("OTHER_TOKEN", "not-asked-for-456")
    text = BASE + 'env_passthrough = ["LANGUAGE"]\nsecret_env_passthrough = ["GH_TOKEN"]\n'
    config = load_config(write(tmp_path, text))
    _policy, _registry, context = build_tools(config, tmp_path, [tmp_path])
    assert context.env["LANGUAGE"] == "en"
    assert context.env["GH_TOKEN"] == "ghp_passed-on-purpose-123"
    assert "OTHER_TOKEN" not in context.env
    # What the daemon registers with the redactor at start-up.
    registered = environment_secrets(
        {"GH_TOKEN": "ghp_passed-on-purpose-123", "LANGUAGE": "en"},
        config.agent.secret_env_passthrough,
    )
    assert registered == ["ghp_passed-on-purpose-123"]


# --- secret files: marked in the model, found by one walker, hidden by the wall ----------

# Fields that name a path and hold no secret: each one was looked at. A new path field must
# be added here or marked SECRET_FILE, or the test below fails.
NOT_SECRET_PATHS = {
    "Config.source",  # the config file: hidden as the control plane, not as a secret file
    "AgentSection.workdir",
    "AgentSection.allowed_roots",
    "StoreSection.path",  # the state folder: hidden as the control plane
    "LocalHomeserverSection.folder",  # hidden as the control plane when enabled
    "VoiceSection.local_model",
    "McpServerSpec.cwd",
}
_SECRETISH = re.compile(r"(_files?$|key|token|secret|passw|credential|cert)", re.I)


def _types_in(annotation: object) -> Iterator[object]:
    yield annotation
    for arg in get_args(annotation):
        yield from _types_in(arg)


def _model_fields() -> Iterator[tuple[str, str, object, object]]:
    """Every (class, field, annotation, json_schema_extra) reachable from Config."""
    seen: set[type] = set()
    todo: list[type[BaseModel]] = [Config]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            yield model.__name__, name, info.annotation, info.json_schema_extra
            for inner in _types_in(info.annotation):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    todo.append(inner)


def test_every_field_that_names_a_file_is_marked_secret_or_known_harmless() -> None:
    unmarked = []
    fields = list(_model_fields())
    for owner, name, annotation, extra in fields:
        names_path = any(t is Path for t in _types_in(annotation))
        marked = is_secret_file_field(extra)
        if marked:
            assert names_path, f"{owner}.{name} is marked but names no path"
            continue
        key = f"{owner}.{name}"
        # A path not known to be harmless; a secret-sounding one even if listed; and any
        # `*_file(s)` field whatever its type (a path given as a plain string included).
        must = names_path and (key not in NOT_SECRET_PATHS or bool(_SECRETISH.search(name)))
        if must or name.endswith(("_file", "_files")):
            unmarked.append(key)
    assert not unmarked, f"mark these SECRET_FILE or list them in NOT_SECRET_PATHS: {unmarked}"
    # The walk reaches the nested sections (MCP servers in a dict) and finds the marks.
    marked = {f"{o}.{n}" for o, n, _a, e in fields if is_secret_file_field(e)}
    assert marked == {
        "MatrixSection.password_file",
        "MatrixSection.access_token_file",
        "AgentSection.api_key_file",
        "VoiceSection.api_key_file",
        "McpServerSpec.env_files",
        "McpServerSpec.headers_files",
    }


def test_the_walker_finds_every_secret_file_a_config_names(tmp_path: Path) -> None:
    text = BASE.replace('password = "hunter2hunter2"', 'password_file = "pw"') + (
        'api_key_file = "ak"\n'
        '[voice]\napi_key_file = "vk"\n'
        '[mcp.servers.a]\ncommand = "x"\nenv_files = { T = "t1", U = "sub/t2" }\n'
        '[mcp.servers.b]\nurl = "https://x.example/"\nheaders_files = { Authorization = "h" }\n'
    )
    for name in ("pw", "ak", "vk", "t1", "h"):
        (tmp_path / name).write_text("s3cret-value\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t2").write_text("x\n")
    config = load_config(write(tmp_path, text))
    found = {p.relative_to(tmp_path).as_posix() for p in secret_files(config)}
    assert found == {"pw", "ak", "vk", "t1", "sub/t2", "h"}
    # Every one of them is refused to the file tools and hidden from the shell.
    plane = control_plane(config)
    assert {tmp_path / n for n in ("pw", "ak", "vk", "t1", "sub/t2", "h")} <= set(plane)
    _policy, _registry, context = build_tools(config, tmp_path, [tmp_path])
    assert set(plane) <= set(context.denied_paths)
    assert any(p.name == "dispatch-matrix" for p in context.denied_paths)


def test_the_service_env_folder_is_hidden_where_xdg_puts_it(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert tmp_path / "xdg" / "dispatch-matrix" in control_plane(config, tmp_path / "xdg")
