"""Real peers for tests: started on free loopback ports, stopped by PID.

A peer that cannot start fails the test run loudly (with the tail of its log), never skips.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hub.embedded import find_script, find_tansu, tansu_s3
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


S3_BUCKET = "tansu"


def start_s3(
    workdir: Path,
    data: Path,
    *,
    port: int | None = None,
    fsync: bool = True,
    server: str = "hub",
) -> Peer:
    """The embedded broker's S3 server (hub.s3; or ``server="localbucket"``, what omnihub ran
    before, for the compatibility and regression tests) on `data`, with the broker's bucket."""
    port = port or free_port()
    if server == "hub":
        argv = [sys.executable, "-m", "hub.s3", "--host", "127.0.0.1", "--port", str(port)]
        argv += [] if fsync else ["--no-fsync"]
    else:
        argv = [str(find_script("localbucket", "localbucket")), "--host", "127.0.0.1"]
        argv += ["--port", str(port)]
    peer = start_peer(f"s3-{server}", [*argv, str(data)], port, workdir / f"s3-{server}.log")
    req = urllib.request.Request(f"http://127.0.0.1:{port}/{S3_BUCKET}", method="PUT")
    try:
        urllib.request.urlopen(req, timeout=10).close()
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # localbucket answers 409 for a bucket that exists
            peer.stop()
            raise RuntimeError(
                f"could not create the bucket on {server}: HTTP {exc.code}"
            ) from None
    return peer


def start_tansu_s3(workdir: Path, s3_port: int, *, port: int | None = None) -> Peer:
    """tansu with durable storage on the S3 server at s3_port (as `omnihub up` runs it)."""
    port = port or free_port()
    argv, env = tansu_s3(find_tansu(), "127.0.0.1", port, f"http://127.0.0.1:{s3_port}")
    return start_peer("tansu-s3", argv, port, workdir / "tansu-s3.log", env=env)


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
            # no replica-set oplog: omnihub uses no change streams or transactions,
            # and every write would pay for an oplog entry (measured 5-15 %)
            "--standalone",
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


# ---------------------------------------------------------------------------- email peers
# Postfix and Dovecot drop privileges (postfix, nobody) and must reach their folders, which
# pytest's 0700 tmp dirs would forbid: their files live in a 0755 folder under /tmp instead
# (linked from the test's workdir), removed when the peer stops. Both listen on 127.0.0.1 only.


@dataclass
class DaemonPeer:
    """A peer that daemonizes itself (postfix master, dovecot): stopped by its PID file."""

    name: str
    port: int
    home: Path
    pid_file: Path
    log: Path
    ports: dict[str, int]

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for port in self.ports.values():
            with contextlib.suppress(TimeoutError):
                wait_for(lambda p=port: not port_open(p), 5, f"{self.name} port {port} closed")
        import shutil

        shutil.rmtree(self.home, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _service_home(workdir: Path, name: str) -> Path:
    import tempfile

    home = Path(tempfile.mkdtemp(prefix=f"omnihub-{name}-", dir="/tmp"))
    home.chmod(0o755)
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / name
    with contextlib.suppress(FileExistsError):
        link.symlink_to(home)
    return home


def _need(binary: str, package: str) -> str:
    import shutil

    found = shutil.which(binary) or (binary if Path(binary).exists() else None)
    if not found:
        raise RuntimeError(
            f"{binary} is missing: apt-get install {package} (make test installs it)"
        )
    return found


def _wait_daemon(peer: DaemonPeer, timeout: float) -> DaemonPeer:
    try:
        for port in peer.ports.values():
            wait_for(lambda p=port: port_open(p), timeout, f"{peer.name} on port {port}")
    except TimeoutError:
        log_tail = tail(peer.log, 30)
        peer.stop()
        raise RuntimeError(
            f"peer {peer.name} could not start; last lines of {peer.log}:\n{log_tail}"
        ) from None
    return peer


POSTFIX_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_trail(log: Path, message_ids: list[str], limit: int = 40) -> str:
    """Postfix's log lines for the mail with these Message-IDs (its cleanup line names the
    Message-ID and the queue id; every later line of that mail starts with the queue id):
    what a delivery test prints when mail went missing (taken? deferred, why? sent?)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    queue_ids = {
        line.split(": message-id=")[0].rsplit(" ", 1)[-1]
        for line in text.splitlines()
        if any(f"message-id=<{m}>" in line for m in message_ids)
    }
    lines = [ln for ln in text.splitlines() if any(f" {q}: " in ln for q in queue_ids)]
    found = "\n".join(lines[-limit:]) or "(no line names them: Postfix never took them)"
    return f"postfix queue ids {sorted(queue_ids)}:\n{found}"


def start_postfix(
    workdir: Path,
    relay_port: int,
    *,
    transport: str = "smtp",
    reject: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> DaemonPeer:
    """A private Postfix on a free 127.0.0.1 port that hands *all* mail to 127.0.0.1:relay_port
    (``transport="smtp"``: our aiosmtpd; ``"lmtp"``: Dovecot's LMTP). ``reject`` maps recipient
    addresses to an SMTP reply Postfix gives them at RCPT (e.g. ``"550 5.1.1 no such user"``)."""
    postfix = _need("/usr/sbin/postfix", "postfix")
    home = _service_home(workdir, "postfix")
    etc, spool, data = home / "etc", home / "spool", home / "data"
    for d in (etc, spool, data):
        d.mkdir()
    import shutil

    shutil.chown(data, "postfix")
    port = free_port()
    log = home / "maillog"
    if transport == "lmtp":
        route = f"default_transport = lmtp:inet:127.0.0.1:{relay_port}\nrelayhost =\n"
    else:
        route = f"relayhost = [127.0.0.1]:{relay_port}\n"
    access = ""
    if reject:
        (etc / "reject").write_text("".join(f"{a} {r}\n" for a, r in reject.items()))
        access = f"check_recipient_access texthash:{etc / 'reject'}, "
    (etc / "main.cf").write_text(
        f"""compatibility_level = 3.6
config_directory = {etc}
queue_directory = {spool}
data_directory = {data}
myhostname = mta.omnihub.test
mydomain = omnihub.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains =
{route}smtp_tls_security_level = none
smtpd_tls_security_level = none
smtputf8_enable = yes
alias_maps =
alias_database =
local_recipient_maps =
smtp_host_lookup = native
lmtp_host_lookup = native
disable_dns_lookups = yes
smtpd_relay_restrictions = {access}permit_mynetworks, reject
message_size_limit = 52428800
maillog_file = {log}
maillog_file_prefixes = /tmp, /var, /dev/stdout
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
smtp_connect_timeout = 5s
lmtp_connect_timeout = 5s
"""
    )
    (etc / "master.cf").write_text(POSTFIX_MASTER_CF.format(port=port))
    peer = DaemonPeer("postfix", port, home, spool / "pid" / "master.pid", log, {"smtp": port})
    for step in ("start",):
        # postfix reports problems to syslog (absent here) and its tty: capture them via `script`
        with (home / f"{step}.out").open("w+") as out:
            proc = subprocess.run(
                ["script", "-qec", f"{postfix} -c {etc} {step}", "/dev/null"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=timeout,
            )
            out.seek(0)
            if proc.returncode != 0:
                peer.stop()
                raise RuntimeError(f"postfix {step} failed: {out.read()}{tail(log)}")
    return _wait_daemon(peer, timeout)


def start_dovecot(
    workdir: Path,
    users: dict[str, str] | None = None,
    *,
    timeout: float = 20.0,
) -> DaemonPeer:
    """A standalone Dovecot with IMAP (IDLE) and LMTP on free 127.0.0.1 ports; ``users`` maps
    login → password (default support/s3cret and customer/s3cret). Logins are local parts:
    LMTP delivers support@any.domain to user ``support``."""
    dovecot = _need("/usr/sbin/dovecot", "dovecot-imapd")
    _need("/usr/lib/dovecot/lmtp", "dovecot-lmtpd")
    home = _service_home(workdir, "dovecot")
    run, state, mail = home / "run", home / "state", home / "mail"
    for d in (run, state, mail):
        d.mkdir()
    import shutil

    shutil.chown(mail, "nobody", "nogroup")
    users = users or {"support": "s3cret", "customer": "s3cret"}
    (home / "users").write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in users.items()))
    imap_port, lmtp_port = free_port(), free_port()
    log = home / "dovecot.log"
    conf = home / "dovecot.conf"
    conf.write_text(
        f"""protocols = imap lmtp
listen = 127.0.0.1
base_dir = {run}
state_dir = {state}
log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
mail_location = maildir:{mail}/%n/Maildir
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {home}/users
}}
userdb {{
  driver = static
  args = home={mail}/%n allow_all_users=yes
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
"""
    )
    peer = DaemonPeer(
        "dovecot",
        imap_port,
        home,
        run / "master.pid",
        log,
        {"imap": imap_port, "lmtp": lmtp_port},
    )
    # the daemon keeps inherited descriptors open: give it a file, not a pipe
    with (home / "start.out").open("w+") as out:
        proc = subprocess.run([dovecot, "-c", str(conf)], stdout=out, stderr=out, timeout=timeout)
        out.seek(0)
        if proc.returncode != 0:
            peer.stop()
            raise RuntimeError(f"dovecot failed to start: {out.read()}{tail(log)}")
    return _wait_daemon(peer, timeout)
