"""GridFS blobs, content-addressed: file id = filename = sha256 of the bytes.

Attachments (bucket ``attachments``) and raw mail kept for dead letters or oversized parts
(bucket ``raw_mail``) are stored once however often they arrive: a second put of the same
bytes is a no-op, so a replayed delivery never duplicates a blob.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo.errors import DuplicateKeyError

from store.mongo import Store

ATTACHMENTS = "attachments"
RAW_MAIL = "raw_mail"
CHUNK_BYTES = 255 * 1024


def _bucket(store: Store, bucket: str) -> AsyncGridFSBucket:
    return AsyncGridFSBucket(store.db, bucket_name=bucket, chunk_size_bytes=CHUNK_BYTES)


async def exists(store: Store, sha256: str, bucket: str = ATTACHMENTS) -> bool:
    return await store.db[f"{bucket}.files"].find_one({"_id": sha256}, {"_id": 1}) is not None


async def put(
    store: Store,
    data: bytes,
    *,
    bucket: str = ATTACHMENTS,
    metadata: dict[str, Any] | None = None,
    sha256: str | None = None,
) -> str:
    """Store ``data`` unless it is there already; returns its sha256 (= GridFS file id)."""
    sha = sha256 or hashlib.sha256(data).hexdigest()
    if await exists(store, sha, bucket):
        return sha
    grid = _bucket(store, bucket)
    for _ in range(2):
        try:
            await grid.upload_from_stream_with_id(sha, sha, data, metadata=metadata or {})
            return sha
        except DuplicateKeyError:
            # Someone stored the same bytes concurrently (fine), or an earlier upload died
            # between its chunks and its files document: clear the orphan chunks and retry.
            if await exists(store, sha, bucket):
                return sha
            await store.db[f"{bucket}.chunks"].delete_many({"files_id": sha})
    raise RuntimeError(f"could not store blob {sha[:12]}… in {bucket}")


async def get(store: Store, sha256: str, bucket: str = ATTACHMENTS) -> bytes | None:
    try:
        stream = await _bucket(store, bucket).open_download_stream(sha256)
    except NoFile:
        return None
    return bytes(await stream.read())
