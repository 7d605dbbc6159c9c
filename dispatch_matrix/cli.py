"""The `dispatch-matrix` command: init, run, doctor, status, trust, pair, mcp import,
install-service and uninstall-service.

Every DispatchError becomes one line on stderr and its own exit code; a traceback means a
bug in dispatch-matrix, never a mistake of the user's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from dispatch_matrix import __version__
from dispatch_matrix.app.config import DEFAULT_MODEL, Config, default_config_path, load_config
from dispatch_matrix.core import logs, terminal
from dispatch_matrix.core.errors import DispatchError
from dispatch_matrix.core.faults import disk_full


def _say(text: str) -> None:
    # What a command prints may quote a homeserver, an owner or a model: shown, not obeyed.
    print(terminal.safe(text, lines=True), flush=True)


def _complain(text: str) -> None:
    # One line, whatever the message quotes: the module's promise for every error.
    print(f"dispatch-matrix: {terminal.safe(text)}", file=sys.stderr, flush=True)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="config file (default: $DISPATCH_MATRIX_CONFIG or store/config.toml)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with help for every command."""
    parser = argparse.ArgumentParser(
        prog="dispatch-matrix",
        description="A Claude agent on this computer, commanded from any Matrix client "
        "over an end-to-end encrypted room.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    init = commands.add_parser(
        "init",
        help="write a config after checking the bot can log in",
        description="Write a commented config after checking the bot's login, cross-sign "
        "the bot's device and open an encrypted DM with each owner (they accept the invite). "
        "On a terminal, asks for what flags leave out. --local-homeserver sets up a private "
        "Synapse in the state folder instead.",
    )
    _config_arg(init)
    init.add_argument(
        "--homeserver",
        help="homeserver URL, e.g. https://matrix.example.org (default: found from the "
        "bot's user id, as Element finds it)",
    )
    init.add_argument("--user-id", help="the bot's user id, e.g. @mybot:example.org")
    secret = init.add_mutually_exclusive_group()
    secret.add_argument(
        "--password",
        help="the bot's password (prefer --password-file; "
        "write --password=VALUE if it begins with -)",
    )
    secret.add_argument("--password-file", type=Path, help="a file holding the bot's password")
    init.add_argument(
        "--owner", action="append", default=[], help="an owner's user id (repeatable)"
    )
    init.add_argument("--model", default=DEFAULT_MODEL, help="Claude model id")
    init.add_argument("--workdir", default="~", help="where shell commands start")
    init.add_argument(
        "--allowed-root", action="append", default=[], help="a folder tools may touch (repeatable)"
    )
    init.add_argument(
        "--local-homeserver",
        action="store_true",
        help="set up a private Synapse (from PyPI) in the state folder, with a bot and an owner",
    )
    init.add_argument(
        "--listen", default="127.0.0.1", help="address the local homeserver listens on"
    )
    init.add_argument("--port", type=int, help="port of the local homeserver (default 8008)")
    init.add_argument("--owner-name", default="me", help="local homeserver: owner's username")
    init.add_argument("--bot-name", default="dispatch", help="local homeserver: bot's username")
    init.add_argument("--force", action="store_true", help="overwrite an existing config")
    init.add_argument(
        "--no-dm",
        action="store_true",
        help="do not open the encrypted DM with each owner (start a chat with the bot instead)",
    )

    run = commands.add_parser(
        "run",
        help="run the agent in the foreground until SIGTERM or Ctrl-C",
        description="Connect to the homeserver and work through the owner's messages.",
    )
    _config_arg(run)

    doctor = commands.add_parser(
        "doctor", help="check config, homeserver, login, crypto store, privacy and the API"
    )
    _config_arg(doctor)
    doctor.add_argument("--no-api", action="store_true", help="skip the Messages API check")

    status = commands.add_parser("status", help="show the bot's login and its task queue")
    _config_arg(status)

    trust = commands.add_parser(
        "trust",
        help="list pinned owner identities, or trust an owner's new identity",
        description="Without USER, list the pinned identities. With USER, pin the identity "
        "that owner publishes now (after they reset it); the bot obeys them again.",
    )
    _config_arg(trust)
    trust.add_argument("user", nargs="?", help="the owner's user id")

    pair = commands.add_parser(
        "pair",
        help="verify an owner's phone by comparing emoji (stop the daemon first)",
        description="Interactive emoji verification with an owner: start 'Verify' on the "
        "bot's profile in Element (or pass --owner and the bot asks), compare the emoji shown "
        "here with the phone, confirm on both. Afterwards each side shows the other as "
        "verified, and the bot trusts exactly that identity.",
    )
    _config_arg(pair)
    pair.add_argument("--owner", help="the owner to verify (default: wait for any owner)")
    pair.add_argument("--timeout", type=float, default=300, help="seconds to wait (default 300)")

    reset = commands.add_parser(
        "reset-identity",
        help="replace the bot's cross-signing keys (owners must verify it again)",
        description="Creates and publishes new cross-signing keys for the bot, replacing any "
        "the account has. Needed when the account's keys were made elsewhere. Stop the "
        "daemon first.",
    )
    _config_arg(reset)
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    _service_commands(commands)

    mcp = commands.add_parser("mcp", help="MCP servers: import them from Claude's config")
    mcp_commands = mcp.add_subparsers(dest="mcp_command", metavar="ACTION", required=True)
    imports = mcp_commands.add_parser(
        "import",
        help="add the servers of a Claude Desktop or Claude Code JSON file to the config",
        description="Reads the mcpServers of claude_desktop_config.json, .mcp.json or "
        "~/.claude.json and appends [mcp.servers.NAME] tables to the config. Values that "
        "look like secrets are written to files in the state folder (0600) and named in "
        "env_files / headers_files, never copied into the config.",
    )
    _config_arg(imports)
    imports.add_argument("file", type=Path, help="the JSON file to read")
    imports.add_argument(
        "--dry-run", action="store_true", help="show what would be written, write nothing"
    )
    return parser


def _service_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    install = commands.add_parser(
        "install-service",
        help="run it as a service: a systemd user unit (Linux) or a launchd agent (macOS)",
        description="Writes a service for this config that runs `dispatch-matrix run`, "
        "restarts it after a failure, then enables and starts it. Where the service manager "
        "cannot be reached, prints the commands to run in your login session.",
    )
    _config_arg(install)
    install.add_argument("--dry-run", action="store_true", help="print the unit, write nothing")
    install.add_argument(
        "--no-enable", action="store_true", help="write the unit, print how to enable it"
    )
    uninstall = commands.add_parser(
        "uninstall-service", help="stop and remove the service install-service wrote"
    )
    uninstall.add_argument(
        "--no-enable", action="store_true", help="only remove the file, call no service manager"
    )


def _config_path(value: Path | None) -> Path:
    if value is not None:
        return value
    env = os.environ.get("DISPATCH_MATRIX_CONFIG")
    return Path(env) if env else default_config_path()


def _init(args: argparse.Namespace) -> int:
    from dispatch_matrix.app.onboarding import InitAnswers, ask_missing, init

    password = args.password
    if args.password_file is not None:
        try:
            password = args.password_file.expanduser().read_text().strip()
        except OSError as err:
            raise DispatchError(
                f"cannot read {args.password_file}: {err.strerror}", fix="check the path"
            ) from err
    answers = InitAnswers(
        config_path=_config_path(args.config),
        homeserver=args.homeserver,
        user_id=args.user_id,
        password=password,
        owners=list(args.owner),
        model=args.model,
        workdir=args.workdir,
        allowed_roots=list(args.allowed_root) or ["~"],
        local=args.local_homeserver,
        local_host=args.listen,
        local_port=args.port,
        owner_name=args.owner_name,
        bot_name=args.bot_name,
        force=args.force,
        dm=not args.no_dm,
    )
    if not answers.local and sys.stdin.isatty():
        ask_missing(answers, input, getpass.getpass)
    init(answers, _say)
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        from dispatch_matrix.app.daemon import run
    except ImportError as err:
        raise _not_loaded(err) from err
    from dispatch_matrix.app.preflight import problems

    config = load_config(_config_path(args.config))
    # Everything wrong with the config is said now, before "connected … send a message".
    found = problems(config, os.environ, Path.home())
    if found:
        for extra in found[1:]:
            _complain(extra.one_line())
        raise found[0]
    try:
        return asyncio.run(run(config, _say))
    except KeyboardInterrupt:
        return 130
    except ImportError as err:
        # Imported only when the config asks for it: the MCP SDK, the shell's grammar.
        raise _not_loaded(err) from err


def _not_loaded(err: ImportError) -> DispatchError:
    """A library the daemon needs that is missing or broken: one line, not a traceback."""
    return DispatchError(
        f"the daemon could not be loaded: {err}",
        fix="reinstall dispatch-matrix in its environment (pip install .)",
    )


def _doctor(args: argparse.Namespace) -> int:
    from dispatch_matrix.app.doctor import run_doctor

    return run_doctor(_config_path(args.config), _say, check_api=not args.no_api, env=os.environ)


def _status(args: argparse.Namespace) -> int:
    from dispatch_matrix.app.status import show_status

    return show_status(load_config(_config_path(args.config)), _say)


@contextlib.contextmanager
def _homeserver_up(config: Config) -> Iterator[None]:
    """pair and reset-identity run with the daemon stopped (they take the state folder's
    lock), and so with the private homeserver it manages stopped too; trust may run beside
    the daemon (its held messages then run at the next sync). Start the private homeserver
    for the command when none answers, and stop it after; one already answering, the
    daemon's, is left alone."""
    section = config.local_homeserver
    if not section.enabled:
        yield
        return
    from dispatch_matrix.app.homeserver import LocalSynapse

    homeserver = LocalSynapse(
        folder=section.folder, server_name=section.server_name, host=section.host, port=section.port
    )
    if homeserver.is_up():
        yield
        return
    _say(f"Starting the local homeserver at {homeserver.url} …")
    homeserver.start()
    try:
        yield
    finally:
        homeserver.stop()


def _trust(args: argparse.Namespace) -> int:
    from dispatch_matrix.identity.admin import trust

    config = load_config(_config_path(args.config))
    with _homeserver_up(config):
        return asyncio.run(trust(config, args.user, _say))


def _reset_identity(args: argparse.Namespace) -> int:
    from dispatch_matrix.identity.admin import reset_identity

    config = load_config(_config_path(args.config))
    if not args.yes:
        if not sys.stdin.isatty():
            raise DispatchError("reset-identity replaces the bot's keys", fix="confirm with --yes")
        answer = input(
            "Replace the bot's cross-signing identity? Owners must verify it again. [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            _say("Nothing changed.")
            return 1
    with _homeserver_up(config):
        return asyncio.run(reset_identity(config, _say))


async def _ask_match(emoji: list[tuple[str, str]]) -> bool:
    """Ask on the terminal whether the emoji match; cancellable (the phone may cancel)."""
    print("Do they match what your phone shows? [y/N] ", end="", flush=True)
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[str] = loop.create_future()

    def on_input() -> None:
        if not answered.done():
            answered.set_result(sys.stdin.readline())

    loop.add_reader(sys.stdin.fileno(), on_input)
    try:
        line = await answered
    finally:
        loop.remove_reader(sys.stdin.fileno())
    return line.strip().lower() in {"y", "yes"}


def _pair(args: argparse.Namespace) -> int:
    from dispatch_matrix.identity.pairing import pair

    config = load_config(_config_path(args.config))
    logs.setup("warning")
    password = config.matrix.secret_password()
    logs.REDACTOR.add(password.get_secret_value() if password else None)
    if not sys.stdin.isatty():
        raise DispatchError("pairing asks you to compare emoji", fix="run it on a terminal")
    with _homeserver_up(config):
        _say("Waiting for the verification… (in Element: the bot's profile → Verify)")
        return asyncio.run(pair(config, _say, _ask_match, owner=args.owner, timeout_s=args.timeout))


def _config_home() -> Path | None:
    value = os.environ.get("XDG_CONFIG_HOME")
    return Path(value) if value else None


def _install_service(args: argparse.Namespace) -> int:
    from dispatch_matrix.app.service import ServiceSpec, install

    path = _config_path(args.config).expanduser().absolute()
    config = load_config(path)
    # The script beside this interpreter: the venv's, whatever PATH says at boot.
    executable = Path(sys.executable).absolute().with_name("dispatch-matrix")
    spec = ServiceSpec(
        executable=executable,
        config=path,
        workdir=path.parent,
        env_file=(_config_home() or Path.home() / ".config") / "dispatch-matrix" / "env",
        log_dir=config.state_dir.absolute() / "logs",
    )
    return install(
        spec,
        platform=sys.platform,
        home=Path.home(),
        config_home=_config_home(),
        say=_say,
        dry_run=args.dry_run,
        enable=not args.no_enable,
    )


def _uninstall_service(args: argparse.Namespace) -> int:
    from dispatch_matrix.app.service import uninstall

    return uninstall(
        platform=sys.platform,
        home=Path.home(),
        config_home=_config_home(),
        say=_say,
        enable=not args.no_enable,
    )


def _mcp(args: argparse.Namespace) -> int:
    from dispatch_matrix.connectors.import_cmd import run_import

    return run_import(_config_path(args.config), args.file, _say, load_config, dry_run=args.dry_run)


def _interrupted(command: str) -> str:
    """What an interrupted command tells the user (pure)."""
    if command == "init":
        return (
            "init interrupted: no config was written unless it said 'Wrote' — run init again "
            "(with --force if it did)"
        )
    return f"{command} interrupted"


_HANDLERS = {
    "init": _init,
    "run": _run,
    "doctor": _doctor,
    "status": _status,
    "trust": _trust,
    "pair": _pair,
    "reset-identity": _reset_identity,
    "mcp": _mcp,
    "install-service": _install_service,
    "uninstall-service": _uninstall_service,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    handler = _HANDLERS[args.command]
    # Commands speak for themselves; library chatter stays out unless it is an error.
    # (`run` sets up full logging for the daemon.)
    logs.setup("error")
    # Everything we create (state folder, crypto store, logs, ledger) is private to us.
    os.umask(0o077)
    try:
        return handler(args)
    except DispatchError as err:
        _complain(err.one_line())
        return err.exit_code
    except (KeyboardInterrupt, EOFError):
        # Ctrl-C (or Ctrl-D at a question) is the user's word, not a bug: one line, and the
        # shell's code for an interrupt. init writes the config last, after the login.
        _complain(_interrupted(args.command))
        return 130
    except BrokenPipeError:
        # `dispatch-matrix status | head -1`: the reader has gone, which is no bug. Stdout
        # goes nowhere from here, so the interpreter's last flush does not fail either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as err:  # noqa: BLE001 - the last line of defence: a bug, said plainly
        # A full disk is the machine's fault wherever it struck (init's first write, say).
        full = disk_full(err, _config_path(getattr(args, "config", None)).parent.absolute())
        if full is not None:
            # The daemon's fix says a restart carries on; any other command just runs again.
            again = f"free some space there, then run {args.command} again"
            _complain(full.one_line() if args.command == "run" else f"{full.message} — {again}")
            return full.exit_code
        logs.get(__name__).exception("cli.crashed", command=args.command)
        _complain(
            f"internal error ({err.__class__.__name__}: {err}); this is a bug — the traceback"
            " is in the log (logs/dispatch.jsonl in the state folder)"
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
