"""The daemon's first connection: log in or restore, retrying while the homeserver is away,
and stopping at once when no retry can help.

A homeserver that is down, or a name that does not resolve yet (the network comes up after
the service), may come back: the login is retried with capped backoff, and said once in the
log with the time of the next try (each further try is a debug line; a changed reason is
said again). A URL that is wrong in a way the login cannot say is found by one probe of it
(`reach.probe`), made at the first failure or when the first try hangs: https on a
plain-HTTP port (each try hangs its whole time limit without a word), http on a TLS port,
a URL with a path ('M_UNRECOGNIZED'). Only a changed config fixes those (`Reach.lasting`),
so `run` stops with the diagnosis as a config error (exit 2, which a service does not
restart into) instead of retrying every minute.

A device this state folder lost the keys of is replaced at the login; `retire_device`
deletes the old one from the account (for `run` and `init` alike) and keeps what the owners
are to be told.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime

from dispatch_matrix.app.reach import Reach, probe
from dispatch_matrix.core import logs
from dispatch_matrix.core.backoff import Backoff
from dispatch_matrix.core.errors import ConfigError, HomeserverError, LoginError
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import Unreachable
from dispatch_matrix.matrix.uia import ApprovalInBrowser
from dispatch_matrix.store import Connection
from dispatch_matrix.store.db import Session

log = logs.get(__name__)

MAX_BACKOFF_S = 60.0
# A first try slower than this is looked into (one probe of the homeserver's URL).
DIAGNOSE_AFTER_S = 5.0


def lasting_error(reach: Reach) -> ConfigError | None:
    """The error that ends `run` for a probe's finding, when retrying cannot fix it (pure):
    a config error, so a service stays stopped (exit 2) rather than restart into it."""
    if reach.ok or not reach.lasting:
        return None
    return ConfigError("matrix.homeserver", reach.problem, reach.fix)


def logged_out(can_log_in: bool) -> HomeserverError:
    """What `run` says when the homeserver stops accepting the bot's login while it serves
    (another session signed it out, or removed its device): a password logs it in again at
    the next start, so a service restarts into it (exit 5); without one only the operator
    can (exit 6, which a service does not restart into). Pure."""
    problem = (
        "the homeserver no longer accepts the bot's login (signed out from another session, "
        "or its device was removed)"
    )
    if can_log_in:
        return HomeserverError(
            problem, fix="start it again: it logs in with its password (a service restarts it)"
        )
    return LoginError(
        problem,
        fix="set [matrix] password or password_file, or a new access_token_file, "
        "then start it again",
    )


def next_try_at(now: float, wait_s: float) -> str:
    """The local wall-clock time of the next try, as a person reads it (pure)."""
    return datetime.fromtimestamp(now + wait_s).astimezone().strftime("%H:%M:%S")


async def connect(
    client: MatrixClient,
    password: str | None,
    access_token: str | None = None,
    diagnose_after_s: float = DIAGNOSE_AFTER_S,
    now: Callable[[], float] = time.time,
    backoff: Backoff | None = None,
) -> Session:
    """Log in or restore, retrying while the homeserver is away; raises ConfigError at once
    for a URL that no retry can fix (module docstring). A quick start never probes."""
    failed = asyncio.Event()
    diagnosis = asyncio.create_task(_diagnose(client.homeserver, failed, diagnose_after_s))
    pace = backoff or Backoff(1.0, MAX_BACKOFF_S)
    login = asyncio.create_task(
        _login(client, password, access_token, failed, diagnosis, now, pace)
    )
    try:
        await asyncio.wait({login, diagnosis}, return_when=asyncio.FIRST_COMPLETED)
        if not login.done():
            lasting = lasting_error(diagnosis.result())
            if lasting is not None:
                raise lasting
        return await login
    finally:
        for job in (login, diagnosis):
            job.cancel()
        for job in (login, diagnosis):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job


async def _diagnose(url: str, failed: asyncio.Event, after_s: float) -> Reach:
    """One probe of `url`, at the first failed try or after `after_s`, whichever is first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(failed.wait(), after_s)
    reach = await probe(url)
    if not reach.ok and not failed.is_set():
        # The first try hangs without a word: say what the URL's probe found meanwhile.
        log.warning("matrix.url_problem", error=reach.problem, fix=reach.fix)
    return reach


async def _login(
    client: MatrixClient,
    password: str | None,
    access_token: str | None,
    failed: asyncio.Event,
    diagnosis: asyncio.Task[Reach],
    now: Callable[[], float],
    backoff: Backoff,
) -> Session:
    said = ""  # the failure last said: a try that fails alike is only a debug line
    tries = 0
    while True:
        tries += 1
        try:
            session = await client.connect(password, access_token)
        except Unreachable as err:
            failed.set()
            wait = backoff.next()
            reach = await asyncio.shield(diagnosis)
            if lasting_error(reach) is not None:
                await asyncio.Event().wait()  # connect raises it, and cancels this
            if err.message != said:
                # The probe's sentence says more than nio's ("the host name 'x' is not
                # found"), for the failure it was made for.
                probed = not said and not reach.ok
                if probed:
                    error, fix = reach.problem, f"{reach.fix} ([matrix] homeserver)"
                else:
                    error, fix = err.message, err.fix or ""
                said = err.message
                log.warning(
                    "matrix.unreachable",
                    error=error,
                    fix=fix,
                    next_try=next_try_at(now(), wait),
                    then=f"retrying until it answers, at most every {MAX_BACKOFF_S:.0f} s",
                )
            else:
                log.debug("matrix.retrying", error=err.message, retry_in=wait, tries=tries)
            await asyncio.sleep(wait)
            continue
        except LoginError:
            raise
        except HomeserverError as err:
            # A homeserver that answers the login with nonsense: the URL is probably wrong.
            reach = await probe(client.homeserver)
            if reach.ok:
                raise
            raise lasting_error(reach) or HomeserverError(
                reach.problem, fix=f"{reach.fix} as [matrix] homeserver"
            ) from err
        if tries > 1:
            log.info("matrix.reachable", tries=tries)
        return session


# The device a login replaced, until the rooms are told (`start_notices.py`), and why it
# could not be deleted ("" when it was), for that notice.
REPLACED_META = "announce_replaced_device"
REMOVAL_META = "announce_replaced_device_removal"


async def retire_device(
    client: MatrixClient, db: Connection, old: str, password: str | None
) -> None:
    """Delete the device whose keys were lost, and remember to tell the owners (with what
    to do when the homeserver would not let the bot do it: MAS wants a browser)."""
    removal = ""
    try:
        await client.delete_device(old, password)
        log.info("matrix.old_device_deleted", device=old)
    except (HomeserverError, ApprovalInBrowser) as err:
        removal = err.one_line()
        log.error("matrix.old_device_not_deleted", device=old, error=err.message, fix=err.fix)
    db.set_meta(REPLACED_META, old)
    db.set_meta(REMOVAL_META, removal)
