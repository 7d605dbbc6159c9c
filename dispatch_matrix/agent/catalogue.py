"""Which models the API offers, and whether the one in use is deprecated or retired.

The Models API says it (`lifecycle`, `retires_at`, `line`); when it cannot be asked, the
installed SDK's own deprecation table still knows the models it warns about. A model's
replacement is the newest active model of the same line (Sonnet for a Sonnet).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import anthropic
from anthropic.types import ModelInfo

from dispatch_matrix.core import logs

log = logs.get(__name__)

# Models that take only adaptive thinking (a manual budget is refused with a 400).
ADAPTIVE_THINKING = ("claude-sonnet-5", "claude-opus-5", "claude-fable-5", "claude-mythos-5")


@dataclass(frozen=True)
class ModelStatus:
    """Where a model is in its life, and what to use instead when it is ending."""

    name: str
    lifecycle: str  # "active", "deprecated", "retired", or "unknown"
    retires: str | None = None
    replacement: str | None = None
    # The API's words when it refused the key itself (401/403): every task would be refused.
    refused: str | None = None

    @property
    def ending(self) -> bool:
        """Deprecated or retired: the owner should move to the replacement."""
        return self.lifecycle in ("deprecated", "retired")

    def notice(self) -> str | None:
        """A sentence for the log, `doctor` and the room; None for an active model."""
        if not self.ending:
            return None
        when = (
            f" (end of life {self.retires})" if self.retires and self.lifecycle != "retired" else ""
        )
        instead = (
            f' Use {self.replacement} instead: set `model = "{self.replacement}"` under '
            "[agent] in the config, or send `!model " + self.replacement + "`."
            if self.replacement
            else " Choose a current model with `!model`."
        )
        return f"The model {self.name} is {self.lifecycle}{when}.{instead}"


def thinking_for(model: str, budget: int) -> dict[str, object] | None:
    """The `thinking` parameter for a model and a budget (0: none): adaptive on the models
    that take nothing else, else a manual budget."""
    if budget <= 0:
        return None
    if model.startswith(ADAPTIVE_THINKING):
        return {"type": "adaptive"}
    return {"type": "enabled", "budget_tokens": budget}


def _sdk_deprecations() -> dict[str, str]:
    try:
        from anthropic._data import DEPRECATED_MODELS  # the SDK's own table; private
    except ImportError:
        return {}
    return dict(DEPRECATED_MODELS)


async def available(client: anthropic.AsyncAnthropic) -> list[ModelInfo] | None:
    """The models the API offers (active and deprecated, newest first); None if it cannot be
    asked right now."""
    try:
        quick = client.with_options(timeout=15.0, max_retries=1)
        return [info async for info in quick.models.list(limit=100)]
    except (anthropic.APIStatusError, anthropic.APIConnectionError) as err:
        log.warning("model.list_failed", error=str(err))
        return None


def _words(err: anthropic.APIStatusError) -> str:
    """The API's own message in an error body, else the SDK's."""
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return err.message


def _stamp(value: datetime | None) -> str | None:
    return value.date().isoformat() if value else None


def _replacement(info: ModelInfo, offered: list[ModelInfo]) -> str | None:
    if info.line is None:
        return None
    same = [m for m in offered if m.line == info.line and m.lifecycle == "active"]
    newest = max(same, key=lambda m: m.created_at, default=None)
    return newest.id if newest and newest.id != info.id else None


async def status(client: anthropic.AsyncAnthropic, name: str) -> ModelStatus:
    """The lifecycle of a model id, from the Models API, else from the SDK's table."""
    try:
        quick = client.with_options(timeout=15.0, max_retries=1)
        info = await quick.models.retrieve(name)
    except anthropic.NotFoundError:
        return ModelStatus(name, "unknown")
    except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as err:
        return ModelStatus(name, "unknown", refused=f"HTTP {err.status_code}: {_words(err)}")
    except (anthropic.APIStatusError, anthropic.APIConnectionError):
        retires = _sdk_deprecations().get(name)
        return ModelStatus(name, "deprecated" if retires else "unknown", retires)
    if info.lifecycle == "active":
        return ModelStatus(name, "active")
    offered = await available(client) or []
    return ModelStatus(name, info.lifecycle, _stamp(info.retires_at), _replacement(info, offered))
