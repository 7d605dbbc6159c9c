"""A small real MCP server for the tests, written with the `mcp` package (stdio).

Tools: add_note, list_notes (notes kept in $NOTES_FILE, so they outlive a restart),
check_token (proves $NOTES_TOKEN reached it without showing it), slow (sleeps), fail
(raises), grow (adds a tool and says the list changed), picture (returns a PNG).
It writes its pid to $NOTES_PID_FILE, one line per start, so a test can kill it; with
$NOTES_OUTLIVE_STDIN set it stays up after its stdin ends, as a careless server does.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.utilities.types import Image

server = MCPServer("notes")
NOTES = Path(os.environ.get("NOTES_FILE", "notes.txt"))
# The smallest valid PNG: one transparent pixel.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


@server.tool()
def add_note(text: str) -> str:
    """Add a note to the notebook."""
    with NOTES.open("a") as notes:
        notes.write(text.replace("\n", " ") + "\n")
    return f"added note {len(NOTES.read_text().splitlines())}: {text}"


@server.tool()
def list_notes() -> str:
    """List every note in the notebook."""
    lines = NOTES.read_text().splitlines() if NOTES.exists() else []
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1)) or "(no notes)"


@server.tool()
def check_token() -> str:
    """Say whether the server got its token (never the token itself)."""
    token = os.environ.get("NOTES_TOKEN", "")
    digest = hashlib.sha256(token.encode()).hexdigest()[:12]
    return f"token present: {bool(token)}, {len(token)} chars, sha256 {digest}"


@server.tool()
def slow(seconds: float) -> str:
    """Sleep a while, then answer."""
    time.sleep(seconds)
    return f"slept {seconds}s"


@server.tool()
def fail() -> str:
    """Always fails."""
    raise RuntimeError("the notebook is on fire")


@server.tool()
async def grow(ctx: Context) -> str:
    """Add a tool named `fresh` and announce that the tool list changed."""
    server.add_tool(lambda: "fresh!", name="fresh", description="A tool added at run time.")
    await ctx.notify_tools_changed()
    # The 2025 protocol's notice; on the 2026 one only the listen stream carries it.
    with contextlib.suppress(Exception):
        await ctx.request_context.session.send_tool_list_changed()
    return "grown"


@server.tool()
def picture() -> Image:
    """A one-pixel picture."""
    return Image(data=PIXEL, format="png")


def serve_http(port: int, token: str) -> None:
    """Streamable HTTP on loopback, answering only requests with `Authorization: Bearer
    <token>`."""
    import uvicorn

    app = server.streamable_http_app()

    async def guarded(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization", b"").decode() != f"Bearer {token}":
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await app(scope, receive, send)

    uvicorn.run(guarded, host="127.0.0.1", port=port, log_level="info")


if __name__ == "__main__":
    pid_file = os.environ.get("NOTES_PID_FILE")
    if pid_file:
        with Path(pid_file).open("a") as out:
            out.write(f"{os.getpid()}\n")
    print(f"notes server {os.getpid()} starting", file=sys.stderr, flush=True)
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        serve_http(int(sys.argv[2]), os.environ["NOTES_HTTP_TOKEN"])
    else:
        try:
            server.run("stdio")
        finally:
            if os.environ.get("NOTES_OUTLIVE_STDIN"):
                # As a server that never notices its client is gone: only a signal ends
                # it (silently: a write to the dead daemon's pipe would end it too).
                time.sleep(600)
