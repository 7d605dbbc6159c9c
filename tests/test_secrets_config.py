"""Secrets in the config and the environment: a secret-looking name in `env_passthrough` is
refused with the fix; `secret_env_passthrough` reaches commands and is registered."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch_matrix.config import load_config
from dispatch_matrix.errors import ConfigError
from dispatch_matrix.parts import build_tools
from dispatch_matrix.redaction import environment_secrets

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
