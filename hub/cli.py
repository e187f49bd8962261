"""The `omnihub` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from hub import __version__
from hub.errors import HubError
from hub.settings import Settings

EPILOG = (
    "Every option is also an environment variable OMNIHUB_<NAME> (e.g. OMNIHUB_API_PORT). "
    "Docs: README.md and deploy/README.md."
)


def _settings(**overrides: Any) -> Settings:
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise click.UsageError(f"setting {field}: {first['msg']}") from None


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _fail(exc: BaseException) -> None:
    click.echo(f"omnihub: error: {exc}", err=True)
    sys.exit(1)


def stack_options(fn: Any) -> Any:
    opts = [
        click.option(
            "--data-dir", type=click.Path(path_type=Path), help="data folder [./.omnihub]"
        ),
        click.option("--host", help="address to bind [127.0.0.1]"),
        click.option("--api-port", type=int, help="HTTP API port [8400]"),
        click.option("--worker-port", type=int, help="worker health/metrics port [8401]"),
        click.option("--kafka-port", type=int, help="embedded broker port [9400]"),
        click.option("--s3-port", type=int, help="embedded S3 port [9401]"),
        click.option("--mongo-port", type=int, help="embedded MongoDB port [27400]"),
        click.option(
            "--smtp-port", "email_smtp_port", type=int, help="inbound SMTP port of email [2525]"
        ),
        click.option(
            "--webchat-port", type=int, help="web chat widget/WebSocket port [8405]"
        ),
        click.option(
            "--partitions", type=int, help="partitions of created topics [4; omnihub up: 1]"
        ),
        click.option("--log-level", help="debug|info|warning [info]"),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="omnihub")
def cli() -> None:
    """omnihub — every customer message from every channel on one timeline, routed to the
    right support agent.

    \b
    Start here:   omnihub up        (everything on this machine, data in ./.omnihub)
    Production:   omnihub init; omnihub worker; omnihub api   (see deploy/)
    """


@cli.command(epilog=EPILOG)
@stack_options
def up(**opts: Any) -> None:
    """Run the embedded stack: broker, database, pipeline worker and API, on loopback.

    Prints where everything listens, then a line starting `omnihub ready` with key=value
    pairs for scripts. Ctrl-C stops everything; data stays for the next run.
    """
    from hub.embedded import run_up

    settings = _settings(**opts)
    _logging(settings.log_level if settings.log_level != "info" else "warning")
    try:
        sys.exit(asyncio.run(run_up(settings, out=lambda line: click.echo(line))))
    except HubError as exc:
        _fail(exc)


@cli.command(epilog=EPILOG)
@stack_options
def worker(**opts: Any) -> None:
    """Run the pipeline worker (Faust): inbound messages → identities, timeline, events."""
    settings = _settings(**opts)
    _logging(settings.log_level)
    from faust import Worker

    from hub.bootstrap import init
    from pipeline.app import create_app

    try:
        asyncio.run(init(settings, timeout=settings.ready_timeout))
    except Exception as exc:
        _fail(HubError(f"cannot reach Kafka/MongoDB to prepare topics and indexes: {exc}"))
    app = create_app(settings)
    Worker(
        app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False
    ).execute_from_commandline()


@cli.command(epilog=EPILOG)
@stack_options
def api(**opts: Any) -> None:
    """Run the API service: public HTTP API, agent WebSocket and the router."""
    settings = _settings(**opts)
    _logging(settings.log_level)
    from hub.api import serve

    try:
        serve(settings)
    except (HubError, FileNotFoundError, OSError) as exc:
        _fail(exc)


@cli.command(epilog=EPILOG)
@stack_options
def init(**opts: Any) -> None:
    """Create Kafka topics and MongoDB indexes (idempotent), then exit."""
    settings = _settings(**opts)
    _logging(settings.log_level)
    from hub.bootstrap import init as do_init

    try:
        created = asyncio.run(do_init(settings, timeout=settings.ready_timeout))
    except Exception as exc:
        _fail(HubError(f"init failed: {exc}"))
    click.echo(f"topics created: {', '.join(created) or 'none (all existed)'}; indexes ensured")


@cli.command(epilog=EPILOG)
@stack_options
@click.option(
    "--repair",
    is_flag=True,
    help="also fix what can be fixed safely: messages and identifiers left on merged customers",
)
def doctor(repair: bool, **opts: Any) -> None:
    """Check what omnihub needs: binaries, Kafka, MongoDB, topics, merges, the worker and
    the API."""
    from hub.doctor import run_doctor

    settings = _settings(**opts)
    ok = asyncio.run(run_doctor(settings, out=lambda line: click.echo(line), repair=repair))
    sys.exit(0 if ok else 1)


@cli.group(epilog=EPILOG)
def connector() -> None:
    """Run a channel connector as its own process (omnihub up starts them for you)."""


@connector.command("email", epilog=EPILOG)
@stack_options
def connector_email(**opts: Any) -> None:
    """The email channel: inbound SMTP server (point your MTA at it), IMAP mailboxes and
    agent replies over SMTP. Inboxes: OMNIHUB_EMAIL_INBOXES or OMNIHUB_EMAIL_INBOXES_FILE."""
    settings = _settings(**opts)
    _logging(settings.log_level)
    from connectors.email.config import ConfigError
    from connectors.email.service import serve

    try:
        asyncio.run(serve(settings))
    except (ConfigError, OSError, RuntimeError) as exc:
        _fail(exc)


@connector.command("webchat", epilog=EPILOG)
@stack_options
def connector_webchat(**opts: Any) -> None:
    """The web chat channel: the widget script, its WebSocket, uploads and a demo page; agent
    replies pushed live. Inboxes: OMNIHUB_WEBCHAT_INBOXES or OMNIHUB_WEBCHAT_INBOXES_FILE
    (unset: one inbox 'default' for pages on this machine)."""
    settings = _settings(**opts)
    _logging(settings.log_level)
    from connectors.webchat.config import ConfigError
    from connectors.webchat.service import serve

    try:
        asyncio.run(serve(settings))
    except (ConfigError, OSError, RuntimeError, ValueError) as exc:
        _fail(exc)


@cli.group(epilog=EPILOG)
def email() -> None:
    """Email channel tools."""


@email.command("backfill", epilog=EPILOG)
@click.option("--mailbox", default="INBOX", show_default=True, help="IMAP folder to read")
@click.option(
    "--since",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="first day to fetch (YYYY-MM-DD, the server's INTERNALDATE)",
)
@click.option("--inbox", "address", help="inbox address (default: the only one with IMAP)")
@stack_options
def email_backfill(mailbox: str, since: Any, address: str | None, **opts: Any) -> None:
    """Fetch a mailbox's mail since a date into omnihub again, e.g. after an outage of any
    length. Safe to repeat or interrupt: mail already stored is not stored twice, and a run
    that was stopped continues where it stopped."""
    settings = _settings(**opts)
    _logging(settings.log_level if settings.log_level != "info" else "warning")
    from connectors.email.config import ConfigError
    from connectors.email.service import run_backfill

    with click.progressbar(
        length=0, label=f"backfill {mailbox} since {since.date()}", file=sys.stderr,
        show_pos=True, show_eta=True,
    ) as bar:
        def progress(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)
            if not sys.stderr.isatty():
                click.echo(f"progress {done}/{total}", err=True)

        try:
            total = asyncio.run(
                run_backfill(settings, mailbox, since.date(), address, progress=progress)
            )
        except (ConfigError, OSError, HubError) as exc:
            _fail(exc)
    click.echo(f"backfill done: {total} messages since {since.date()} in {mailbox}")


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(f"omnihub {__version__}")


def main() -> None:
    cli(prog_name="omnihub")
