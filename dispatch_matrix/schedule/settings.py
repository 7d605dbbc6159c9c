"""[schedule]: the owner's time zone and the daily digest. Kept beside the schedules;
`app/config.py` only names the section."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from dispatch_matrix.core.settings import Section


class ScheduleSection(Section):
    """[schedule]: the owner's time zone (reminders, cron, the agent's sense of "Friday")
    and the daily check-in."""

    timezone: str = Field(
        "", description="The owner's IANA time zone, e.g. Europe/Berlin (empty: the machine's)"
    )
    digest_at: str = Field(
        "",
        description="Time of day (HH:MM, in the owner's zone) of the daily check-in digest; "
        "empty: no daily digest (`!digest` still shows it)",
    )
    test_clock: bool = Field(
        False,
        description="For end-to-end tests only: the clock adds the seconds written in "
        "<state>/clock-offset, so a test moves time instead of sleeping",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value.strip():
            try:
                ZoneInfo(value.strip())
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"{value!r} is not a time zone name such as Europe/Berlin"
                ) from None
        return value.strip()

    @field_validator("digest_at")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        if value.strip() and not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", value.strip()):
            raise ValueError("must be a time of day such as 18:30, or empty for none")
        return value.strip()
