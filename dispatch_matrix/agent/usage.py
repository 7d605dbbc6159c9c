"""What the model costs: a price table per model family, totals per task, day and week.

Prices are USD per million tokens (the public list prices). Cache writes with the default
5-minute lifetime cost 1.25× the input price, those with the 1-hour lifetime 2×, cache reads
0.1×. A model the table does not know gets no cost at all rather than a guessed one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from dispatch_matrix.store import LedgerQueries
from dispatch_matrix.store.ledger import UsageRow

CACHE_WRITE_FACTOR = 1.25
CACHE_WRITE_1H_FACTOR = 2.0
CACHE_READ_FACTOR = 0.1
UNKNOWN_MODEL = "unknown model: no cost shown"


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float

    @property
    def cache_write(self) -> float:
        return self.input * CACHE_WRITE_FACTOR

    @property
    def cache_write_1h(self) -> float:
        return self.input * CACHE_WRITE_1H_FACTOR

    @property
    def cache_read(self) -> float:
        return self.input * CACHE_READ_FACTOR


# Matched by the longest prefix, so dated ids (claude-opus-4-5-20251101) find their family.
PRICES: dict[str, Price] = {
    "claude-fable-5": Price(10.0, 50.0),
    "claude-opus-5-5": Price(4.0, 20.0),
    "claude-opus-5": Price(5.0, 25.0),
    "claude-sonnet-5": Price(2.0, 10.0),
    "claude-opus-4-8": Price(5.0, 25.0),
    "claude-opus-4-7": Price(5.0, 25.0),
    "claude-opus-4-6": Price(5.0, 25.0),
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
}


def price_of(model: str) -> Price | None:
    """The price of a model id, by its longest known prefix; None if unknown."""
    matches = [prefix for prefix in PRICES if model.startswith(prefix)]
    return PRICES[max(matches, key=len)] if matches else None


def cost(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_write: int = 0,
    cache_read: int = 0,
    cache_write_1h: int = 0,
) -> float | None:
    """The USD cost of one request's tokens; None for a model without a known price.

    `cache_write` counts every cache write; `cache_write_1h` the part of it made with the
    1-hour lifetime."""
    price = price_of(model)
    if price is None:
        return None
    one_hour = min(cache_write_1h, cache_write)
    return (
        input_tokens * price.input
        + output_tokens * price.output
        + (cache_write - one_hour) * price.cache_write
        + one_hour * price.cache_write_1h
        + cache_read * price.cache_read
    ) / 1_000_000


@dataclass(frozen=True)
class Totals:
    """Summed usage of some requests."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write: int = 0
    cache_read: int = 0
    cost_usd: float = 0.0
    # Requests to models without a known price: their tokens count, their cost does not.
    unpriced: int = 0
    unpriced_models: tuple[str, ...] = ()
    # What Claude Code's requests on a plan login would cost at list prices: drawn from the
    # plan's credit, not paid, so not in `cost_usd` (nor in the daily budget).
    plan_usd: float = 0.0

    @property
    def all_input(self) -> int:
        """Every input token: plain, written to the cache, and read from it."""
        return self.input_tokens + self.cache_write + self.cache_read

    @property
    def cache_read_share(self) -> float:
        """The share of input tokens read from the cache (0.0 when there were none)."""
        return self.cache_read / self.all_input if self.all_input else 0.0


def total(rows: Iterable[UsageRow]) -> Totals:
    """The sum of some recorded requests, priced per request by its model."""
    requests = inp = out = write = read = unpriced = 0
    spent = plan = 0.0
    unknown: list[str] = []
    for row in rows:
        requests += 1
        inp += row.input_tokens
        out += row.output_tokens
        write += row.cache_creation_input_tokens
        read += row.cache_read_input_tokens
        usd = cost(
            row.model,
            row.input_tokens,
            row.output_tokens,
            row.cache_creation_input_tokens,
            row.cache_read_input_tokens,
            row.cache_write_1h,
        )
        if usd is None:
            unpriced += 1
            if row.model not in unknown:
                unknown.append(row.model)
        elif row.billing == "plan":
            plan += usd
        else:
            spent += usd
    return Totals(requests, inp, out, write, read, spent, unpriced, tuple(unknown), plan)


def day_start(now: datetime) -> datetime:
    """Local midnight of the day `now` falls in (naive times are taken as local)."""
    local = now.astimezone()
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def today(db: LedgerQueries, now: datetime) -> Totals:
    """Usage since local midnight."""
    return total(db.usage_rows(since=day_start(now).timestamp()))


def last_days(db: LedgerQueries, now: datetime, days: int = 7) -> Totals:
    """Usage of the last `days` days, today included."""
    since = day_start(now) - timedelta(days=days - 1)
    return total(db.usage_rows(since=since.timestamp()))


def of_task(db: LedgerQueries, task_id: int) -> Totals:
    """Usage of one task (its steps and any compaction it triggered)."""
    return total(db.usage_rows(task_id=task_id))


def recent_tasks(db: LedgerQueries, limit: int = 5) -> list[tuple[int, Totals]]:
    """The last tasks that used the model, newest first, with their usage."""
    return [(task_id, of_task(db, task_id)) for task_id in db.tasks_with_usage(limit)]
