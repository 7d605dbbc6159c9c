"""`init --local-homeserver` stopped (Ctrl-C) after it made the bot's account and before it
wrote the config could never be run again in that folder: every rerun, --force or not, ended
in 'register failed: 400 M_USER_IN_USE' and the random passwords were lost. Each password
is now kept before its account is made, and an account an earlier init made is used again
(the login that follows checks the kept password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch_matrix.app.homeserver import LocalSynapse
from dispatch_matrix.app.onboarding import _kept_password, _register
from dispatch_matrix.core.errors import HomeserverError


class _Synapse:
    """What `_register` asks of the private homeserver: register, or refuse as Synapse."""

    server_name = "localhost"

    def __init__(self, taken: set[str], refusal: str = "M_USER_IN_USE") -> None:
        self.taken = taken
        self.refusal = refusal

    def register(self, localpart: str, password: str) -> str:
        if localpart in self.taken:
            raise HomeserverError(
                f"POST …/_synapse/admin/v1/register failed: 400 "
                f'{{"errcode":"{self.refusal}","error":"…"}}',
                fix="check the homeserver log",
            )
        self.taken.add(localpart)
        return f"@{localpart}:{self.server_name}"


def test_a_password_is_kept_before_use_and_the_same_one_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "owner-password"
    path.parent.mkdir()
    first = _kept_password(path, 12)
    assert path.read_text() == first and path.stat().st_mode & 0o077 == 0
    assert _kept_password(path, 12) == first


def test_an_empty_kept_password_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("\n")
    made = _kept_password(path, 12)
    assert made and path.read_text() == made


def test_an_account_an_earlier_init_made_is_used_again() -> None:
    said: list[str] = []
    synapse = _Synapse({"dispatch"})
    user = _register(synapse, "dispatch", "kept", said.append)  # type: ignore[arg-type]
    assert user == "@dispatch:localhost"
    assert said == [
        "  @dispatch:localhost exists (made by an earlier init here); its kept password is used"
    ]


def test_a_new_account_is_registered() -> None:
    said: list[str] = []
    user = _register(_Synapse(set()), "me", "pw", said.append)  # type: ignore[arg-type]
    assert user == "@me:localhost" and said == ["  registered @me:localhost"]


def test_any_other_refusal_still_stops_init() -> None:
    with pytest.raises(HomeserverError):
        _register(_Synapse({"x"}, "M_FORBIDDEN"), "x", "pw", print)  # type: ignore[arg-type]


def test_the_fake_speaks_as_the_real_one_is_called() -> None:
    # The fake stands in for these two of LocalSynapse's members, no more.
    assert callable(LocalSynapse.register)
    assert LocalSynapse.__dataclass_fields__["server_name"].default == "localhost"
