"""What kept record batches cost the embedded broker, and what a retention sweep gives back.

tansu (s3 storage) lists every record batch object of a partition on each fetch that returns
something; a message that arrives alone (an API call, a mail, an SMS) is one batch. This bench
starts the embedded broker as `omnihub up` does (hub.s3 + tansu, on free ports, in a temporary
folder), fills one partition with ``--batches`` single-record batches, then times one hop
(produce one record → a group consumer receives it) ``--samples`` times and measures the CPU
tansu and the S3 server spend per hop. It commits the consumer's offset, runs one retention
sweep (hub/retention.py, retention 0) and measures again. The ratio compares the two in the
same run: absolute times drift on a shared machine, the ratio holds.

    .venv/bin/python bench/broker_retention.py --batches 5000

Prints the two measurements, the sweep, and last one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import _stack  # before the rest: it moves bench/ to the end of sys.path
import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hub import retention
from hub.bootstrap import create_topic
from hub.embedded import BUCKET, find_tansu, tansu_s3

TOPIC = "bench.retention"


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def wait_http(url: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=1).close()
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


async def hop(
    producer: AIOKafkaProducer,
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    pids: list[int],
    samples: int,
) -> dict[str, float]:
    meter = _stack.CpuMeter(pids)
    meter.start()
    times = []
    for _ in range(samples):
        t = time.monotonic()
        await producer.send_and_wait(TOPIC, b"y" * 300, partition=0)
        while not (await consumer.getmany(tp, timeout_ms=2000)).get(tp):
            pass
        times.append(time.monotonic() - t)
    pct = meter.stop()
    times.sort()
    cpu = sum(v for k, v in pct.items() if k != "others") / 100 * meter.wall / samples
    return {
        "p50_ms": 1000 * times[len(times) // 2],
        "max_ms": 1000 * times[-1],
        "cpu_ms": 1000 * cpu,
    }


def start_broker(tmp: Path) -> tuple[list[subprocess.Popen[bytes]], int, int]:
    """hub.s3 with the broker's bucket, then tansu on it: as `omnihub up` starts them."""
    s3_port, kafka_port = _stack.free_ports(2, 18000, 18999)
    procs: list[subprocess.Popen[bytes]] = []
    (tmp / "s3").mkdir()
    procs.append(
        spawn(
            [
                sys.executable,
                "-m",
                "hub.s3",
                "--host",
                "127.0.0.1",
                "--port",
                str(s3_port),
                str(tmp / "s3"),
            ],
            tmp / "s3.log",
        )
    )
    try:
        wait_http(f"http://127.0.0.1:{s3_port}/healthz")
        req = urllib.request.Request(f"http://127.0.0.1:{s3_port}/{BUCKET}", method="PUT")
        urllib.request.urlopen(req, timeout=10).close()
        argv, env = tansu_s3(find_tansu(), "127.0.0.1", kafka_port, f"http://127.0.0.1:{s3_port}")
        procs.append(spawn(argv, tmp / "tansu.log", env))
        end = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", kafka_port), 1),
            ):
                break
            if time.monotonic() > end:
                raise RuntimeError(f"tansu did not listen within 30 s: see {tmp / 'tansu.log'}")
            time.sleep(0.1)
    except BaseException:
        stop(procs)
        raise
    return procs, s3_port, kafka_port


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):  # the broker before its storage
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(10)


async def measure(
    a: argparse.Namespace, pids: list[int], s3_port: int, kafka_port: int
) -> dict[str, object]:
    bootstrap = f"127.0.0.1:{kafka_port}"
    await create_topic(bootstrap, TOPIC, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    await producer.start()
    tp = TopicPartition(TOPIC, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id="bench",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    try:
        t0 = time.monotonic()
        for i in range(a.batches):  # send_and_wait: one batch (one object) each
            await producer.send_and_wait(TOPIC, b"x" * 300, partition=0)
            if (i + 1) % 1000 == 0:
                print(f"bench: {i + 1:,}/{a.batches:,} batches written", file=sys.stderr)
        fill_s = time.monotonic() - t0
        await consumer.start()
        consumer.assign([tp])
        consumer.seek(tp, a.batches)
        kept = await hop(producer, consumer, tp, pids, a.samples)
        await consumer.commit()
        async with aiohttp.ClientSession() as session:
            swept = await retention.sweep(
                retention.Bucket(session, f"http://127.0.0.1:{s3_port}", BUCKET), timedelta(0)
            )
        after = await hop(producer, consumer, tp, pids, a.samples)
    finally:
        await consumer.stop()
        await producer.stop()
    print(
        f"omnihub broker retention bench — one partition, {a.batches:,} single-record "
        f"batches written in {fill_s:.0f} s, {a.samples} hops each, {os.cpu_count()} cores"
    )
    print(
        f"  {a.batches:,} batches kept  hop p50 {kept['p50_ms']:.1f} ms (max "
        f"{kept['max_ms']:.1f}); tansu + S3 CPU {kept['cpu_ms']:.1f} ms a hop"
    )
    print(f"  sweep              {swept.summary()}")
    print(
        f"  after the sweep    hop p50 {after['p50_ms']:.1f} ms (max "
        f"{after['max_ms']:.1f}); tansu + S3 CPU {after['cpu_ms']:.1f} ms a hop"
    )
    ratio = kept["cpu_ms"] / max(after["cpu_ms"], 1e-9)
    print(
        f"  ratio              {ratio:.1f}× the CPU a hop with the batches kept, "
        f"{kept['p50_ms'] / max(after['p50_ms'], 1e-9):.1f}× the delay"
    )
    return {
        "batches": a.batches,
        "kept_p50_ms": round(kept["p50_ms"], 1),
        "kept_cpu_ms": round(kept["cpu_ms"], 2),
        "after_p50_ms": round(after["p50_ms"], 1),
        "after_cpu_ms": round(after["cpu_ms"], 2),
        "cpu_ratio": round(ratio, 2),
        "deleted": swept.deleted,
        "sweep_s": round(swept.seconds, 2),
    }


def main(a: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="omnihub-bench-retention-"))
    try:
        procs, s3_port, kafka_port = start_broker(tmp)
        try:
            return asyncio.run(measure(a, [p.pid for p in procs], s3_port, kafka_port))
        finally:
            stop(procs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--batches",
        type=int,
        default=5000,
        help="single-record batches written before measuring (default 5000)",
    )
    p.add_argument("--samples", type=int, default=20, help="hops timed each time (default 20)")
    args = p.parse_args()
    if args.batches < 1 or args.samples < 1:
        p.error("--batches and --samples must be at least 1")
    print(json.dumps(main(args)))
