"""A private homeserver a run left behind is stopped by the next one (or by `tools/run`),
and nothing else is: without Synapse, a stand-in process with Synapse's command line."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dispatch_matrix.app.homeserver import CONFIG_NAME, STARTED_NAME, LocalSynapse, stop_leftover


def stand_in(argv: list[str]) -> subprocess.Popen[bytes]:
    """A process that sleeps with the given words on its command line, in its own session
    as the daemon starts Synapse."""
    code = "import time; time.sleep(120)"
    process = subprocess.Popen([sys.executable, "-c", code, *argv], start_new_session=True)
    # Until the child has exec'd, its command line is still ours (pytest's): wait for the
    # words, as a leftover Synapse has them long before the next run looks.
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    want = argv[-1].encode()
    for _ in range(2000):
        if want in cmdline.read_bytes():
            break
        time.sleep(0.005)
    else:
        process.kill()
        raise AssertionError("the stand-in never showed its command line")
    return process


def test_a_synapse_left_running_on_this_folder_is_stopped(tmp_path: Path) -> None:
    config = tmp_path / CONFIG_NAME
    left = stand_in(["-m", "synapse.app.homeserver", "-c", str(config)])
    (tmp_path / STARTED_NAME).write_text(f"{left.pid}\n")
    # Reaped as init reaps an orphan: the run that started it is gone.
    reaper = threading.Thread(target=left.wait, daemon=True)
    reaper.start()
    try:
        assert stop_leftover(tmp_path, timeout=10) == left.pid
        reaper.join(10)
        assert left.returncode is not None
        assert not (tmp_path / STARTED_NAME).exists()
    finally:
        left.kill()


def test_a_recorded_pid_that_is_not_our_synapse_is_left_alone(tmp_path: Path) -> None:
    # After a reboot the pid may be anyone's: another program, or a Synapse of another folder.
    other = stand_in(["-m", "synapse.app.homeserver", "-c", str(tmp_path / "x" / CONFIG_NAME)])
    (tmp_path / STARTED_NAME).write_text(f"{other.pid}\n")
    try:
        assert stop_leftover(tmp_path, timeout=1) is None
        assert other.poll() is None, "still running"
        assert not (tmp_path / STARTED_NAME).exists(), "the stale record is gone"
        assert stop_leftover(tmp_path) is None, "no record, nothing to do"
    finally:
        other.kill()
        other.wait(10)


def test_ctrl_c_while_synapse_starts_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during `init --local-homeserver` left Synapse running (its own session keeps
    it from the terminal's signal), holding the port until the next run."""
    fake = tmp_path / "synapse-python"
    fake.write_text("#!/bin/sh\nexec sleep 120\n")
    fake.chmod(0o755)
    monkeypatch.setenv("DISPATCH_SYNAPSE_PYTHON", str(fake))
    synapse = LocalSynapse(folder=tmp_path, port=1)
    synapse.config_path.write_text("configured\n")

    def interrupted(self: LocalSynapse) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalSynapse, "is_up", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synapse.start()
    assert synapse.process is not None and synapse.process.poll() is not None, "stopped"
    assert not (tmp_path / STARTED_NAME).exists()


def test_tools_run_leaves_the_homeserver_of_a_bot_that_still_runs(tmp_path: Path) -> None:
    """A second `tools/run` on the same folder: its bot refused to start twice (exit 4), and
    the script then stopped 'the homeserver the bot left running' — the first bot's."""
    from dispatch_matrix.app.homeserver import stop_after_run
    from dispatch_matrix.store.state import StateFolder

    folder = tmp_path / "homeserver"
    folder.mkdir()
    synapse = stand_in(["-m", "synapse.app.homeserver", "-c", str(folder / CONFIG_NAME)])
    (folder / STARTED_NAME).write_text(f"{synapse.pid}\n")
    reaper = threading.Thread(target=synapse.wait, daemon=True)
    reaper.start()
    first = StateFolder(tmp_path)
    first.lock()  # the first bot, still running
    try:
        assert stop_after_run(tmp_path, folder) is None
        assert synapse.poll() is None, "the running bot's homeserver is left alone"
        first.unlock()  # that bot was killed outright: its homeserver is a leftover now
        assert stop_after_run(tmp_path, folder) == synapse.pid
        reaper.join(10)
        assert synapse.returncode is not None
    finally:
        first.unlock()
        synapse.kill()
