"""Speech out: an OpenAI-style `POST ENDPOINT/v1/audio/speech` turns an answer into audio.

Asked for Ogg/Opus (what Element records and plays as a voice message); whatever comes back
is sniffed, not trusted by its header. Failures are `SpeechFailed`, for the log only: the
text answer has already gone, speech is only beside it.
"""

from __future__ import annotations

import aiohttp
from pydantic import SecretStr

from dispatch_matrix.core.errors import DispatchError
from dispatch_matrix.voice.transcribe import error_reason, why

SPEECH_PATH = "/v1/audio/speech"


class SpeechFailed(DispatchError):
    """The TTS server gave no audio."""


class SpeechClient:
    """One TTS server."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        voice: str,
        *,
        api_key: SecretStr | None,
        timeout_s: float,
    ) -> None:
        self._url = endpoint + SPEECH_PATH
        self._endpoint = endpoint
        self._model = model
        self._voice = voice
        self._key = api_key
        self._timeout_s = timeout_s

    async def speak(self, text: str) -> bytes:
        """The audio of `text` (Ogg/Opus when the server honours `response_format`)."""
        body = {
            "model": self._model,
            "input": text,
            "voice": self._voice,
            "response_format": "opus",
        }
        headers = {"Authorization": f"Bearer {self._key.get_secret_value()}"} if self._key else {}
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self._timeout_s)
                ) as session,
                session.post(self._url, json=body, headers=headers) as response,
            ):
                data = await response.read()
        except TimeoutError:
            raise SpeechFailed(
                f"the TTS server at {self._endpoint} did not answer within {self._timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as err:
            raise SpeechFailed(
                f"the TTS server at {self._endpoint} is unreachable ({why(err)})"
            ) from err
        if response.status != 200:
            reason = error_reason(response.status, data)
            raise SpeechFailed(f"the TTS server at {self._endpoint} refused ({reason})")
        if not data:
            raise SpeechFailed(f"the TTS server at {self._endpoint} sent no audio")
        return data
