"""Config: valid files load; every mistake names the key, the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch_matrix.app.config import load_config, type_fix
from dispatch_matrix.core.errors import ConfigError

GOOD = """
[matrix]
homeserver = "https://matrix.example.org/"
user_id = "@bot:example.org"
password = "hunter2hunter2"
owners = ["@me:example.org"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.matrix.homeserver == "https://matrix.example.org"
    assert config.store.path == tmp_path.resolve()
    assert config.local_homeserver.folder == tmp_path.resolve() / "homeserver"
    assert config.matrix.secret_password().get_secret_value() == "hunter2hunter2"
    assert "hunter2" not in repr(config)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_MATRIX__PASSWORD", "from-the-environment")
    monkeypatch.setenv("DISPATCH_AGENT__MODEL", "claude-opus-4-1")
    config = load_config(write(tmp_path, GOOD))
    assert config.matrix.secret_password().get_secret_value() == "from-the-environment"
    assert config.agent.model == "claude-opus-4-1"


def test_password_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-a-file\n")
    text = GOOD.replace('password = "hunter2hunter2"', 'password_file = "pw"')
    assert load_config(write(tmp_path, text)).matrix.secret_password().get_secret_value() == (
        "from-a-file"
    )


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (GOOD.replace('owners = ["@me:example.org"]', "owners = []"), "matrix.owners", "owner"),
        (GOOD.replace("@me:example.org", "me"), "matrix.owners", "full Matrix user id"),
        (
            GOOD.replace("https://matrix.example.org/", "matrix.example.org"),
            "matrix.homeserver",
            "http(s) URL",
        ),
        (GOOD.replace('user_id = "@bot:example.org"\n', ""), "matrix.user_id", "required"),
        (GOOD + "\n[agent]\nmodle = 'x'\n", "agent.modle", "unknown key"),
        (GOOD + "\n[agent]\nmax_tokens = 'lots'\n", "agent.max_tokens", "not a whole number"),
        ("[matrix\n", "config.toml", "not valid TOML"),
        (
            GOOD.replace('password = "hunter2hunter2"', 'password_file = "nope"'),
            "matrix.password_file",
            "cannot read",
        ),
    ],
)
def test_bad_config_names_key_problem_and_fix(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    line = caught.value.one_line()
    assert key in line
    assert words in line
    assert caught.value.fix
    assert "\n" not in line


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, GOOD + "\n[agent]\nmodle = 'x'\n"))
    assert "did you mean 'model'? rename it, or remove it" in caught.value.one_line()


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert "dispatch-matrix init" in caught.value.one_line()


@pytest.mark.parametrize(
    ("section", "line", "key", "fix"),
    [
        # Each used to end in only "see the configuration reference in README.md".
        ("agent", 'allowed_roots = "~"', "agent.allowed_roots", 'allowed_roots = ["~"]'),
        ("agent", 'max_tokens = "lots"', "agent.max_tokens", "whole number, without quotes"),
        ("local_homeserver", 'enabled = "maybe"', "local_homeserver.enabled", "= true or"),
        ("local_homeserver", "server_name = 8", "local_homeserver.server_name", 'name = "8"'),
    ],
)
def test_a_value_of_the_wrong_type_says_how_toml_writes_the_right_one(
    tmp_path: Path, section: str, line: str, key: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f"{GOOD}\n[{section}]\n{line}\n"))
    assert caught.value.key == key and caught.value.fix is not None
    assert fix in caught.value.fix, caught.value.one_line()


@pytest.mark.parametrize(
    ("kind", "value", "fix"),
    [
        ("list_type", "~", 'write a list in brackets, e.g. k = ["~"]'),
        ("list_type", 3, 'write a list in brackets, e.g. k = ["…"]'),
        ("float_parsing", "x", "write k as a number, without quotes"),
        ("string_type", [1], 'write it in double quotes, e.g. k = "…"'),
        ("greater_than", 0, None),
    ],
)
def test_type_fix(kind: str, value: object, fix: str | None) -> None:
    assert type_fix(kind, "k", value) == fix
