"""Real peers for tests: started on free loopback ports, stopped by PID.

A peer that cannot start fails the test run loudly (with the tail of its log), never skips.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hub.embedded import find_script, find_tansu
from hub.supervisor import tail


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Peer:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_peer(
    name: str,
    argv: list[str],
    port: int,
    log: Path,
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> Peer:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    peer = Peer(name, port, proc, log)
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            peer.stop()
            raise RuntimeError(
                f"peer {name} could not start (exit={proc.poll()}); last log lines of {log}:\n"
                f"{tail(log)}"
            )
        time.sleep(0.05)
    return peer


def start_tansu(workdir: Path) -> Peer:
    port = free_port()
    return start_peer(
        "tansu",
        [
            str(find_tansu()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        port,
        workdir / "tansu.log",
    )


def start_secantus(workdir: Path) -> Peer:
    port = free_port()
    return start_peer(
        "secantusdb",
        [
            str(find_script("secantusd-py", "SecantusDB")),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(workdir / "mongo"),
            "--log-level",
            "WARNING",
        ],
        port,
        workdir / "secantus.log",
    )


@contextlib.contextmanager
def peers_stopped(*peers: Peer) -> Iterator[None]:
    try:
        yield
    finally:
        for p in peers:
            p.stop()
