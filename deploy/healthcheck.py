#!/usr/bin/env python3
"""Container health check for omnihub: GET /healthz of the service this container runs.

Installed in the image as /usr/local/bin/omnihub-healthcheck and used by its HEALTHCHECK
(python:3.11-slim has no curl). Standard library only.

    omnihub-healthcheck            # service taken from PID 1's command line
    omnihub-healthcheck api        # OMNIHUB_API_PORT (8400)
    omnihub-healthcheck worker     # OMNIHUB_WORKER_PORT (8401)
    omnihub-healthcheck email      # OMNIHUB_EMAIL_HEALTH_PORT (8402; set it, it has no default)
    omnihub-healthcheck webchat    # OMNIHUB_WEBCHAT_PORT (8405)
    omnihub-healthcheck 8401       # an explicit port

A container running a one-shot command (`omnihub init`, `omnihub doctor`, `--help`) has no
server; it counts as healthy. Exit 0 = healthy, 1 = unhealthy (Docker's convention).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

# sub-command -> (env var holding its port, default port); defaults as in hub/settings.py
SERVICES = {
    "api": ("OMNIHUB_API_PORT", 8400),
    "worker": ("OMNIHUB_WORKER_PORT", 8401),
    "email": ("OMNIHUB_EMAIL_HEALTH_PORT", 8402),  # `omnihub connector email`
    "webchat": ("OMNIHUB_WEBCHAT_PORT", 8405),  # `omnihub connector webchat`
}
TIMEOUT_S = 4.0


def _service_of_pid1() -> str | None:
    """The omnihub sub-command PID 1 runs (`omnihub worker`, or `docker-init -- omnihub api`)."""
    try:
        with open("/proc/1/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return None
    for raw in args:
        arg = raw.decode(errors="replace")
        if arg in SERVICES:
            return arg
    return None


def _port(target: str | None) -> int | None:
    if target is None:
        return None
    if target.isdigit():
        return int(target)
    env, default = SERVICES[target]
    return int(os.environ.get(env, default))


def _probe_host() -> str:
    # The service binds OMNIHUB_HOST; a wildcard address is reached through loopback.
    host = os.environ.get("OMNIHUB_HOST", "127.0.0.1").strip()
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def main(argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else _service_of_pid1()
    if target is not None and not target.isdigit() and target not in SERVICES:
        print(f"unknown service {target!r}; expected api, worker, email or a port", file=sys.stderr)
        return 1
    port = _port(target)
    if port is None:
        return 0  # one-shot command: nothing listens, nothing to check
    url = f"http://{_probe_host()}:{port}/healthz"
    # No proxies: an HTTP(S)_PROXY in the container's environment must not see this request.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_S) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"{url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
