"""[voice]: how voice messages are transcribed, and whether answers are spoken back.

Kept beside the voice code rather than in `app/config.py`; `Config` only names the section.
Secrets follow the house rule: inline, a `*_file`, or the environment
(`DISPATCH_VOICE__API_KEY`), always as `SecretStr`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_URL = re.compile(r"^https?://[^/\s]+")
LOCAL_ENGINES = ("faster-whisper", "whispercpp")


def base_url(value: str) -> str:
    """A server's base URL as `[voice] endpoint` wants it: no trailing `/` or `/v1`, since
    the OpenAI-style paths (`/v1/audio/…`) are added to it."""
    value = value.strip().rstrip("/")
    if not _URL.match(value):
        raise ValueError("must be an http(s) URL such as http://127.0.0.1:8000")
    return value.removesuffix("/v1").rstrip("/")


class VoiceSection(BaseModel):
    """[voice]: transcription backend (`off`, `endpoint`, `local`) and speech out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["off", "endpoint", "local"] = Field(
        "off",
        description="Who transcribes voice messages: nobody (off), an OpenAI-style "
        "transcription server (endpoint), or a model on this computer (local)",
    )
    endpoint: str | None = Field(
        None,
        description="Base URL of the transcription server; the bot posts to "
        "ENDPOINT/v1/audio/transcriptions",
    )
    model: str = Field("whisper-1", description="Model name sent to the transcription server")
    language: str | None = Field(
        None, description="Language of the speech (ISO 639-1, e.g. en); unset: detected"
    )
    api_key: SecretStr | None = Field(None, description="Key of the transcription/TTS server")
    api_key_file: Path | None = Field(
        None,
        description="A file holding that key",
        # The config_sections.SECRET_FILE mark (not imported: voice stays below config).
        json_schema_extra={"secret_file": True},
    )
    timeout_s: float = Field(60.0, gt=0, le=600, description="Longest wait for one transcript")
    local_engine: Literal["faster-whisper", "whispercpp"] = Field(
        "faster-whisper", description="Which optional extra runs the local model"
    )
    local_model: Path | None = Field(
        None,
        description="The local model, downloaded once: a faster-whisper model folder or a "
        "whisper.cpp ggml file",
    )
    speech: bool = Field(False, description="Also answer a voice task with a voice message")
    speech_endpoint: str | None = Field(
        None, description="Base URL of the TTS server (POST /v1/audio/speech); else endpoint"
    )
    speech_model: str = Field("tts-1", description="Model name sent to the TTS server")
    speech_voice: str = Field("alloy", description="Voice name sent to the TTS server")
    speech_max_chars: int = Field(
        1500, ge=50, le=4096, description="Longest part of an answer that is spoken"
    )

    @field_validator("endpoint", "speech_endpoint")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        return None if value is None else base_url(value)

    @model_validator(mode="after")
    def _complete(self) -> VoiceSection:
        if self.backend == "endpoint" and not self.endpoint:
            raise ValueError(
                'backend = "endpoint" needs endpoint = "http://HOST:PORT" (the transcription '
                "server's base URL) under [voice]"
            )
        if self.backend == "local" and self.local_model is None:
            raise ValueError(
                'backend = "local" needs local_model = "/path/to/model" under [voice] '
                "(`dispatch-matrix doctor` says how to get one)"
            )
        if self.speech and not self.tts_endpoint:
            raise ValueError(
                'speech = true needs speech_endpoint = "http://HOST:PORT" (a server with '
                "POST /v1/audio/speech) under [voice]"
            )
        return self

    @property
    def tts_endpoint(self) -> str | None:
        """Where speech out is made: `speech_endpoint`, else the transcription `endpoint`."""
        return self.speech_endpoint or self.endpoint

    def secret_api_key(self) -> SecretStr | None:
        """The key inline (or from the environment), else read from `api_key_file`."""
        if self.api_key is not None:
            return self.api_key
        if self.api_key_file is None:
            return None
        try:
            return SecretStr(self.api_key_file.expanduser().read_text().strip())
        except OSError as err:
            raise ValueError(f"cannot read {self.api_key_file}: {err.strerror}") from err
