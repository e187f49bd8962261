"""A small process supervisor: start children in order, wait until each is ready, restart a
crashed one with backoff, and stop them all (reverse order, SIGTERM then SIGKILL) on request.

Children run in their own session so a terminal's Ctrl-C reaches only the supervisor, which
then stops them in the right order; each child also gets PR_SET_PDEATHSIG so it dies with the
supervisor even if the supervisor is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from hub.errors import StartupFailed

log = logging.getLogger("omnihub.supervisor")

Probe = Callable[[], Awaitable[bool]]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    ready: Probe
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    after_ready: Callable[[], Awaitable[None]] | None = None
    stop_group: int = 0
    """Children stop group by group, highest first (services before the servers they use)."""


@dataclass
class Child:
    spec: ChildSpec
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0


def tail(path: Path, lines: int = 15) -> str:
    try:
        data = path.read_bytes()[-8192:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class Supervisor:
    def __init__(self, log_dir: Path, *, ready_timeout: float, stop_timeout: float) -> None:
        self.log_dir = log_dir
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self.on_event: Callable[[str], None] = lambda line: None

    async def _spawn(self, child: Child) -> None:
        spec = child.spec
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with child.log_path.open("ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {spec.name}\n".encode())
            out.flush()
            child.proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **spec.env},
                cwd=str(spec.cwd) if spec.cwd else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        child.started_at = time.monotonic()

    async def _wait_ready(self, child: Child) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        assert child.proc is not None
        while True:
            if child.proc.returncode is not None:
                raise StartupFailed(
                    f"{child.spec.name} exited with code {child.proc.returncode} while starting; "
                    f"last lines of {child.log_path}:\n{tail(child.log_path)}"
                )
            with contextlib.suppress(Exception):
                if await child.spec.ready():
                    break
            if loop.time() >= deadline:
                raise StartupFailed(
                    f"{child.spec.name} was not ready after {self.ready_timeout:.0f}s; "
                    f"see {child.log_path}:\n{tail(child.log_path)}"
                )
            await asyncio.sleep(0.1)
        if child.spec.after_ready is not None:
            await child.spec.after_ready()

    async def start(self, spec: ChildSpec) -> Child:
        child = Child(spec, self.log_dir / f"{spec.name}.log")
        self.children.append(child)
        await self._spawn(child)
        await self._wait_ready(child)
        self._watchers.append(asyncio.create_task(self._watch(child), name=f"watch-{spec.name}"))
        return child

    async def _watch(self, child: Child) -> None:
        """Restart a child that exits on its own, with exponential backoff (1 s … 30 s)."""
        backoff = 1.0
        while not self._stopping:
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stopping:
                return
            if time.monotonic() - child.started_at > 60:
                backoff = 1.0  # it ran fine for a while: this is a fresh failure
            child.restarts += 1
            msg = (
                f"{child.spec.name} exited with code {code}; restarting in {backoff:.0f}s "
                f"(restart #{child.restarts}, log {child.log_path})"
            )
            log.warning("supervisor.child_exited name=%s code=%s", child.spec.name, code)
            self.on_event(msg)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            if self._stopping:
                return
            try:
                await self._spawn(child)
                await self._wait_ready(child)
                self.on_event(f"{child.spec.name} is back")
            except StartupFailed as exc:
                self.on_event(f"{child.spec.name} failed to restart: {exc}")

    async def stop(self) -> None:
        """Stop every child: group by group, SIGTERM, then SIGKILL after the time budget."""
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        groups = sorted({c.spec.stop_group for c in self.children}, reverse=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_timeout
        for i, group in enumerate(groups):
            members = [c for c in self.children if c.spec.stop_group == group]
            # leave the later groups a share of the budget
            budget = max(0.5, (deadline - loop.time()) / (len(groups) - i) * 1.5)
            await asyncio.gather(*(self._stop_child(c, budget) for c in members))

    async def _stop_child(self, child: Child, budget: float) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), budget)
        except TimeoutError:
            log.warning("supervisor.kill name=%s after=%.1fs", child.spec.name, budget)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        # anything the child itself started dies with its session
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
