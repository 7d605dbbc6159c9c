"""One error family: everything we raise on purpose is a DispatchError.

The CLI turns these into one clear line and an exit code; the agent turns ToolError into a
tool result the model sees. Code catches these kinds, not `Exception`; the few places that
catch broadly are last lines of defence that log the bug and keep serving: the CLI's top
level, `doctor` (every failure is a line of its report), opening a crypto store (any
failure means it is lost), the router (one bad event must not deafen the bot), the worker
(one bad task fails that task, not the queue), the voice lane (one bad voice message
fails that message), the scheduler (one bad schedule must not stop the others) and an MCP
server's supervisor (a server that fails in any way is restarted, never takes the daemon
down).
"""

from __future__ import annotations


class DispatchError(Exception):
    """Base of our errors: a message a person can act on, and optionally how to fix it."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        """The error as one line for a terminal."""
        return f"{self.message} — {self.fix}" if self.fix else self.message


class ConfigError(DispatchError):
    """The config file or an override is wrong: names the key, the problem and the fix."""

    exit_code = 2

    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"config: {key}: {problem}", fix=fix)
        self.key = key
        self.problem = problem


class StateError(DispatchError):
    """The state folder is missing, unreadable, or locked by another instance."""

    exit_code = 3


class AlreadyRunning(StateError):
    """Another dispatch-matrix holds the state folder's lock."""

    exit_code = 4


class DiskFull(StateError):
    """The state folder's file system refused a write: the daemon stops before anything is
    half-recorded, and a restart (the service's, or by hand) carries on once there is room."""


class HomeserverError(DispatchError):
    """The homeserver refused us or could not be reached."""

    exit_code = 5


class LoginError(HomeserverError):
    """The homeserver rejected the bot's credentials."""

    exit_code = 6


class TrustError(DispatchError):
    """An identity or device failed a trust check."""


class ToolError(DispatchError):
    """A tool call failed; the model sees the message as an error result."""


class ModelError(DispatchError):
    """The Messages API failed in a way retrying will not fix."""
