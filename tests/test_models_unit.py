"""Models: the default is the SDK's current Sonnet; the Models API's catalogue; a deprecated
or retired model is reported with its replacement; thinking as each model takes it; the
probe that tells whether the API answers at all."""

from __future__ import annotations

import typing

import anthropic
import pytest
from anthropic.types import ModelParam
from fake_messages_api import FakeMessagesAPI

from dispatch_matrix.agent import catalogue
from dispatch_matrix.agent.model import reachable
from dispatch_matrix.app.config import DEFAULT_MODEL
from dispatch_matrix.queue import texts


def sdk_models() -> list[str]:
    literal = typing.get_args(ModelParam)[0]
    return list(typing.get_args(literal))


def test_the_default_model_is_the_current_sonnet_the_sdk_lists() -> None:
    from anthropic._data import DEPRECATED_MODELS

    listed = sdk_models()
    sonnets = [m for m in listed if m.startswith("claude-sonnet-") and m not in DEPRECATED_MODELS]
    # The SDK lists newest first.
    assert DEFAULT_MODEL == sonnets[0] == "claude-sonnet-5-5"


async def test_a_deprecated_model_is_reported_with_the_replacement_of_its_line(
    fake_api: FakeMessagesAPI,
) -> None:
    client = anthropic.AsyncAnthropic(base_url=fake_api.url, api_key="k", max_retries=0)
    old = await catalogue.status(client, "claude-sonnet-4-5")
    current = await catalogue.status(client, DEFAULT_MODEL)
    gone = await catalogue.status(client, "claude-opus-4-1")
    unknown = await catalogue.status(client, "claude-nonexistent")
    offered = await catalogue.available(client)
    await client.close()
    assert (old.lifecycle, old.retires, old.replacement) == (
        "deprecated",
        "2026-11-30",
        "claude-sonnet-5-5",
    )
    notice = old.notice()
    assert notice is not None and "claude-sonnet-4-5 is deprecated" in notice
    assert "!model claude-sonnet-5-5" in notice
    assert current.notice() is None and not current.ending
    assert gone.lifecycle == "retired" and gone.replacement == "claude-opus-5-5"
    assert unknown.lifecycle == "unknown" and unknown.notice() is None
    assert offered is not None and offered[0].id == "claude-sonnet-5-5"
    listing = texts.models_offered(offered, "claude-sonnet-4-5")
    assert "`claude-sonnet-5-5` — Claude Sonnet 5.5" in listing
    assert "`claude-sonnet-4-5` — Claude Sonnet 4.5 (in use; deprecated, end of life" in listing


async def test_without_the_api_the_sdk_table_still_knows_a_deprecated_model() -> None:
    from anthropic._data import DEPRECATED_MODELS

    # Whichever model the installed SDK warns about (its table changes between releases).
    if not DEPRECATED_MODELS:
        pytest.skip("this SDK release lists no deprecated model")
    name, retires = next(iter(DEPRECATED_MODELS.items()))
    client = anthropic.AsyncAnthropic(base_url="http://127.0.0.1:9", api_key="k", max_retries=0)
    status = await catalogue.status(client, name)
    assert await catalogue.available(client) is None
    await client.close()
    assert status.lifecycle == "deprecated" and status.retires == retires
    assert texts.models_offered(None, "x").startswith("(I could not ask")


async def test_the_probe_finds_the_api_away_then_back_and_a_refused_key_counts_as_back(
    fake_api: FakeMessagesAPI,
) -> None:
    client = anthropic.AsyncAnthropic(base_url=fake_api.url, api_key="k", max_retries=0)
    assert await reachable(client)
    fake_api.stop()
    assert not await reachable(client)
    fake_api.require_key = "another"
    fake_api.start()
    # The next real request says what is wrong with the key; the probe only says "there".
    assert await reachable(client)
    await client.close()
    assert [r.path for r in fake_api.model_requests] == ["/v1/models", "/v1/models"]
    assert fake_api.requests == [], "a probe asks nothing of the model"


async def test_a_refused_key_is_told_apart_from_an_api_that_is_away(
    fake_api: FakeMessagesAPI,
) -> None:
    """The start-up read of the catalogue took a 401 for "unknown", so `run` said
    "connected" with a rejected key, and nothing until the first task failed."""
    fake_api.require_key = "the-right-key"
    client = anthropic.AsyncAnthropic(base_url=fake_api.url, api_key="expired", max_retries=0)
    status = await catalogue.status(client, DEFAULT_MODEL)
    await client.close()
    assert status.refused == "HTTP 401: invalid x-api-key"
    assert status.notice() is None and not status.ending
    away = anthropic.AsyncAnthropic(base_url="http://127.0.0.1:9", api_key="k", max_retries=0)
    assert (await catalogue.status(away, DEFAULT_MODEL)).refused is None
    await away.close()


@pytest.mark.parametrize(
    "model, budget, thinking",
    [
        ("claude-sonnet-5-5", 0, None),
        ("claude-sonnet-5-5", 2048, {"type": "adaptive"}),
        ("claude-opus-5", 4096, {"type": "adaptive"}),
        ("claude-sonnet-4-6", 2048, {"type": "enabled", "budget_tokens": 2048}),
    ],
)
def test_thinking_as_each_model_takes_it(
    model: str, budget: int, thinking: dict[str, object] | None
) -> None:
    assert catalogue.thinking_for(model, budget) == thinking
