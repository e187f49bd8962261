"""hub.s3, the embedded broker's S3 server, through aiohttp's test client (and its pure parts
directly): S3 semantics, conditional writes, atomic files, the index and its rebuild, and
localbucket's on-disk layout."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from hub import s3
from hub.s3 import STORE, KeyIndex, Meta, ServerError, Store, build_app, list_page

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
Client = TestClient[web.Request, web.Application]


def md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


@contextlib.asynccontextmanager
async def serve(root: Path, **kw: object) -> AsyncIterator[Client]:
    client = Client(TestServer(build_app(root, **kw)))  # type: ignore[arg-type]
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()  # runs on_cleanup: saves the index, releases the lock


def store_of(client: Client) -> Store:
    server = client.server
    assert isinstance(server, TestServer)
    return server.app[STORE]


@pytest.fixture
async def s3c(tmp_path: Path) -> AsyncIterator[Client]:
    async with serve(tmp_path / "data") as client:
        assert (await client.put("/tansu")).status == 200
        yield client


async def error_code(resp: object) -> str:
    text = await resp.text()  # type: ignore[attr-defined]
    return ET.fromstring(text).findtext("Code") or ""


async def list_v2(client: Client, bucket: str = "tansu", **params: str) -> ET.Element:
    resp = await client.get(f"/{bucket}", params={"list-type": "2", **params})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/xml")
    return ET.fromstring(await resp.read())


def keys_of(root: ET.Element) -> list[str]:
    return [c.findtext(f"{NS}Key") or "" for c in root.findall(f"{NS}Contents")]


async def list_all(client: Client, **params: str) -> tuple[list[str], list[str], int]:
    """Follow continuation tokens; returns keys, common prefixes and the number of pages."""
    keys: list[str] = []
    prefixes: list[str] = []
    pages = 0
    token: str | None = None
    while True:
        extra = {"continuation-token": token} if token else {}
        root = await list_v2(client, **params, **extra)
        pages += 1
        page_keys = keys_of(root)
        page_prefixes = [
            p.findtext(f"{NS}Prefix") or "" for p in root.findall(f"{NS}CommonPrefixes")
        ]
        assert int(root.findtext(f"{NS}KeyCount") or -1) == len(page_keys) + len(page_prefixes)
        keys += page_keys
        prefixes += page_prefixes
        if root.findtext(f"{NS}IsTruncated") == "false":
            assert root.find(f"{NS}NextContinuationToken") is None
            return keys, prefixes, pages
        token = root.findtext(f"{NS}NextContinuationToken")
        assert token


# ---------------------------------------------------------------------------- objects
@pytest.mark.parametrize("fsync", [True, False])
async def test_put_get_head_delete_round_trip(tmp_path: Path, fsync: bool) -> None:
    async with serve(tmp_path, fsync=fsync) as c:
        assert (await c.put("/tansu")).status == 200
        body = b'{"offset": 3}'
        r = await c.put("/tansu/a/b/c.json", data=body)
        assert r.status == 200 and r.headers["ETag"] == md5(body)
        assert (tmp_path / "tansu" / "a" / "b" / "c.json").read_bytes() == body

        r = await c.get("/tansu/a/b/c.json")
        assert r.status == 200 and await r.read() == body
        assert r.headers["ETag"] == md5(body)
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["Last-Modified"].endswith("GMT")

        r = await c.head("/tansu/a/b/c.json")
        assert r.status == 200 and r.headers["Content-Length"] == str(len(body))
        assert r.headers["ETag"] == md5(body) and await r.read() == b""

        assert (await c.delete("/tansu/a/b/c.json")).status == 204
        r = await c.get("/tansu/a/b/c.json")
        assert r.status == 404 and await error_code(r) == "NoSuchKey"
        assert (await c.head("/tansu/a/b/c.json")).status == 404
        assert (await c.delete("/tansu/a/b/c.json")).status == 204  # absent: fine, as in S3
        assert not (tmp_path / "tansu" / "a").exists()  # emptied folders are removed
        assert (tmp_path / "tansu").is_dir()


async def test_overwrite_and_empty_object(s3c: Client) -> None:
    assert (await s3c.put("/tansu/k", data=b"one")).status == 200
    assert (await s3c.put("/tansu/k", data=b"")).headers["ETag"] == md5(b"")
    r = await s3c.get("/tansu/k")
    assert await r.read() == b"" and r.headers["ETag"] == md5(b"")
    root = await list_v2(s3c)
    assert keys_of(root) == ["k"] and root.findtext(f"{NS}Contents/{NS}Size") == "0"


async def test_buckets(tmp_path: Path) -> None:
    async with serve(tmp_path) as c:
        assert (await c.head("/tansu")).status == 404
        r = await c.get("/tansu/x")
        assert r.status == 404 and await error_code(r) == "NoSuchBucket"
        r = await c.put("/tansu/x", data=b"1")
        assert r.status == 404 and await error_code(r) == "NoSuchBucket"
        assert (await c.put("/tansu")).status == 200
        assert (await c.put("/tansu")).status == 200  # idempotent (us-east-1 semantics)
        assert (await c.head("/tansu")).status == 200
        r = await c.put("/No_Such")
        assert r.status == 400 and await error_code(r) == "InvalidBucketName"
        assert (await c.get("/healthz")).status == 200


# ---------------------------------------------------------------------------- conditions
async def test_conditional_puts(s3c: Client) -> None:
    r = await s3c.put("/tansu/w.json", data=b"v1", headers={"If-None-Match": "*"})
    assert r.status == 200
    etag1 = r.headers["ETag"]

    r = await s3c.put("/tansu/w.json", data=b"v2", headers={"If-None-Match": "*"})
    assert r.status == 412 and await error_code(r) == "PreconditionFailed"

    r = await s3c.put("/tansu/w.json", data=b"v2", headers={"If-Match": md5(b"other")})
    assert r.status == 412 and await error_code(r) == "PreconditionFailed"
    assert await (await s3c.get("/tansu/w.json")).read() == b"v1"  # unchanged

    r = await s3c.put("/tansu/w.json", data=b"v2", headers={"If-Match": etag1})
    assert r.status == 200 and r.headers["ETag"] == md5(b"v2")
    r = await s3c.put("/tansu/w.json", data=b"v3", headers={"If-Match": etag1})  # stale now
    assert r.status == 412

    # unquoted and list forms are accepted, as by S3
    r = await s3c.put("/tansu/w.json", data=b"v3", headers={"If-Match": f"x, {md5(b'v2')[1:-1]}"})
    assert r.status == 200

    r = await s3c.put("/tansu/missing", data=b"x", headers={"If-Match": etag1})
    assert r.status == 404 and await error_code(r) == "NoSuchKey"
    r = await s3c.put("/tansu/w.json", data=b"x", headers={"If-None-Match": md5(b"v3")})
    assert r.status == 501  # S3 only supports If-None-Match: * on PUT
    assert await (await s3c.get("/tansu/w.json")).read() == b"v3"


async def test_compare_and_set_has_one_winner(s3c: Client) -> None:
    """What tansu relies on for watermarks: of N writers holding the same ETag, one wins."""
    etag = (await s3c.put("/tansu/wm.json", data=b"0")).headers["ETag"]
    results = await asyncio.gather(
        *(
            s3c.put("/tansu/wm.json", data=f"{i}".encode(), headers={"If-Match": etag})
            for i in range(1, 21)
        )
    )
    statuses = sorted(r.status for r in results)
    assert statuses == [200] + [412] * 19
    winner = next(r for r in results if r.status == 200)
    assert (await s3c.get("/tansu/wm.json")).headers["ETag"] == winner.headers["ETag"]

    created = await asyncio.gather(
        *(
            s3c.put("/tansu/once", data=f"{i}".encode(), headers={"If-None-Match": "*"})
            for i in range(20)
        )
    )
    assert sorted(r.status for r in created) == [200] + [412] * 19


async def test_conditional_gets(s3c: Client) -> None:
    etag = (await s3c.put("/tansu/meta.json", data=b"{}")).headers["ETag"]
    r = await s3c.get("/tansu/meta.json", headers={"If-None-Match": etag})
    assert r.status == 304 and r.headers["ETag"] == etag and await r.read() == b""
    r = await s3c.get("/tansu/meta.json", headers={"If-None-Match": md5(b"old")})
    assert r.status == 200 and await r.read() == b"{}"
    r = await s3c.get("/tansu/meta.json", headers={"If-Match": md5(b"old")})
    assert r.status == 412 and await error_code(r) == "PreconditionFailed"
    assert (await s3c.get("/tansu/meta.json", headers={"If-Match": etag})).status == 200
    assert (await s3c.head("/tansu/meta.json", headers={"If-None-Match": etag})).status == 304

    future, past = formatdate(2_000_000_000, usegmt=True), formatdate(0, usegmt=True)
    assert (await s3c.get("/tansu/meta.json", headers={"If-Modified-Since": future})).status == 304
    assert (await s3c.get("/tansu/meta.json", headers={"If-Modified-Since": past})).status == 200
    r = await s3c.get("/tansu/meta.json", headers={"If-Unmodified-Since": past})
    assert r.status == 412
    # If-Match beats If-Unmodified-Since; If-None-Match beats If-Modified-Since
    h = {"If-Match": etag, "If-Unmodified-Since": past}
    assert (await s3c.get("/tansu/meta.json", headers=h)).status == 200
    h = {"If-None-Match": md5(b"old"), "If-Modified-Since": future}
    assert (await s3c.get("/tansu/meta.json", headers=h)).status == 200


# ---------------------------------------------------------------------------- listing
async def test_list_prefix_paging_start_after_and_delimiter(s3c: Client) -> None:
    recs = [f"t/p0/records/{i:05d}.batch" for i in range(25)]
    others = [
        "t/p0/watermark.json",
        "t/p1/records/00000.batch",
        "g/c1.json",
        "g/c1/o.json",
        "g/c2.json",
        "x&<y>.json",
    ]
    for key in recs + others:
        assert (await s3c.put(f"/tansu/{key}", data=key.encode())).status == 200

    root = await list_v2(s3c, prefix="t/p0/records/")
    assert keys_of(root) == recs
    assert root.findtext(f"{NS}IsTruncated") == "false" and root.findtext(f"{NS}KeyCount") == "25"
    first = root.find(f"{NS}Contents")
    assert first is not None
    assert first.findtext(f"{NS}ETag") == md5(recs[0].encode())
    assert first.findtext(f"{NS}Size") == str(len(recs[0]))
    assert (first.findtext(f"{NS}LastModified") or "").endswith("Z")

    keys, _, pages = await list_all(s3c, prefix="t/p0/records/", **{"max-keys": "7"})
    assert keys == recs and pages == 4

    everything = sorted(recs + others)
    keys, _, pages = await list_all(s3c, **{"max-keys": "5"})
    assert keys == everything and pages == 7
    assert (await list_all(s3c))[0] == everything

    root = await list_v2(s3c, prefix="t/p0/records/", **{"start-after": recs[20]})
    assert keys_of(root) == recs[21:]
    assert root.findtext(f"{NS}StartAfter") == recs[20]
    root = await list_v2(s3c, prefix="t/p0/records/", **{"start-after": "a"})  # before prefix
    assert keys_of(root) == recs
    assert keys_of(await list_v2(s3c, prefix="nothing/")) == []
    assert keys_of(await list_v2(s3c, prefix="x&<")) == ["x&<y>.json"]  # escaped in XML

    keys, prefixes, _ = await list_all(s3c, prefix="g/", delimiter="/")
    assert keys == ["g/c1.json", "g/c2.json"] and prefixes == ["g/c1/"]
    keys, prefixes, pages = await list_all(s3c, delimiter="/", **{"max-keys": "1"})
    assert (keys, prefixes, pages) == (["x&<y>.json"], ["g/", "t/"], 3)

    root = await list_v2(s3c, **{"max-keys": "5000"})
    assert root.findtext(f"{NS}MaxKeys") == "1000"
    root = await list_v2(s3c, **{"max-keys": "0"})
    assert keys_of(root) == [] and root.findtext(f"{NS}KeyCount") == "0"
    r = await s3c.get("/tansu", params={"list-type": "2", "continuation-token": "bm9wZQ=="})
    assert r.status == 400 and await error_code(r) == "InvalidArgument"
    r = await s3c.get("/tansu", params={"list-type": "2", "max-keys": "-1"})
    assert r.status == 400


async def test_list_pages_of_a_thousand(s3c: Client) -> None:
    """Tansu's pattern: a whole partition, 1,000 keys a page, by continuation token."""
    for i in range(2345):
        await s3c.put(f"/tansu/r/{i:08d}.batch", data=b"x")
    keys, _, pages = await list_all(s3c, prefix="r/")
    assert pages == 3 and keys == [f"r/{i:08d}.batch" for i in range(2345)]


def reference_page(
    keys: list[str], prefix: str, after: str, delimiter: str, max_keys: int
) -> tuple[list[str], list[str]]:
    """ListObjectsV2 by brute force (one page, no token), to check the index against: the keys
    after start-after, each rolled up into its common prefix (listed once)."""
    contents: list[str] = []
    prefixes: list[str] = []
    for key in sorted(keys):
        if not key.startswith(prefix) or key <= after:
            continue
        if delimiter and delimiter in key[len(prefix) :]:
            common = key[: key.index(delimiter, len(prefix)) + len(delimiter)]
            if common in prefixes:
                continue
            entry_is_prefix = True
        else:
            entry_is_prefix = False
        if len(contents) + len(prefixes) == max_keys:
            break
        if entry_is_prefix:
            prefixes.append(common)
        else:
            contents.append(key)
    return contents, prefixes


_key = st.text(alphabet="ab/.é", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(_key, max_size=40, unique=True),
    prefix=st.text(alphabet="ab/", max_size=3),
    after=st.text(alphabet="ab/.", max_size=4),
    delimiter=st.sampled_from(["", "/", "."]),
    max_keys=st.integers(0, 6),
)
def test_list_page_matches_brute_force(
    keys: list[str], prefix: str, after: str, delimiter: str, max_keys: int
) -> None:
    index = KeyIndex()
    for n, key in enumerate(keys):
        index.put(key, Meta(n, n, n, bytes(16)))
    page = list_page(index, prefix, after, False, delimiter, max_keys)
    contents = [ET.fromstring(c).findtext("Key") for c in page.contents]
    assert (contents, page.prefixes) == reference_page(keys, prefix, after, delimiter, max_keys)
    # the continuation token resumes exactly where the page stopped
    seen_keys, seen_prefixes = list(contents), list(page.prefixes)
    while page.truncated and max_keys:
        assert page.next_token is not None
        mark, is_prefix = s3.decode_token(page.next_token)
        page = list_page(index, prefix, mark, is_prefix, delimiter, max_keys)
        seen_keys += [ET.fromstring(c).findtext("Key") for c in page.contents]
        seen_prefixes += page.prefixes
    if max_keys:
        assert (seen_keys, seen_prefixes) == reference_page(keys, prefix, after, delimiter, 10**6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3000)), max_size=400))
def test_key_index_matches_a_dict(ops: list[tuple[bool, int]]) -> None:
    KeyIndex.LOAD, load = 4, KeyIndex.LOAD  # small chunks: splits and merges happen
    try:
        index, ref = KeyIndex(), {}
        for add, n in ops:
            key = f"k{n:05d}"
            if add:
                meta = Meta(n, n * 7, n * 3, hashlib.md5(key.encode()).digest())
                index.put(key, meta)
                ref[key] = meta
            else:
                assert index.pop(key) == ref.pop(key, None)
        assert len(index) == len(ref)
        assert list(index) == sorted(ref.items())
        for key in list(ref)[:20]:
            assert index.get(key) == ref[key]
            assert [k for k, _ in index.iter_from(key, inclusive=False)] == sorted(
                k for k in ref if k > key
            )
        assert index.get("nope") is None
        rebuilt = KeyIndex.from_sorted(sorted(ref.items()))
        assert list(rebuilt) == list(index)
    finally:
        KeyIndex.LOAD = load


# ---------------------------------------------------------------------------- DeleteObjects
def delete_body(keys: list[str], quiet: bool = False) -> bytes:
    objs = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
    q = "<Quiet>true</Quiet>" if quiet else ""
    return f'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{objs}{q}</Delete>'.encode()


def content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


async def test_delete_objects(s3c: Client, tmp_path: Path) -> None:
    for key in ("t/gone/0.batch", "t/gone/watermark.json", "t/kept/0.batch"):
        await s3c.put(f"/tansu/{key}", data=b"x")
    body = delete_body(["t/gone/0.batch", "t/gone/watermark.json", "t/never"])
    r = await s3c.post("/tansu?delete", data=body, headers={"Content-MD5": content_md5(body)})
    assert r.status == 200
    root = ET.fromstring(await r.read())
    assert [d.findtext(f"{NS}Key") for d in root.findall(f"{NS}Deleted")] == [
        "t/gone/0.batch",
        "t/gone/watermark.json",
        "t/never",
    ]
    assert keys_of(await list_v2(s3c)) == ["t/kept/0.batch"]
    assert not (tmp_path / "data" / "tansu" / "t" / "gone").exists()

    body = delete_body(["t/kept/0.batch"], quiet=True)
    r = await s3c.post("/tansu?delete", data=body, headers={"Content-MD5": content_md5(b"no")})
    assert r.status == 400 and await error_code(r) == "BadDigest"
    r = await s3c.post("/tansu?delete", data=body, headers={"Content-MD5": content_md5(body)})
    assert r.status == 200 and ET.fromstring(await r.read()).find(f"{NS}Deleted") is None
    assert keys_of(await list_v2(s3c)) == []

    r = await s3c.post("/tansu?delete", data=b"<nope")
    assert r.status == 400 and await error_code(r) == "MalformedXML"


# ---------------------------------------------------------------------------- errors
async def test_unsupported_and_invalid_requests(s3c: Client) -> None:
    await s3c.put("/tansu/k", data=b"0123456789")
    for method, url, headers in [
        ("GET", "/", {}),
        ("GET", "/tansu", {}),  # ListObjects v1
        ("GET", "/tansu?list-type=2&encoding-type=url", {}),
        ("GET", "/tansu/k", {"Range": "bytes=0-1"}),
        ("PUT", "/tansu/k2", {"x-amz-meta-owner": "me"}),
        ("PUT", "/tansu/k2", {"x-amz-copy-source": "/tansu/k"}),
        ("POST", "/tansu/k?uploads", {}),
        ("DELETE", "/tansu", {}),
    ]:
        r = await s3c.request(method, url, headers=headers)
        assert r.status == 501, (method, url)
        assert await error_code(r) == "NotImplemented"
    for key in ("a//b", "a/%2E%2E/b", "a/%2E/b", "trailing/", s3.TEMP_PREFIX + "x", "ctl%01"):
        r = await s3c.put(URL(f"/tansu/{key}", encoded=True), data=b"x")
        assert r.status == 400 and await error_code(r) == "InvalidArgument", key
    r = await s3c.put("/tansu/" + "k" * 1100, data=b"x")
    assert r.status == 400 and await error_code(r) == "KeyTooLongError"
    r = await s3c.put("/tansu/s", data=b"x", headers={"x-amz-content-sha256": "0" * 64})
    assert r.status == 400 and await error_code(r) == "XAmzContentSHA256Mismatch"
    sha = hashlib.sha256(b"x").hexdigest()
    r = await s3c.put("/tansu/s", data=b"x", headers={"x-amz-content-sha256": sha})
    assert r.status == 200
    r = await s3c.put("/tansu/s", data=b"x", headers={"Content-MD5": content_md5(b"y")})
    assert r.status == 400 and await error_code(r) == "BadDigest"
    # a key cannot be both an object and a folder of objects on this server
    r = await s3c.put("/tansu/k/sub", data=b"x")
    assert r.status == 409 and await error_code(r) == "KeyConflict"
    await s3c.put("/tansu/d/sub", data=b"x")
    r = await s3c.put("/tansu/d", data=b"x")
    assert r.status == 409
    assert keys_of(await list_v2(s3c)) == ["d/sub", "k", "s"]
    # …but an empty folder (a crash between deleting a file and its folder) is no conflict
    store = store_of(s3c)
    (store.root / "tansu" / "e" / "f").mkdir(parents=True)
    assert (await s3c.put("/tansu/e/f", data=b"x")).status == 200
    assert (await s3c.put("/tansu/e/f/g", data=b"x")).status == 409


async def test_object_size_limit(tmp_path: Path) -> None:
    async with serve(tmp_path, max_object_size=1000) as c:
        await c.put("/tansu")
        assert (await c.put("/tansu/ok", data=b"x" * 1000)).status == 200
        r = await c.put("/tansu/big", data=b"x" * 1001)
        assert r.status == 400 and await error_code(r) == "EntityTooLarge"


# ---------------------------------------------------------------------------- disk
async def test_failed_write_leaves_the_old_object_whole(
    s3c: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await s3c.put("/tansu/p/w.json", data=b"old")
    real_replace = os.replace

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    r = await s3c.put("/tansu/p/w.json", data=b"new")
    assert r.status == 500 and await error_code(r) == "InternalError"
    monkeypatch.setattr(os, "replace", real_replace)
    folder = tmp_path / "data" / "tansu" / "p"
    assert sorted(os.listdir(folder)) == ["w.json"]  # no temp file left
    r = await s3c.get("/tansu/p/w.json")
    assert await r.read() == b"old" and r.headers["ETag"] == md5(b"old")


def test_write_file_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "obj"
    st1 = s3.write_file(target, tmp_path, b"1" * 100_000, True)
    assert target.read_bytes() == b"1" * 100_000 and st1.st_size == 100_000
    seen: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:  # a reader never sees a partial object
        while not stop.is_set():
            seen.append(target.read_bytes())

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(30):
            s3.write_file(target, tmp_path, str(i % 10).encode() * 100_000, False)
    finally:
        stop.set()
        t.join()
    assert all(len(x) == 100_000 and len(set(x)) == 1 for x in seen)
    assert os.listdir(target.parent) == ["obj"]


async def test_index_is_rebuilt_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    objects = {f"t/p/{i:04d}.batch": os.urandom(i % 50) for i in range(300)}
    async with serve(data) as c:
        await c.put("/tansu")
        for key, body in objects.items():
            await c.put(f"/tansu/{key}", data=body)
        before = await (await c.get("/tansu", params={"list-type": "2"})).read()

    # clean stop: the saved index spares re-hashing
    assert (data / s3.SNAPSHOT_NAME).exists()
    store = Store.open(data)
    assert store.stats.objects == 300 and store.stats.hashed == 0
    assert not (data / s3.SNAPSHOT_NAME).exists()  # consumed: not trusted twice
    store._unlock()  # a "crash": no index saved

    # after a crash every object is hashed again, and a leftover temp file is removed
    (data / "tansu" / "t" / "p" / f"{s3.TEMP_PREFIX}abc").write_bytes(b"torn")
    async with serve(data) as c:
        store = store_of(c)
        assert store.stats.hashed == 300 and store.stats.removed_temp == 1
        after = await (await c.get("/tansu", params={"list-type": "2"})).read()
        assert after == before
        for key in ("t/p/0007.batch", "t/p/0299.batch"):
            r = await c.get(f"/tansu/{key}")
            assert await r.read() == objects[key] and r.headers["ETag"] == md5(objects[key])

    # a file changed behind the server's back between runs is re-hashed, not trusted
    changed = data / "tansu" / "t" / "p" / "0007.batch"
    changed.write_bytes(b"changed!")
    async with serve(data) as c:
        assert store_of(c).stats.hashed == 1
        assert (await c.head("/tansu/t/p/0007.batch")).headers["ETag"] == md5(b"changed!")


def test_one_server_per_folder(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        with pytest.raises(ServerError, match="another S3 server"):
            Store.open(tmp_path)
    finally:
        store.close()
    Store.open(tmp_path).close()  # free again once closed


# ---------------------------------------------------------------------------- localbucket
@contextlib.contextmanager
def localbucket_server(root: Path) -> Iterator[int]:
    """PyPI localbucket's own server, in a thread (what `omnihub up` ran before hub.s3)."""
    from http.server import ThreadingHTTPServer

    import localbucket  # a dev dependency, for exactly this test

    localbucket.S3Handler.data_root = root
    localbucket.S3Handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), localbucket.S3Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


async def test_reads_what_localbucket_wrote(tmp_path: Path) -> None:
    import aiohttp

    data = tmp_path / "data"
    data.mkdir()
    objects = {
        "clusters/c/meta.json": b'{"topics":{}}',
        "clusters/c/topics/t/partitions/0000000000/records/00000000000000000000.batch": b"b0",
        "clusters/c/topics/t/partitions/0000000000/watermark.json": b'{"high":1}',
        "clusters/c/groups/consumers/g.json": b"{}",
    }
    with localbucket_server(data) as port:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            assert (await http.put("/tansu")).status == 200
            etags = {}
            for key, body in objects.items():
                async with http.put(f"/tansu/{key}", data=body) as r:
                    assert r.status == 200
                    etags[key] = r.headers["ETag"]
            async with http.get("/tansu", params={"list-type": "2"}) as r:
                theirs = ET.fromstring(await r.read())
    # what a crash of localbucket leaves behind: a temp file; and its uploads folder
    (data / "tansu" / "clusters" / "c" / ".localbucket-x1y2").write_bytes(b"partial")
    (data / ".localbucket-uploads" / ("0" * 32)).mkdir(parents=True)

    async with serve(data) as c:
        ours = await list_v2(c)
        assert keys_of(ours) == keys_of(theirs) == sorted(objects)
        assert [e.text for e in ours.iter(f"{NS}ETag")] == [
            e.text for e in theirs.iter(f"{NS}ETag")
        ]
        assert len(list(ours.iter(f"{NS}ETag"))) == len(objects)
        for key, body in objects.items():
            r = await c.get(f"/tansu/{key}")
            assert await r.read() == body and r.headers["ETag"] == etags[key]
        # tansu's next compare-and-set uses the ETag localbucket gave it
        key = "clusters/c/topics/t/partitions/0000000000/watermark.json"
        r = await c.put(f"/tansu/{key}", data=b'{"high":2}', headers={"If-Match": etags[key]})
        assert r.status == 200
        assert store_of(c).stats.removed_temp == 1

    # and back: localbucket still reads what hub.s3 wrote (same layout)
    with localbucket_server(data) as port:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.get(f"/tansu/{key}") as r:
                assert await r.read() == b'{"high":2}'
