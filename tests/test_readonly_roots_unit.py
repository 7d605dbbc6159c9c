"""What the wall keeps read-only for every call never holds a root whole. Review 3: the home's
git config naming a root in a command (`alias.build = !cd ~/code/app && make`) or the daemon's
PATH holding a root (`~/code` on it) turned that whole root read-only, for the shell and the
file tools; only the home and the workdir were kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch_matrix.app.agent_kit import readonly_paths


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    made = tmp_path / "home"
    (made / "code" / "app").mkdir(parents=True)
    (made / "work").mkdir()
    (made / ".gitconfig").write_text(
        "[alias]\n\tbuild = !cd ~/code/app && make\n"
        "[core]\n\tfsmonitor = ~/code/app/tools/watch.sh\n"
    )
    for name in ("GIT_CONFIG_GLOBAL", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", f"{made}/code:{made}/code/app/node_modules/.bin:/usr/bin")
    return made


def test_no_root_is_made_read_only_whole(home: Path) -> None:
    root = home / "code" / "app"
    found = set(readonly_paths(home, None, home / "work", [root]))
    assert root not in found and home / "code" not in found
    # What lies inside the root and may run later stays read-only, as before.
    assert root / "tools" / "watch.sh" in found
    assert root / "node_modules" / ".bin" in found


@pytest.mark.parametrize("spelled", ["~/code/app", "~/app-link"])
def test_a_root_spelled_with_a_tilde_or_through_a_link_is_kept(
    home: Path, spelled: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(home))
    (home / "app-link").symlink_to(home / "code" / "app")
    found = set(readonly_paths(home, None, home / "work", [Path(spelled)]))
    assert home / "code" / "app" not in found and home / "code" not in found
