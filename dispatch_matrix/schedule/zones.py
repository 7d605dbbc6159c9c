"""The owner's time zone: the one the config names, else the machine's (an IANA name, so
DST rules come with it, not a fixed offset)."""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatch_matrix.core.errors import ConfigError

_LOCALTIME = Path("/etc/localtime")


def zone_named(name: str) -> ZoneInfo:
    """The zone of an IANA name (`Europe/Berlin`); ConfigError names the key when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            "schedule.timezone",
            f"{name!r} is not a time zone name",
            "use an IANA name such as Europe/Berlin or America/New_York",
        ) from None


def machine_zone_name(environ: dict[str, str] | None = None, localtime: Path = _LOCALTIME) -> str:
    """The machine's zone as an IANA name: $TZ, else what /etc/localtime links to, else UTC."""
    env = os.environ if environ is None else environ
    tz = env.get("TZ", "").removeprefix(":").strip()
    if tz and _known(tz):
        return tz
    try:
        target = str(localtime.resolve())
    except OSError:
        return "UTC"
    marker = "zoneinfo/"
    if marker in target:
        name = target.split(marker, 1)[1]
        if _known(name):
            return name
    return "UTC"


def _known(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def owner_zone(configured: str | None) -> ZoneInfo:
    """The configured zone, or the machine's when none is set."""
    return zone_named(configured or machine_zone_name())
