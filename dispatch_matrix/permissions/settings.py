"""[permissions]: the owner's rules and how long an approval question waits. Kept beside
the policy that reads them; `app/config.py` only names the section."""

from __future__ import annotations

from pydantic import Field

from dispatch_matrix.core.settings import Section


class PermissionsSection(Section):
    """[permissions]: Claude Code's rule syntax; deny beats ask beats allow."""

    allow: list[str] = Field(default_factory=list)
    ask: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    approval_timeout_s: float = Field(
        600.0, gt=0, description="How long an approval question waits before it means no"
    )
