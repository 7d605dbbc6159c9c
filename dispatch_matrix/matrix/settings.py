"""[matrix]: which homeserver, which bot account, who owns it, and how the bot speaks there.
Kept beside the Matrix code; `app/config.py` only names the section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from dispatch_matrix.core.settings import SECRET_FILE, Section, read_secret

_USER_ID = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d+)?$")


class MatrixSection(Section):
    """[matrix]: which homeserver, which bot account, who owns it."""

    homeserver: str = Field(description="Base URL of the homeserver, e.g. https://matrix.org")
    user_id: str = Field(description="The bot's full user id, e.g. @mybot:example.org")
    password: SecretStr | None = Field(None, description="The bot account's password")
    password_file: Path | None = Field(
        None, description="A file holding the bot's password", json_schema_extra=SECRET_FILE
    )
    access_token_file: Path | None = Field(
        None,
        json_schema_extra=SECRET_FILE,
        description="Instead of a password: a file holding an access token issued for the bot "
        "(behind MAS: mas-cli manage issue-compatibility-token); its device becomes the bot's",
    )
    owners: list[str] = Field(description="User ids whose messages the bot obeys")
    device_name: str = Field("dispatch-matrix", description="Display name of the bot's device")
    trust: Literal["cross-signed", "encrypted"] = Field(
        "cross-signed",
        description="Which owner devices are obeyed: only those cross-signed by the owner's "
        "pinned identity, or (relaxed, for clients that cannot cross-sign) any encrypted one",
    )
    max_file_mb: float = Field(
        50.0, gt=0, le=1024, description="Largest attachment the bot sends or accepts (MB)"
    )
    undecryptable_grace_s: float = Field(
        120.0, gt=0, description="How long to wait for a message's keys before telling the owner"
    )
    shared_rooms: list[str] = Field(
        default_factory=list,
        description="Room ids where the bot obeys owners even with other members present",
    )
    sync_timeout_ms: int = Field(30_000, ge=1_000, le=120_000, description="Long-poll length")
    send_rate_per_s: float = Field(
        0.2,
        ge=0.0,
        description="The homeserver's limit on the bot's room events, as the bot assumes it "
        "(Synapse's stock rc_message); decorations stay within it so answers never wait. "
        "0 when the bot is exempt (admin API override_ratelimit)",
    )
    send_burst: int = Field(10, ge=1, description="The burst that limit allows (stock: 10)")
    presence_every_s: float = Field(
        30.0, ge=10.0, description="At most one presence update per this many seconds"
    )
    welcome: bool = Field(
        True,
        description="Say hello once in each new DM with an owner: what the bot is, whom it "
        "obeys, how to stop, approve and get help",
    )
    asleep_notice: bool = Field(
        True,
        description="Keep a notice scheduled on the homeserver (delayed events, MSC4140) that "
        "it posts by itself when the computer has been quiet for asleep_after_s",
    )
    asleep_after_s: float = Field(
        300.0,
        ge=3.0,
        le=86_400.0,
        description="How long the computer is quiet before the homeserver posts the asleep "
        "notice (its timer is pushed back every third of this)",
    )

    @field_validator("homeserver")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://matrix.example.org")
        return value.rstrip("/")

    @field_validator("user_id")
    @classmethod
    def _user(cls, value: str) -> str:
        if not _USER_ID.match(value):
            raise ValueError("must be a full Matrix user id such as @bot:example.org")
        return value

    @field_validator("owners")
    @classmethod
    def _owners(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one owner, or the bot obeys nobody")
        for owner in value:
            if not _USER_ID.match(owner):
                raise ValueError(f"{owner!r} is not a full Matrix user id such as @me:example.org")
        return value

    @property
    def max_file_bytes(self) -> int:
        """`max_file_mb` in bytes."""
        return int(self.max_file_mb * 1024 * 1024)

    def secret_password(self) -> SecretStr | None:
        """The password from the file, the file it names, or the environment."""
        return read_secret(self.password, self.password_file)

    def secret_access_token(self) -> SecretStr | None:
        """The access token from the file it names, if any."""
        return read_secret(None, self.access_token_file)
