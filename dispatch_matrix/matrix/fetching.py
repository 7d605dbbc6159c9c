"""How a failed download of an owner's file is treated (pure): tried again later, or
refused; and, while it is tried again, when the next try is due, when the owner is told it
is still being tried, and when the bot gives up.

Only what no retry can mend refuses a file: the homeserver says the media is not there, or
not for us, or too large (404, 403, 413 and their error codes), or the event itself is
unusable (no link, too large, a bad key or hash: `AttachmentError`). Everything else is an
outage that passes — a proxy's 502/503/504, a 500, a 429, no answer at all, a connection
dropped mid-file, a timeout — and the file waits in its room's order (`unjudged.py`).

The schedule, and why:
- tries come at most every `RETRY_WAITS_S` (5, 10, 20, then every 30 s): the sync returns
  within 5 s while something waits (`sync._WAITING_POLL_MS`), so a try cannot come sooner
  than that anyway, and 30 s bounds how late the file is taken once the media repository
  is back; a 429's own wait is honoured when it is longer;
- the owner is told once, after `TELL_AFTER_S` (60 s) of failures: a blip mended within a
  few tries is not worth a message, a minute of silence after sending a file is;
- it gives up after `GIVE_UP_AFTER_S` (24 hours) of failures, and never before
  `MIN_TRIES_BEFORE_GIVING_UP` tries in the current run: an outage of an hour, a night, a
  laptop asleep over a weekend (the first tries after a wake decide, not the clock) keeps
  the file; a media repository broken for a whole day is the operator's to fix, and the
  owner, told by name which file was not taken, sends it again. Meanwhile the owner can
  delete the file's message to let the room's later messages go ahead (`unjudged.deleted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from dispatch_matrix.core.errors import DispatchError, HomeserverError

RETRY_WAITS_S = (5.0, 10.0, 20.0, 30.0)
# How long a sync's handling waits for a waiting file's try before it goes on without it
# (the try goes on; its end is looked at by a later sync's): a download that hangs to its
# timeout (90 s) held every room's answers and approvals with it, at every try, for a day
# (review 3). A file the repository hands over at once is still taken in the same sync.
TRY_INLINE_S = 2.0
TELL_AFTER_S = 60.0
GIVE_UP_AFTER_S = 24 * 3600.0
MIN_TRIES_BEFORE_GIVING_UP = 3

# The homeserver's answer means the media is not there, not for us, or too large: the same
# answer would come again. (M_NOT_YET_UPLOADED, an asynchronous upload still under way, and
# M_LIMIT_EXCEEDED are answers that pass.)
_FINAL_CODES = frozenset(
    {"M_NOT_FOUND", "M_FORBIDDEN", "M_TOO_LARGE", "M_UNRECOGNIZED", "M_BAD_JSON", "M_NOT_JSON"}
)
_PASSING_CODES = frozenset({"M_LIMIT_EXCEEDED", "M_NOT_YET_UPLOADED", "M_UNKNOWN_TOKEN"})


class FetchFailed(HomeserverError):
    """The homeserver's media repository did not hand over an owner's file. `status`: the
    HTTP status it answered with, None when no answer came (no connection, a connection
    dropped mid-file, a timeout); `errcode`: the Matrix error code it gave, if any."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        errcode: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.retry_after_s = retry_after_s


class FileNotFetched(DispatchError):
    """An owner's file could not be fetched for now (`error`, a passing failure): its
    message waits in its room's order and is taken again later (`unjudged.py`)."""

    def __init__(self, error: HomeserverError) -> None:
        super().__init__(error.message)
        self.error = error


class Outcome(Enum):
    """What a failed download means for the file."""

    RETRY = "retry"
    REFUSE = "refuse"


def outcome(status: int | None, errcode: str | None) -> Outcome:
    """Whether a download that failed with this HTTP `status` (None: no answer) and Matrix
    `errcode` is worth another try (pure). The code decides before the status: Synapse
    answers M_NOT_YET_UPLOADED with 504 and M_NOT_FOUND with 404, a proxy a bare 502."""
    if errcode in _PASSING_CODES:
        return Outcome.RETRY
    if errcode in _FINAL_CODES:
        return Outcome.REFUSE
    if status is None or status in (408, 425, 429) or status >= 500:
        return Outcome.RETRY
    # Any other 4xx: the request itself is refused, and would be refused again.
    return Outcome.REFUSE


def failure_outcome(err: HomeserverError) -> Outcome:
    """`outcome` for a failure raised while fetching a file: a `FetchFailed` by its status and
    code; any other homeserver failure (one the fetch did not sort) is taken as passing, as
    a refusal that was not one loses the owner's file."""
    if isinstance(err, FetchFailed):
        return outcome(err.status, err.errcode)
    return Outcome.RETRY


class Next(Enum):
    """What follows a try that failed with a passing failure."""

    WAIT = "wait"
    # Wait, and tell the owner (once) that the file is still being fetched.
    WAIT_AND_TELL = "wait_and_tell"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class AfterFailure:
    """The decision after a failed try: what follows, and the wait before the next try."""

    next: Next
    wait_s: float


def after_failure(
    tries: int, failing_for_s: float, told: bool, retry_after_s: float | None = None
) -> AfterFailure:
    """What to do after the `tries`-th failed try of this run (1 for the first), the file
    failing for `failing_for_s` since its first failure (across restarts), the owner `told`
    already or not; `retry_after_s`: the wait a 429 asked for (pure)."""
    if failing_for_s >= GIVE_UP_AFTER_S and tries >= MIN_TRIES_BEFORE_GIVING_UP:
        return AfterFailure(Next.GIVE_UP, 0.0)
    wait = RETRY_WAITS_S[min(max(tries, 1), len(RETRY_WAITS_S)) - 1]
    if retry_after_s is not None:
        wait = max(wait, retry_after_s)
    tell = not told and failing_for_s >= TELL_AFTER_S
    return AfterFailure(Next.WAIT_AND_TELL if tell else Next.WAIT, wait)
