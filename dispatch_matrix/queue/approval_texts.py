"""What the bot says about approvals: the question that shows exactly what would run, and
the answers to answers. Part of the queue's texts (`texts.py`), kept apart for its size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dispatch_matrix.core.verbatim import (
    code_block,
    code_span,
    compact_blanks,
    hidden_characters,
    lookalikes,
    visible,
)
from dispatch_matrix.matrix import polls
from dispatch_matrix.queue.polls import ALWAYS, DENY, ONCE
from dispatch_matrix.store import Task

if TYPE_CHECKING:
    from dispatch_matrix.permissions.policy import Decision


# The question must fit one event whatever the command holds: a Matrix event is capped at
# 64 KiB once encrypted, and carries the text twice (body and HTML, where `<` is `&lt;`).
# 6,000 characters of three-byte UTF-8 or of `<` stay under 40 KB; the outbox's own cut
# (16,000 characters, then a 4,000-character preview) never applies to a question.
QUESTION_MAX_CHARS = 6_000
# What each part may take before it goes whole as an attached file instead.
COMMAND_CHARS = 1_800
UNCOVERED_CHARS = 1_000
CHANGE_CHARS = 1_800
REASON_CHARS = 400
# What a cut part still shows: its first lines, and its last line.
HEAD_CHARS = 1_000
LAST_LINE_CHARS = 400
# A line longer than this may run past a phone's screen: the question says so.
LONG_LINE_CHARS = 160


@dataclass(frozen=True)
class Attachment:
    """A part too long for the question, sent whole as a file just before it."""

    name: str
    text: str


@dataclass(frozen=True)
class Question:
    """The approval question and the files that must reach the phone before it."""

    text: str
    attachments: tuple[Attachment, ...] = ()


def approval_question(
    task: Task, decision: Decision, change: str | None, minutes: int, tag: str = ""
) -> Question:
    """The approval question: what runs, whole; what no rule covers; the change.

    Every piece of the call is in a fenced code block, never in prose, with its invisible
    characters shown. A part too long for one message goes whole as an attached file, and
    the question says so: its length in characters and lines, its first lines and its last
    line. `tag` tells this question's files from another's.
    """
    what = "Make this change" if change else "Run this"
    files: list[Attachment] = []
    name = f"{task.id}{'-' + tag if tag else ''}"
    whole = decision.subject + "\n" + (change or "")
    hidden = hidden_characters(whole)
    odd = [code for code in lookalikes(whole) if code not in hidden]
    show = _Shown(frozenset(chr(int(code[2:], 16)) for code in odd))
    parts = [f"❓ **May I?** {what} ({task.short_id}):"]
    parts.extend(
        _part(decision.subject, "command", f"command-{name}.txt", COMMAND_CHARS, files, show)
    )
    if decision.uncovered and list(decision.uncovered) != [decision.subject]:
        parts.append("Not covered by your rules:")
        parts.extend(_uncovered(decision.uncovered, f"uncovered-{name}.md", files, show))
    if change:
        parts.append("The change:")
        parts.extend(_part(change, "change", f"change-{name}.diff", CHANGE_CHARS, files, show))
    if hidden:
        parts.append(
            f"⚠️ **Invisible characters**: it holds {_listed(hidden)}, which a screen does not "
            "show or which reorder the text around them. They are shown above as ⟦U+…⟧."
        )
    if odd:
        parts.append(
            f"⚠️ **Look-alike characters**: it holds {_listed(odd)}, which pass for other "
            "letters (a name may not be the one it reads as). They are shown above as ⟦U+…⟧."
        )
    if show.blanks:
        parts.append(
            "⚠️ **Long blank runs**: long runs of spaces, tabs or blank lines are shown above "
            "as their count (⟦40 spaces⟧, ⟦9 blank lines⟧); what follows them runs too."
        )
    if show.long_lines:
        longest, number = max(show.long_lines)
        parts.append(
            f"⚠️ **Long lines**: {_count(len(show.long_lines), 'line')} above "
            f"{'is' if len(show.long_lines) == 1 else 'are'} longer than a phone's screen (the "
            f"longest, line {number:,}, has {longest:,} characters): read each to its end."
        )
    reason = compact_blanks(visible(decision.reason, show.odd))
    parts.append("Why I ask:")
    if len(code_block(reason)) > REASON_CHARS:
        # The reason is the policy's words (it may quote the command, which is shown above).
        parts.append(code_block(_fitted(reason, REASON_CHARS)))
        parts.append(f"(The reason goes on: {len(reason):,} characters in all.)")
    else:
        parts.append(code_block(reason))
    parts.append(
        "Tap an answer in the poll just below, or reply **yes** or **no** to this message — "
        "or **always** to allow it from now on. "
        f"No answer in {minutes} min means no."
    )
    return Question("\n\n".join(parts), tuple(files))


class _Shown:
    """How the question shows a piece of the call: hidden characters and `odd` look-alikes
    as ⟦U+…⟧, long blank runs as their count; and what it met on the way (for the notes)."""

    def __init__(self, odd: frozenset[str]) -> None:
        self.odd = odd
        self.blanks = False
        # (length, line number) of each shown line longer than LONG_LINE_CHARS.
        self.long_lines: list[tuple[int, int]] = []

    def __call__(self, text: str) -> str:
        marked = visible(text, self.odd)
        shown = compact_blanks(marked)
        self.blanks = self.blanks or shown != marked
        self.long_lines += [
            (len(line), number)
            for number, line in enumerate(shown.split("\n"), 1)
            if len(line) > LONG_LINE_CHARS
        ]
        return shown


def _listed(codes: list[str]) -> str:
    return ", ".join(codes[:8]) + (f" and {len(codes) - 8} more" if len(codes) > 8 else "")


def _part(
    text: str, what: str, file_name: str, budget: int, files: list[Attachment], show: _Shown
) -> list[str]:
    """A command or change: whole in a code block, or its ends and a pointer to its file."""
    shown = show(text)
    if len(code_block(shown)) <= budget:
        return [code_block(shown)]
    files.append(Attachment(file_name, text))
    lines = text.split("\n")
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    last = show(lines[-1])
    head = _fitted(shown, HEAD_CHARS)
    if "\n" in head:
        head = head.rsplit("\n", 1)[0]
    head_lines = head.count("\n") + 1
    tail = _fitted(last[::-1], LAST_LINE_CHARS)[::-1]
    last_label = "whole" if tail == last else f"its last {len(tail):,} of {len(last):,} characters"
    last = tail
    return [
        f"⚠️ **Too long to show here**: this {what} is {len(text):,} characters in "
        f"{_count(len(lines), 'line')}. All of it is in the attached file **{file_name}**, "
        "sent just before this question: read it before you answer.",
        f"Its start (up to line {head_lines:,}, cut there):",
        code_block(head),
        f"Its last line (line {len(lines):,}; {last_label}):",
        code_block(last),
    ]


def _fitted(text: str, budget: int) -> str:
    """The longest start of `text` (roughly) whose code block fits in `budget` characters:
    a fence is as long as the longest backtick run inside, so backticks count up to three
    times."""
    head = text[: budget - 8]
    if len(code_block(head)) > budget:
        head = text[: (budget - 8) // 3]
    return head


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _uncovered(
    uncovered: tuple[str, ...], file_name: str, files: list[Attachment], show: _Shown
) -> list[str]:
    """Every part no rule covers, or as many as fit and the count of the rest, all in a file."""
    blocks = [code_block(show(part)) for part in uncovered]
    if sum(len(block) + 2 for block in blocks) <= UNCOVERED_CHARS:
        return blocks
    whole = "\n\n".join(
        f"Part {number} of {len(uncovered)}:\n\n{code_block(part)}"
        for number, part in enumerate(uncovered, 1)
    )
    files.append(Attachment(file_name, whole + "\n"))
    shown: list[str] = []
    used = 0
    for block in blocks:
        if used + len(block) + 2 > UNCOVERED_CHARS - 300:
            break
        shown.append(block)
        used += len(block) + 2
    rest = len(uncovered) - len(shown)
    shown.append(
        f"⚠️ **{_count(rest, 'more part')} not shown here** (of "
        f"{len(uncovered):,}): all of them are in the attached file **{file_name}**, sent just "
        "before this question."
    )
    return shown


APPROVAL_EXPIRED = "⌛ No answer in time: I did not do it."


def attachment_failed(problem: str) -> str:
    """A part too long for the question could not be sent: nothing is asked, nothing runs."""
    return (
        f"❌ I could not send you the whole call ({problem}), so I did not ask and did not do it."
    )


QUESTION_CLOSED = (
    "That question is closed (answered or expired), so your answer approved nothing. If I "
    "still need it, I will ask again."
)


def which_question(count: int) -> str:
    """A bare yes / no while several questions are open."""
    return (
        f"{count} questions are open; reply to the one you mean (a bare yes or no could "
        "answer the wrong one)."
    )


def rule_learned(rule: str | None) -> str:
    """What an "always" answer became."""
    if rule is None:
        return (
            "I ran it this once, but no rule can cover exactly that call safely, so I will "
            "ask again next time."
        )
    if rule.startswith("mcp__"):
        return (
            f"Learned: {code_span(_plain(rule))} — every call of this tool runs without asking "
            "from now on."
        )
    return f"Learned: {code_span(_plain(rule))} — exactly this runs without asking from now on."


def _plain(rule: str) -> str:
    """A rule as the owner reads it: hidden characters and look-alikes as ⟦U+…⟧."""
    odd = frozenset(chr(int(code[2:], 16)) for code in lookalikes(rule))
    return compact_blanks(visible(rule, odd))


def poll_question(task: Task, change: bool) -> str:
    """The poll's own question: short, the whole call is in the message it refers to."""
    what = "make the change" if change else "run the command"
    return f"May I {what} shown just above ({task.short_id})?"


def poll_choices(rule: str | None) -> tuple[polls.Choice, ...]:
    """Approve once / Always (with the literal rule it would learn) / Deny; no Always when
    no rule can cover the call."""
    # Plain text on the phone, not a code block: what is hidden or passes for something
    # else is shown as ⟦U+…⟧ here too, and long blank runs by their count.
    always = (polls.Choice(ALWAYS, f"Always: allow {_plain(rule)}"),) if rule else ()
    return (
        polls.Choice(ONCE, "Approve once"),
        *always,
        polls.Choice(DENY, "Deny"),
    )


# How a poll ended, by outcome (an Approval's value, or why there was none).
POLL_OUTCOMES = {
    "yes": "✅ Approved once.",
    "no": "❌ Denied.",
    "timeout": "⌛ No answer in time: not done.",
    "withdrawn": "Withdrawn: the task stopped before an answer.",
}


def poll_ended(outcome: str, rule: str | None = None) -> str:
    """The text of a poll's end event."""
    if outcome == "always":
        # A typed "always" where no rule can cover the call runs it this once only.
        # Plain text, as the Always answer it repeats: hidden and look-alike characters marked.
        return f"✅ Approved, always: {_plain(rule)}" if rule else POLL_OUTCOMES["yes"]
    return POLL_OUTCOMES.get(outcome, POLL_OUTCOMES["withdrawn"])


PLAINTEXT_REACTION = (
    "Your reaction or vote reached me unencrypted, so I cannot tell it came from you and did "
    "nothing. Tap an answer in the poll under the question, or reply yes or no to it."
)
