"""The command line's parsing: what a user types reaches the command whole."""

from __future__ import annotations

import pytest

from dispatch_matrix.cli import build_parser


def test_a_password_that_begins_with_a_dash_is_taken_whole_after_an_equals_sign() -> None:
    # A generated password begins with "-" one time in 64; argparse reads `--password -x`
    # as a missing value, so the help names the `=` form and that form must work.
    args = build_parser().parse_args(["init", "--password=-Ab3_x", "--owner", "@me:example.org"])
    assert args.password == "-Ab3_x"
    assert args.owner == ["@me:example.org"]


def test_the_help_names_the_equals_form_for_a_dash_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["init", "--help"])
    assert "--password=VALUE" in " ".join(capsys.readouterr().out.split())
