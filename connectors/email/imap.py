"""IMAP mailboxes streamed into omnihub: one thread per mailbox (imapclient is blocking).

Each mailbox is opened read-only (EXAMINE) and fetched with ``BODY.PEEK[]``, so omnihub never
changes ``\\Seen`` — people read the same mailbox elsewhere — and its position is its own: the
UIDVALIDITY and last UID in MongoDB (:mod:`store.checkpoints`), advanced only after Kafka
acknowledged every message up to that UID. Between catch-ups it waits in IDLE (new mail in
well under a second) or, on servers without IDLE, polls. Connection errors reconnect with
exponential backoff; an outage of any length is caught up from the checkpoint on reconnect.

A new UIDVALIDITY means the server renumbered the mailbox: everything since the checkpoint was
created is fetched again. Event ids come from Message-IDs (or content), not UIDs, so the
re-fetched mail is the same events and is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from imapclient import IMAPClient

from connectors.email.config import ImapAccount, Inbox
from connectors.email.service import EmailConnector, RawMail
from store import checkpoints
from unify.identifiers import mask

log = logging.getLogger("omnihub.email.imap")

T = TypeVar("T")
FETCH = [b"BODY.PEEK[]", b"INTERNALDATE"]


def connect(account: ImapAccount) -> IMAPClient:
    """A logged-in client; the password is read from its secret now and never logged."""
    context = ssl.create_default_context() if (account.ssl or account.starttls) else None
    client = IMAPClient(
        account.host,
        port=account.port,
        ssl=account.ssl,
        ssl_context=context,
        timeout=account.timeout,
    )
    client.normalise_times = False  # keep INTERNALDATE's timezone
    if account.starttls and not account.ssl:
        client.starttls(context)
    if account.username:
        client.login(account.username, account.password() or "")
    return client


def _pending_exists(client: IMAPClient) -> bool:
    """Whether an EXISTS came with an earlier command's responses (imaplib keeps those aside,
    where idle_check never looks): new mail that arrived between a SEARCH and IDLE."""
    pending = getattr(client._imap, "untagged_responses", {})
    return bool(pending.pop("EXISTS", None)) | bool(pending.pop("RECENT", None))


def _buffered(client: IMAPClient) -> bool:
    """Whether the server said something the client has read off the socket but not parsed.

    imaplib reads the socket through a buffer, so a line that came in the same packet as the
    one a command waited for (an EXISTS right behind "+ idling" when mail lands as IDLE
    starts) sits there, where ``idle_check``'s poll of the socket never sees it: IDLE would
    sleep on it until the safety-net poll. A peek on the non-blocking socket answers without
    waiting."""
    reader = getattr(client._imap, "file", None)
    if reader is None:
        return False
    sock = client.socket()
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(reader.peek(1))
    except OSError:  # nothing to read now (plain: EAGAIN; TLS: want-read)
        return False
    finally:
        sock.settimeout(timeout)


def chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def new_uids(client: IMAPClient, last_uid: int) -> list[int]:
    # "UID n:*" always matches the highest UID, even when it is below n (RFC 3501 6.4.8)
    return sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)


def fetch_raw(
    client: IMAPClient, uids: Sequence[int], account: str, via: str
) -> list[tuple[int, RawMail]]:
    """``BODY.PEEK[]`` of some UIDs (never sets \\Seen), in UID order."""
    data = client.fetch(list(uids), FETCH)
    out = []
    for uid in sorted(data):
        item = data[uid]
        raw = item.get(b"BODY[]")
        if raw is None:  # expunged between SEARCH and FETCH
            continue
        when = item.get(b"INTERNALDATE")
        if not isinstance(when, datetime):
            when = datetime.now(UTC)
        elif when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        out.append((uid, RawMail(bytes(raw), account, when, via)))
    return out


class MailboxWatcher(threading.Thread):
    """Follows one mailbox of one inbox's IMAP account until :meth:`stop`."""

    def __init__(
        self,
        connector: EmailConnector,
        inbox: Inbox,
        mailbox: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(name=f"imap-{inbox.address}-{mailbox}", daemon=True)
        assert inbox.imap is not None
        self.connector = connector
        self.inbox = inbox
        self.account: ImapAccount = inbox.imap
        self.mailbox = mailbox
        self.loop = loop
        s = connector.settings
        self.idle_seconds = s.email_imap_idle
        self.poll_seconds = s.email_imap_poll
        self.batch = s.email_imap_batch
        self.via = f"imap:{mailbox}"
        self._stop_event = threading.Event()
        self.last_uid = 0
        self.uidvalidity = 0
        self.caught_up = threading.Event()
        self.on_batch: Callable[[int], None] = lambda n: None

    # ------------------------------------------------------------------ thread plumbing
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self._stop_event.set()

    @property
    def _masked(self) -> str:
        return mask(f"email:{self.inbox.address}")

    def run(self) -> None:
        backoff = 1.0
        while not self._stop_event.is_set():
            started = time.monotonic()
            try:
                self._session()
            except Exception as exc:  # any failure: log, back off, reconnect, resume
                if self._stop_event.is_set():
                    break
                if time.monotonic() - started > 60:
                    backoff = 1.0
                log.warning(
                    "email.imap_error account=%s mailbox=%s error=%s: %s retry_in=%.0fs",
                    self._masked,
                    self.mailbox,
                    type(exc).__name__,
                    str(exc)[:200],
                    backoff,
                )
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    # ------------------------------------------------------------------ one connection
    def _session(self) -> None:
        client = connect(self.account)
        try:
            info = client.select_folder(self.mailbox, readonly=True)
            uidvalidity = int(info[b"UIDVALIDITY"])
            uidnext = int(info.get(b"UIDNEXT", 1))
            self.uidvalidity = uidvalidity
            self.last_uid = self._position(client, uidvalidity, uidnext)
            log.info(
                "email.imap_connected account=%s mailbox=%s last_uid=%d",
                self._masked,
                self.mailbox,
                self.last_uid,
            )
            idle = b"IDLE" in client.capabilities()
            while not self._stop_event.is_set():
                self._catch_up(client, uidvalidity)
                self.caught_up.set()
                if idle:
                    self._idle(client)
                else:
                    self._stop_event.wait(self.poll_seconds)
                    client.noop()
        finally:
            try:
                client.logout()
            except Exception:  # the connection may be gone already; nothing to clean up
                log.debug("email.imap_logout_failed mailbox=%s", self.mailbox)

    def _position(self, client: IMAPClient, uidvalidity: int, uidnext: int) -> int:
        addr, box = self.inbox.address, self.mailbox
        cp = self._call(checkpoints.get(self.connector.store, addr, box))
        if cp is None:
            start = 0 if self.account.initial == "all" else max(uidnext - 1, 0)
            self._call(checkpoints.reset(self.connector.store, addr, box, uidvalidity, start))
            return start
        if cp.uidvalidity == uidvalidity:
            return cp.last_uid
        since = (cp.created_at - timedelta(days=1)).date()
        log.warning(
            "email.imap_uidvalidity_changed account=%s mailbox=%s old=%d new=%d resync_since=%s",
            self._masked,
            box,
            cp.uidvalidity,
            uidvalidity,
            since,
        )
        uids = sorted(client.search(["SINCE", since]))
        top = max([*uids, uidnext - 1, 0])
        self._submit_all(client, uids)
        self._call(checkpoints.reset(self.connector.store, addr, box, uidvalidity, top))
        return top

    def _submit_all(self, client: IMAPClient, uids: Sequence[int]) -> None:
        for chunk in chunks(uids, self.batch):
            mails = fetch_raw(client, chunk, self.inbox.address, self.via)
            if mails:
                self._call(self.connector.accept([m for _, m in mails]))
            self.on_batch(len(chunk))

    def _catch_up(self, client: IMAPClient, uidvalidity: int) -> None:
        uids = new_uids(client, self.last_uid)
        for chunk in chunks(uids, self.batch):
            if self._stop_event.is_set():
                return
            mails = fetch_raw(client, chunk, self.inbox.address, self.via)
            if mails:
                self._call(self.connector.accept([m for _, m in mails]))
            top = max(chunk)
            self._call(
                checkpoints.advance(
                    self.connector.store, self.inbox.address, self.mailbox, uidvalidity, top
                )
            )
            self.last_uid = top
            self.on_batch(len(chunk))

    def _idle(self, client: IMAPClient) -> None:
        """Wait in IDLE until new mail, a safety-net poll time, or stop (then leave IDLE)."""
        if _pending_exists(client) or _buffered(client):
            return  # mail arrived while we fetched: catch up again before idling
        client.idle()
        deadline = time.monotonic() + self.idle_seconds
        poll_at = time.monotonic() + self.poll_seconds
        if _buffered(client):  # said right behind "+ idling": leave IDLE, catch up
            deadline = 0.0
        while not self._stop_event.is_set() and time.monotonic() < min(deadline, poll_at):
            responses = [r for r in client.idle_check(timeout=0.5) if isinstance(r, tuple)]
            if any(r[:1] == (b"BYE",) for r in responses):
                # the server is closing the connection: reconnect instead of waiting on it
                raise ConnectionError("the IMAP server closed the connection (BYE)")
            if any(b"EXISTS" in r for r in responses):
                break
        client.idle_done()


# ---------------------------------------------------------------------------- backfill
async def backfill(
    connector: EmailConnector,
    inbox: Inbox,
    mailbox: str,
    since: date,
    *,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> int:
    """Fetch every message of ``mailbox`` since ``since`` again; returns how many.

    Independent of the live checkpoint and of \\Seen. Resumable: its own position is kept under
    ``<mailbox>#backfill:<since>``, so a killed backfill run again continues where it
    stopped, and anything fetched twice is the same event, stored once.
    """
    assert inbox.imap is not None
    account = inbox.imap
    client = await asyncio.to_thread(connect, account)
    store = connector.store
    position = f"{mailbox}#backfill:{since.isoformat()}"
    via = f"imap:{mailbox}"
    try:
        info = await asyncio.to_thread(client.select_folder, mailbox, True)
        uidvalidity = int(info[b"UIDVALIDITY"])
        uids = sorted(await asyncio.to_thread(client.search, ["SINCE", since]))
        cp = await checkpoints.get(store, inbox.address, position)
        if cp is not None and cp.uidvalidity == uidvalidity:
            done_before = sum(1 for u in uids if u <= cp.last_uid)
            uids = [u for u in uids if u > cp.last_uid]
        else:
            done_before = 0
        total = done_before + len(uids)
        done = done_before
        progress(done, total)
        for chunk in chunks(uids, connector.settings.email_imap_batch):
            mails = await asyncio.to_thread(fetch_raw, client, chunk, inbox.address, via)
            if mails:
                await connector.accept([m for _, m in mails])
            await checkpoints.advance(store, inbox.address, position, uidvalidity, max(chunk))
            done += len(chunk)
            progress(done, total)
        return total
    finally:
        await asyncio.to_thread(client.logout)
