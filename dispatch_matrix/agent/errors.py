"""The Messages API's failures, sorted by what each asks of us.

A failure is judged by what the API states about it — the HTTP status, the error's `type`
and, when present, its `details.error_code` — never by the words of its message, which the
API may reword at any time. Two failures have no type of their own and are known by the
fixed shape of their message: "prompt is too long: N tokens > M maximum" and, on older
accounts, the 400 that says the credit balance is too low. Those shapes are anchored, so a
message that merely mentions a context or a credit is not taken for them.

Where a failure arrives does not change its kind: an `overloaded_error` in the body of a 529
and one in an SSE `error` event inside a stream that began with HTTP 200 are one outage.
"""

from __future__ import annotations

import re
from typing import Any

from dispatch_matrix.core.errors import ModelError


class ModelOutage(ModelError):
    """The API is overloaded or unreachable beyond the retry budget; try again later."""


class ModelUnreachable(ModelOutage):
    """No connection to the API at all (refused, timed out, no route): a cheap probe of it
    tells when it is back, as no probe can for an API that answers but is overloaded."""


class StreamCut(ModelOutage):
    """A stream broke midway: its connection was cut, or it carried an `error` event.

    What it had streamed so far is dropped, never shown as an answer.
    """


class ModelAccessError(ModelError):
    """The key is rejected or the credit is spent: retrying will not help."""


class BudgetSpent(ModelAccessError):
    """Today's model cost reached [agent] daily_budget_usd: no request until it is raised,
    or tomorrow."""

    def __init__(self, spent_usd: float, budget_usd: float) -> None:
        super().__init__(
            f"the daily budget is spent: today's model cost ${spent_usd:.2f} has reached "
            f"[agent] daily_budget_usd = {budget_usd:.2f}. To go on today, raise "
            "daily_budget_usd in the config file (0 means no limit) and restart dispatch-matrix; "
            "otherwise wait until tomorrow. Then send `!resume`"
        )
        self.spent_usd = spent_usd
        self.budget_usd = budget_usd


class ContextTooLong(ModelError):
    """The request does not fit the model's context window."""


class RequestTooLarge(ContextTooLong):
    """The request's body is over the API's size limit (413): attachments and long tool
    results are what to shed first."""


class AgentFailure(ModelError):
    """The task cannot be finished; the message says why, for the owner."""


class AnswerCut(AgentFailure):
    """The answer stayed cut off (output limit, context window) after every continuation
    allowed; `partial` is what the model wrote."""

    def __init__(self, message: str, partial: str) -> None:
        super().__init__(message)
        self.partial = partial

    @classmethod
    def because(cls, why: str, continued: int, partial: str) -> AnswerCut:
        """The owner's account: why it was cut, after how many continuations, and what the
        model had written."""
        return cls(
            f"the answer was cut off because {why}, after {continued} continuation(s) "
            "([agent] max_continuations). What it had written:\n\n" + (partial or "(nothing)"),
            partial,
        )


class ModelDeclined(AgentFailure):
    """The model stopped with `refusal`: it declined to go on with the task."""

    @classmethod
    def told(cls) -> ModelDeclined:
        """The owner's account of a refusal."""
        return cls(
            "the model declined this task (it stopped with `refusal`). Nothing more was done. "
            "Rephrase the task, or send `!new` if it keeps declining in this conversation"
        )


# -- what each error states, and what it means ------------------------------------------------

OUTAGE_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})
ACCESS_TYPES = frozenset({"authentication_error", "permission_error", "billing_error"})
# error.details.error_code values that no retry will get past: someone must pay or ask.
ACCESS_CODES = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
        "organization_on_hold",
        "user_profile_not_billable",
        "user_profile_billing_not_authorized",
    }
)
OUTAGE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
ACCESS_STATUSES = frozenset({401, 402, 403})

# The two fixed message shapes the API gives failures that have no type of their own.
_PROMPT_TOO_LONG = re.compile(
    r"^(prompt is too long\b|input length and `?max_tokens`? exceed context limit:)"
)
_CREDIT_TOO_LOW = re.compile(r"^your credit balance is too low\b", re.IGNORECASE)


def kind_of(
    status: int | None, error_type: str | None, code: str | None, message: str
) -> type[ModelError]:
    """The ModelError kind of an API failure, from its status (200 for an `error` event in a
    stream), its error type and error code, and — for the two untyped kinds — the shape of
    its message."""
    if code in ACCESS_CODES:
        return ModelAccessError
    if error_type in ACCESS_TYPES or (error_type is None and status in ACCESS_STATUSES):
        return ModelAccessError
    if error_type == "request_too_large" or status == 413:
        return RequestTooLarge
    if error_type in OUTAGE_TYPES:
        return ModelOutage
    if error_type in (None, "invalid_request_error") and status in (None, 400):
        if _PROMPT_TOO_LONG.match(message.strip()):
            return ContextTooLong
        if _CREDIT_TOO_LOW.match(message.strip()):
            return ModelAccessError
    if status in OUTAGE_STATUSES or (status is not None and status >= 500):
        return ModelOutage
    return ModelError


def error_fields(body: Any) -> tuple[str | None, str | None, str]:
    """(type, details.error_code, message) of an API error body ({"type": "error",
    "error": {...}}); Nones and "" where absent."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, ""
    details = error.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    kind = error.get("type")
    return (
        kind if isinstance(kind, str) else None,
        code if isinstance(code, str) else None,
        str(error.get("message") or ""),
    )


_HTML_PAGE = re.compile(r"\s*<(!doctype|html)\b", re.IGNORECASE)
_MAX_SAID = 300


def _one_line(text: str) -> str:
    """An error body said in one line: what a proxy or a stranger on the port sends back is
    often a whole HTML page, which the room should not get verbatim."""
    if _HTML_PAGE.match(text):
        text = re.sub(r"<[^>]*>", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_SAID else text[: _MAX_SAID - 1] + "…"


def described(kind: type[ModelError], status: int | None, error_type: str | None, text: str) -> str:
    """The owner's one-line account of an API failure of `kind`."""
    said = f"{error_type or 'error'}" + (f", {status}" if status and status != 200 else "")
    if status == 200:
        said += ", in the middle of a streamed answer"
    text = _one_line(text) or "no message"
    if kind is ModelAccessError:
        return f"the Messages API refused access ({said}): {text}"
    if kind is RequestTooLarge:
        return f"the request was too large for the Messages API ({said}): {text}"
    if kind is ContextTooLong:
        return f"the conversation no longer fits the model: {text}"
    if issubclass(kind, ModelOutage):
        return f"the Messages API is unavailable ({said}): {text}"
    return f"the Messages API answered {said}: {text}"
