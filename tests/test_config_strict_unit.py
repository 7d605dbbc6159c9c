"""A config file gives booleans and numbers as TOML writes them: `enabled = "yes"` used to
load as true (pydantic's lax coercion), `max_tokens = "4096"` as 4096 and `search = 1` as
true. Each is now an error naming the key, the value as written and the line to write; the
environment, which only has text, keeps its lax overrides. Also: "did you mean" inside
named tables, a TOML slip shown with its line, and an override's error naming its variable.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch_matrix.app.config import Config, load_config
from dispatch_matrix.app.config_checks import env_fix, known_keys, strict_scalars, toml_problem
from dispatch_matrix.core.errors import ConfigError

GOOD = """
[matrix]
homeserver = "https://matrix.example.org"
user_id = "@bot:example.org"
password = "hunter2hunter2"
owners = ["@me:example.org"]
"""


def load(tmp_path: Path, extra: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(GOOD + extra)
    return load_config(path)


def refused(tmp_path: Path, extra: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, extra)
    assert "\n" not in caught.value.one_line()
    return caught.value


@pytest.mark.parametrize(
    ("extra", "key", "problem", "fix"),
    [
        (
            '[local_homeserver]\nenabled = "yes"',
            "local_homeserver.enabled",
            '"yes" is text in quotes, not true or false',
            "write enabled = true, without quotes",
        ),
        (
            '[web]\nsearch = "false"',
            "web.search",
            '"false" is text in quotes, not true or false',
            "write search = false, without quotes",
        ),
        ("[web]\nfetch = 1", "web.fetch", "1 is not true or false", "write fetch = true"),
        (
            '[log]\nfile = "maybe"',
            "log.file",
            '"maybe" is text in quotes, not true or false',
            "write file = true or file = false, without quotes",
        ),
        (
            '[agent]\nmax_tokens = "4096"',
            "agent.max_tokens",
            '"4096" is text in quotes, not a whole number',
            "write max_tokens = 4096, without quotes",
        ),
        (
            "[agent]\nmax_tokens = 4096.0",
            "agent.max_tokens",
            "4096.0 is not a whole number",
            "write max_tokens = 4096",
        ),
        (
            "[agent]\nmax_steps = 2.5",
            "agent.max_steps",
            "2.5 is not a whole number",
            "write max_steps as a whole number",
        ),
        (
            '[permissions]\napproval_timeout_s = "90"',
            "permissions.approval_timeout_s",
            '"90" is text in quotes, not a number',
            "write approval_timeout_s = 90, without quotes",
        ),
        (
            "[permissions]\napproval_timeout_s = true",
            "permissions.approval_timeout_s",
            "true is not a number",
            "write approval_timeout_s as a number",
        ),
        (
            '[local_homeserver]\nport = "8008"',
            "local_homeserver.port",
            '"8008" is text in quotes, not a whole number',
            "write port = 8008, without quotes",
        ),
        (
            '[mcp.servers.files]\ncommand = "x"\nenabled = "no"',
            "mcp.servers.files.enabled",
            '"no" is text in quotes, not true or false',
            "write enabled = false, without quotes",
        ),
        (
            '[web]\nfetch_max_content_tokens = "5000"',
            "web.fetch_max_content_tokens",
            '"5000" is text in quotes, not a whole number',
            "write fetch_max_content_tokens = 5000, without quotes",
        ),
    ],
)
def test_a_boolean_or_number_not_written_as_one_is_refused_with_the_line_to_write(
    tmp_path: Path, extra: str, key: str, problem: str, fix: str
) -> None:
    err = refused(tmp_path, "\n" + extra + "\n")
    assert err.key == key
    assert err.problem == problem
    assert err.fix is not None and fix in err.fix, err.one_line()


@pytest.mark.parametrize(
    "extra",
    [
        "[local_homeserver]\nenabled = false\nport = 8448",
        "[permissions]\napproval_timeout_s = 60",  # a whole number is a number
        "[permissions]\napproval_timeout_s = 1.5e2",
        "[agent]\nmax_tokens = 4_096",
        "[web]\nsearch = true\nfetch_max_content_tokens = 2000",
        '[mcp.servers.files]\ncommand = "x"\nenabled = true\ntimeout_s = 30',
    ],
)
def test_toml_native_booleans_and_numbers_load(tmp_path: Path, extra: str) -> None:
    load(tmp_path, "\n" + extra + "\n")


def test_the_environment_keeps_its_text_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCH_WEB__SEARCH", "true")
    monkeypatch.setenv("DISPATCH_AGENT__MAX_TOKENS", "5000")
    config = load(tmp_path, "")
    assert config.web.search is True
    assert config.agent.max_tokens == 5000


@pytest.mark.parametrize(
    ("variable", "value", "key", "fix"),
    [
        (
            "DISPATCH_AGENT__MAXTOKENS",
            "5000",
            "agent.maxtokens",
            "did you mean 'max_tokens'? rename or unset DISPATCH_AGENT__MAXTOKENS",
        ),
        ("DISPATCH_WEB__SEARCH", "maybe", "web.search", "set DISPATCH_WEB__SEARCH to true or"),
        (
            "DISPATCH_MATRIX__HOMESERVER",
            "matrix.example.org",
            "matrix.homeserver",
            "in DISPATCH_MATRIX__HOMESERVER, or unset it",
        ),
    ],
)
def test_a_bad_override_names_its_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str, fix: str
) -> None:
    monkeypatch.setenv(variable, value)
    err = refused(tmp_path, "")
    assert err.key == key
    assert f"(from the environment variable {variable})" in err.problem
    assert err.fix is not None and fix in err.fix, err.one_line()


def test_a_bad_value_in_the_file_is_not_blamed_on_the_environment(tmp_path: Path) -> None:
    err = refused(tmp_path, "\n[agent]\nmodle = 1\n")
    assert "environment" not in err.one_line()


@pytest.mark.parametrize(
    ("extra", "key", "hint"),
    [
        (
            '[mcp.servers.files]\ncommand = "x"\ntimout_s = 3',
            "mcp.servers.files.timout_s",
            "did you mean 'timeout_s'?",
        ),
        ("[agnet]\nmodel = 'x'", "agnet", "did you mean 'agent'?"),
        ("[matrix.extra]\nx = 1", "matrix.extra", "remove it"),
        ("[web]\nserach = true", "web.serach", "did you mean 'search'?"),
    ],
)
def test_an_unknown_key_is_refused_with_the_close_one(
    tmp_path: Path, extra: str, key: str, hint: str
) -> None:
    err = refused(tmp_path, "\n" + extra + "\n")
    assert err.key == key and err.problem == "unknown key"
    assert err.fix is not None and hint in err.fix


@pytest.mark.parametrize(
    ("loc", "has", "lacks"),
    [
        (("mcp", "servers", "files", "timout_s"), "timeout_s", "servers"),
        (("agent", "modle"), "max_tokens", "agent"),
        (("agnet",), "agent", "max_tokens"),
        (("matrix", "owners", 0), "owners", "agent"),
    ],
)
def test_known_keys_follow_the_tables_down(
    loc: tuple[str | int, ...], has: str, lacks: str
) -> None:
    keys = known_keys(Config, loc)
    assert has in keys and lacks not in keys


def test_strict_scalars_passes_what_it_does_not_know() -> None:
    # Unknown keys, strings and lists are pydantic's to judge.
    data = {"matrix": {"owners": "me", "nope": "yes"}, "nope": {"x": "1"}}
    assert strict_scalars(data, Config) is None


@pytest.mark.parametrize(
    ("message", "text", "problem", "fix"),
    [
        (
            "Expected ']' at the end of a table declaration (at line 2, column 7)",
            "a = 1\n[agent\n",
            "not valid TOML at line 2, column 7: expected ']' at the end of a table declaration",
            "fix line 2: [agent",
        ),
        (
            "Invalid value (at line 1, column 9)",
            "model = claude\n",
            "not valid TOML at line 1, column 9: invalid value",
            'fix line 1: model = claude (text needs double quotes: key = "…"',
        ),
        (
            "Unclosed array (at end of document)",
            "owners = ['@a:b'\n",
            "not valid TOML at the end of the file: unclosed array",
            "close the bracket or quote",
        ),
        (
            "Cannot overwrite a value (at end of document)",
            "a = 1\na = 2\n",
            "not valid TOML at the end of the file: cannot overwrite a value",
            "a key is given twice in the same table",
        ),
        ("Something new", "", "not valid TOML (Something new)", "fix the syntax there"),
    ],
)
def test_toml_problem(message: str, text: str, problem: str, fix: str) -> None:
    said, how = toml_problem(message, text)
    assert said == problem
    assert how.startswith(fix), how


def test_a_toml_slip_is_said_with_its_line(tmp_path: Path) -> None:
    err = refused(tmp_path, "\n[agent]\nmodel = claude-opus\n")
    assert err.problem == "not valid TOML at line 9, column 9: invalid value"
    assert err.fix is not None and err.fix.startswith("fix line 9: model = claude-opus")


def test_a_config_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(GOOD.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "not UTF-8 text" in caught.value.problem


@pytest.mark.parametrize(
    ("kind", "fix"),
    [
        ("bool_parsing", "set V to true or false, or unset it"),
        ("int_parsing", "set V to a whole number, or unset it"),
        ("float_parsing", "set V to a number, or unset it"),
        ("extra_forbidden", "rename or unset V"),
        ("value_error", "the file's fix (in V, or unset it)"),
    ],
)
def test_env_fix(kind: str, fix: str) -> None:
    assert env_fix("V", kind, "the file's fix") == fix
