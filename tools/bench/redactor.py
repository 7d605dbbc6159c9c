"""How long the secrets redactor takes per text: ns per call on 2 KB lines.

The redactor runs on every log record and every outgoing message, so it must stay cheap.
Prints the figures and writes `tools/bench/results/redactor.json`; asserts nothing.

    .venv/bin/python tools/bench/redactor.py [--runs 2000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from dispatch_matrix.core.logs import Redactor

# Ordinary text of a busy log or an answer: paths, SHAs, UUIDs, numbers, a URL, prose.
_BENIGN_PARTS = [
    "task.finished task=3f2a9c1 room=!AbCdEfGh:example.org steps=4 tokens=1200 ",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 touched src/app/main.py ",
    "uuid 123e4567-e89b-12d3-a456-426614174000 at 2026-01-02T03:04:05Z ",
    "see https://github.com/org/repo/pull/42 for the diff; max_tokens=8192 ",
    "The quick brown fox jumps over the lazy dog while the tests pass in 3.2 s. ",
]
_SECRET_PARTS = [
    "export ANTHROPIC_API_KEY=sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 ",
    "token syt_Ym90_AbCdEfGhIjKlMnOpQrSt_1a2B3c and DB_PASSWORD=correct-horse ",
    "remote https://me:hunter2hunter2@git.example.org/repo.git ",
]


def line(parts: list[str], size: int = 2048) -> str:
    """Parts repeated up to `size` characters."""
    text = ""
    while len(text) < size:
        for part in parts:
            text += part
    return text[:size]


def measure(redactor: Redactor, text: str, runs: int) -> float:
    """Median of five batches, in ns per call."""
    batches = []
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(runs):
            redactor.text(text)
        batches.append((time.perf_counter_ns() - start) / runs)
    return statistics.median(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/redactor.json")
    args = parser.parse_args()
    redactor = Redactor()
    # As at run time: the bot's password, its access token, the API key, a voice key.
    redactor.add("bot-password-123", "syt_Ym90_registered_token", "sk-ant-x-123456", "voicekey1")
    cases = {
        "benign_2k": line(_BENIGN_PARTS),
        "mixed_2k": line(_BENIGN_PARTS + _SECRET_PARTS),
        "short_80": _BENIGN_PARTS[0],
    }
    figures = {name: round(measure(redactor, text, args.runs)) for name, text in cases.items()}
    for name, ns in figures.items():
        print(f"{name:10s} {ns:>9,} ns/op")
    result = {
        "ns_per_op": figures,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "load": os.getloadavg(),
            "python": platform.python_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
