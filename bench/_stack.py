"""Helpers of bench/ingest.py: run `omnihub up` as a child, and read /proc about its processes.

Kept apart so ingest.py reads as the benchmark itself. Linux only (/proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# Run as `python bench/ingest.py`, the bench/ folder comes first on sys.path, where a module
# named like a stdlib one (a benchmark called email.py) would shadow it (aiohttp, pydantic and
# smtplib import `email`). The benchmarks import this module before anything else that is not
# stdlib, so move the folder to the end of the path here: the standard library wins, and the
# benchmarks' own helpers (_floor) still import.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

_PR_SET_PDEATHSIG = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _sigint_with_parent() -> None:  # child side, between fork and exec
    # If the bench dies without cleaning up (SIGKILL), `omnihub up` still gets its Ctrl-C.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def free_ports(count: int, lo: int, hi: int) -> list[int]:
    """``count`` distinct ports in [lo, hi] that nobody listens on right now."""
    candidates = list(range(lo, hi + 1))
    random.Random(os.getpid() ^ time.time_ns()).shuffle(candidates)
    found: list[int] = []
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"fewer than {count} free ports in {lo}-{hi}")


# ---------------------------------------------------------------------------- /proc
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now."""
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def start_time(pid: int) -> int | None:
    """Start time of the process in clock ticks since boot: (pid, start) names it uniquely."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def role(pid: int) -> str:
    """A short name for a process of the embedded stack, from its command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    words = [a.decode(errors="replace") for a in argv if a]
    text = " ".join(words)
    if pid == os.getpid():
        return "bench"
    for needle, name in (("-m hub.s3", "s3"), ("tansu", "tansu"), ("secantusd", "secantusdb")):
        if needle in text:
            return name
    m = re.search(r"-m hub (\w+)", text)
    if m:
        return m.group(1)  # worker, api
    if " up " in f"{text} ":
        return "omnihub up"
    return Path(words[0]).name if words else f"pid {pid}"


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _CLK_TCK  # minus idle and iowait


class CpuMeter:
    """CPU used by a set of processes between :meth:`start` and :meth:`stop`, by role, and by
    every other process of the machine (``others``: the machine is shared)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.names = {pid: role(pid) for pid in pids}
        self.t0 = 0.0
        self.c0: dict[int, float] = {}
        self.m0 = 0.0
        self.pct: dict[str, float] = {}
        self.wall = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {pid: cpu_seconds(pid) for pid in self.pids}
        self.m0 = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        """Percent of one core used by each role (200 % = both cores of this machine)."""
        self.wall = max(time.monotonic() - self.t0, 1e-9)
        pct: dict[str, float] = {}
        for pid in self.pids:
            used = cpu_seconds(pid) - self.c0.get(pid, 0.0)
            name = self.names[pid]
            pct[name] = pct.get(name, 0.0) + 100.0 * used / self.wall
        pct = dict(sorted(pct.items(), key=lambda kv: -kv[1]))
        machine = 100.0 * (machine_busy_seconds() - self.m0) / self.wall
        pct["others"] = max(0.0, machine - sum(pct.values()))
        self.pct = pct
        return pct


# ---------------------------------------------------------------------------- omnihub up
@dataclass
class EmbeddedStack:
    """`omnihub up` run as a child process in its own session; stopped with SIGINT."""

    omnihub: str
    data_dir: Path
    ports: dict[str, int]
    partitions: int = 1  # hub.embedded.EMBEDDED_PARTITIONS, what `omnihub up` creates
    ready_timeout: float = 120.0
    proc: asyncio.subprocess.Process | None = None
    info: dict[str, str] = field(default_factory=dict)
    ready_s: float = 0.0
    output: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None
    _started: dict[int, int | None] = field(default_factory=dict)

    async def start(self) -> dict[str, str]:
        argv = [self.omnihub, "up", "--data-dir", str(self.data_dir),
                "--partitions", str(self.partitions)]
        for name, port in self.ports.items():
            argv += [f"--{name}-port", str(port)]
        t0 = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # the terminal's Ctrl-C reaches the bench, which stops it
            preexec_fn=_sigint_with_parent,
        )
        ready: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(ready))
        try:
            self.info = await asyncio.wait_for(asyncio.shield(ready), self.ready_timeout)
        except TimeoutError:
            raise RuntimeError(
                f"omnihub up was not ready after {self.ready_timeout:.0f}s:\n" + self.tail()
            ) from None
        self.ready_s = time.monotonic() - t0
        return self.info

    async def _read(self, ready: asyncio.Future[dict[str, str]]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            if line.startswith("omnihub ready ") and not ready.done():
                pairs = (p.split("=", 1) for p in line.removeprefix("omnihub ready ").split())
                ready.set_result({k: v for k, v in pairs})
        if not ready.done():
            ready.set_exception(
                RuntimeError(f"omnihub up exited before it was ready:\n{self.tail()}")
            )

    def tail(self, lines: int = 25) -> str:
        return "\n".join(f"  | {line}" for line in self.output[-lines:])

    def pids(self) -> list[int]:
        """The `omnihub up` process and all its descendants (remembered for the stop)."""
        if self.proc is None or self.proc.returncode is not None:
            return []
        pids = tree(self.proc.pid)
        for pid in pids:
            self._started.setdefault(pid, start_time(pid))
        return pids

    def rss_mb(self) -> tuple[float, dict[str, float]]:
        by_role: dict[str, float] = {}
        for pid in self.pids():
            name = role(pid)
            by_role[name] = by_role.get(name, 0.0) + rss_kb(pid) / 1024
        return sum(by_role.values()), dict(sorted(by_role.items(), key=lambda kv: -kv[1]))

    async def stop(self, timeout: float = 25.0) -> float:
        """SIGINT, wait; SIGKILL what is left (only the processes this stack started)."""
        if self.proc is None:
            return 0.0
        t0 = time.monotonic()
        self.pids()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                print(f"bench: omnihub up did not stop in {timeout:.0f}s; killing it",
                      file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        await asyncio.sleep(0.2)
        for pid, started in self._started.items():
            # children have PDEATHSIG=SIGTERM; one of *ours* still alive after that is killed
            if pid != self.proc.pid and started is not None and start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2.0)
        return time.monotonic() - t0
