"""What `dispatch-matrix doctor` says about voice: the backend, whether it answers or loads,
and how to get what is missing. Reads only; never prints the key."""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request
from typing import NamedTuple

from dispatch_matrix.voice.config import VoiceSection
from dispatch_matrix.voice.transcribe import TranscriptionFailed, load_local, local_howto

_MODULES = {"faster-whisper": "faster_whisper", "whispercpp": "pywhispercpp"}


class VoiceCheck(NamedTuple):
    """One line of the doctor's checklist."""

    ok: bool
    what: str
    fix: str = ""


def voice_checks(section: VoiceSection, *, load: bool = True) -> list[VoiceCheck]:
    """The checklist lines for [voice]; `load=False` skips loading a local model."""
    if section.backend == "off":
        return [
            VoiceCheck(
                True,
                'voice messages off (set [voice] backend = "endpoint" and endpoint to a '
                "transcription server to turn them on)",
            )
        ]
    checks: list[VoiceCheck] = []
    if section.backend == "endpoint" and section.endpoint:
        checks.append(_reachable("transcription server", section.endpoint, section))
    elif section.backend == "local" and section.local_model is not None:
        checks.extend(_local(section, load))
    if section.speech and section.tts_endpoint:
        checks.append(_reachable("TTS server (speech out)", section.tts_endpoint, section))
    return checks


def _reachable(what: str, endpoint: str, section: VoiceSection) -> VoiceCheck:
    """Any HTTP answer from `GET /v1/models` means the server is there (some servers do not
    list models; that is not our concern here)."""
    request = urllib.request.Request(endpoint + "/v1/models")
    key = section.secret_api_key()
    if key is not None:
        request.add_header("Authorization", f"Bearer {key.get_secret_value()}")
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return VoiceCheck(
                False,
                f"{what} at {endpoint} refused the key (HTTP {err.code})",
                "set [voice] api_key_file, or DISPATCH_VOICE__API_KEY",
            )
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return VoiceCheck(
            False,
            f"{what} at {endpoint} unreachable ({reason})",
            "start it, or fix [voice] endpoint (its base URL, e.g. http://127.0.0.1:8000)",
        )
    return VoiceCheck(True, f"{what} reachable: {endpoint}")


def _local(section: VoiceSection, load: bool) -> list[VoiceCheck]:
    engine = section.local_engine
    model = section.local_model
    assert model is not None
    if importlib.util.find_spec(_MODULES[engine]) is None:
        return [
            VoiceCheck(False, f"local voice engine {engine} is not installed", local_howto(engine))
        ]
    checks = [VoiceCheck(True, f"local voice engine {engine} installed")]
    path = model.expanduser()
    if not path.exists():
        checks.append(
            VoiceCheck(False, f"local voice model {path} does not exist", local_howto(engine))
        )
        return checks
    if load:
        try:
            load_local(engine, path)
        except TranscriptionFailed as err:
            checks.append(VoiceCheck(False, err.message, err.fix or local_howto(engine)))
            return checks
        checks.append(VoiceCheck(True, f"local voice model loads: {path}"))
    return checks
