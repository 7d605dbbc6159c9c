"""The agent's `TaskIO` port in memory, for the tests that run an engine without a room:
it answers every question the same way and keeps what it was shown and asked."""

from __future__ import annotations

from pathlib import Path

from dispatch_matrix.agent.ports import Approval
from dispatch_matrix.permissions.policy import Decision


class FakeTaskIO:
    """The room's side of one task: answers each question with `answer` (no, unless told),
    and records progress lines, questions (with the change shown beside each), learned
    rules, sent files and started process groups."""

    def __init__(self, answer: Approval = Approval.NO) -> None:
        self.answer = answer
        self.shown: list[str] = []
        self.questions: list[tuple[Decision, str | None]] = []
        self.learned_rules: list[str | None] = []
        self.files: list[tuple[Path, str | None]] = []
        self.process_groups: list[int] = []

    @property
    def asked(self) -> list[Decision]:
        """The decisions asked about, in order."""
        return [decision for decision, _ in self.questions]

    async def progress(self, text: str) -> None:
        self.shown.append(text)

    async def ask(self, decision: Decision, change: str | None = None) -> Approval:
        self.questions.append((decision, change))
        return self.answer

    async def learned(self, rule: str | None) -> None:
        self.learned_rules.append(rule)

    async def send_file(self, path: Path, caption: str | None = None) -> str:
        self.files.append((path, caption))
        return f"$file{len(self.files)}"

    def process_started(self, pgid: int) -> None:
        self.process_groups.append(pgid)

    def cancelled(self) -> bool:
        return False
