"""The Messages API's own web tools: their definitions, the per-task use limit, and the
sources an answer cites. Pure.

The API runs web search and web fetch itself (`server_tool_use` blocks and their
`web_search_tool_result` / `web_fetch_tool_result`); we only offer them, keep their blocks
in the transcript as they came, and list what the answer cites as links at its end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dispatch_matrix.connectors.settings import WebSection
from dispatch_matrix.permissions.policy import Policy

NAMES = ("web_search", "web_fetch")
# Claude Code's names for them in rules.
RULE_NAMES = {"web_search": "WebSearch", "web_fetch": "WebFetch"}
# The web's results as blocks of an assistant message.
RESULT_BLOCKS = frozenset({"web_search_tool_result", "web_fetch_tool_result"})
# Blocks the API may leave at the end of a paused turn; a finished turn ends in text.
_SERVER_BLOCKS = frozenset({"server_tool_use", *RESULT_BLOCKS})


@dataclass(frozen=True)
class Source:
    """One page the answer rests on."""

    url: str
    title: str


class WebTools:
    """The web tools the config enables, as `tools` entries for one request."""

    def __init__(self, settings: WebSection, refused: Iterable[str] = ()) -> None:
        self.settings = settings
        # Names a deny rule takes away (`WebSearch`, `WebFetch` in [permissions] deny).
        self._refused = frozenset(refused)

    @property
    def names(self) -> list[str]:
        """The web tools on offer (before the per-task limit)."""
        wanted = [("web_search", self.settings.search), ("web_fetch", self.settings.fetch)]
        return [name for name, on in wanted if on and name not in self._refused]

    def definitions(self, used: int) -> list[dict[str, Any]]:
        """The entries for a request of a task that has already made `used` web calls.

        The API counts `max_uses` per request, so it is what is left of the task's limit:
        the entries change only after a request that used the web, and once nothing is
        left the tools are not offered for the rest of the task.
        """
        left = self.settings.max_uses_per_task - used
        if left <= 0:
            return []
        domains: dict[str, Any] = {}
        if self.settings.allowed_domains:
            domains["allowed_domains"] = list(self.settings.allowed_domains)
        if self.settings.blocked_domains:
            domains["blocked_domains"] = list(self.settings.blocked_domains)
        out: list[dict[str, Any]] = []
        if "web_search" in self.names:
            out.append(
                {
                    "type": self.settings.search_version,
                    "name": "web_search",
                    "max_uses": left,
                    **domains,
                }
            )
        if "web_fetch" in self.names:
            fetch: dict[str, Any] = {
                "type": self.settings.fetch_version,
                "name": "web_fetch",
                "max_uses": left,
                "citations": {"enabled": True},
                **domains,
            }
            if self.settings.fetch_max_content_tokens is not None:
                fetch["max_content_tokens"] = self.settings.fetch_max_content_tokens
            out.append(fetch)
        return out


def refused(policy: Policy) -> list[str]:
    """The web tools a rule takes away: a deny rule, or an ask rule, which cannot be asked
    (the API runs them without us), so it fails closed."""
    out = []
    for name, rule_name in RULE_NAMES.items():
        decisions = [policy.decide(rule_name, {}), policy.decide(name, {})]
        if any(d.rule is not None and d.verdict != "allow" for d in decisions):
            out.append(name)
    return out


def uses(messages: Iterable[Mapping[str, Any]]) -> int:
    """How many web searches and fetches the assistant made in these messages."""
    return sum(
        1
        for message in messages
        if message.get("role") == "assistant"
        for block in message.get("content") or []
        if block.get("type") == "server_tool_use" and block.get("name") in NAMES
    )


def paused(content: list[dict[str, Any]]) -> bool:
    """Whether an assistant message stopped inside a server-tool turn (`pause_turn`): it
    ends with a server tool's call or result rather than with text."""
    return bool(content) and content[-1].get("type") in _SERVER_BLOCKS


def sources(content: Iterable[Mapping[str, Any]]) -> list[Source]:
    """The pages an answer cites, in the order first cited, then pages it fetched (none
    without a citation or a `RESULT_BLOCKS` block)."""
    found: dict[str, Source] = {}
    blocks = list(content)
    for block in blocks:
        if block.get("type") != "text":
            continue
        for citation in block.get("citations") or []:
            url = citation.get("url")
            if isinstance(url, str) and url and url not in found:
                title = citation.get("title") or citation.get("document_title") or url
                found[url] = Source(url, str(title))
    for block in blocks:
        if block.get("type") != "web_fetch_tool_result":
            continue
        result = block.get("content") or {}
        url = result.get("url")
        if isinstance(url, str) and url and url not in found:
            document = result.get("content") or {}
            found[url] = Source(url, str(document.get("title") or url))
    return list(found.values())


def with_sources(text: str, cited: list[Source]) -> str:
    """The answer with its sources listed as Markdown links at the end."""
    if not cited:
        return text
    lines = [f"{i}. [{_label(s.title)}]({_target(s.url)})" for i, s in enumerate(cited, 1)]
    return f"{text}\n\n**Sources**\n" + "\n".join(lines)


def _label(title: str) -> str:
    flat = " ".join(title.split())[:120] or "link"
    return flat.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def _target(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
