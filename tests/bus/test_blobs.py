"""BlobStore against a real nats-server (the session fixture from tests/conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid

import nats
import pytest
from nats.js import api

from kpt.bus import blobs
from kpt.bus.blobs import CHUNK_SIZE, BlobInfo, BlobStore
from kpt.errors import Internal, InvalidArgument, NotFound, Unavailable
from tests.conftest import acheck_for

pytestmark = pytest.mark.timeout(30)

CS = CHUNK_SIZE


@pytest.fixture
async def nc(nats_url):
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


@pytest.fixture
async def store(nc):
    s = BlobStore(nc.jetstream(), bucket=f"t_{uuid.uuid4().hex[:12]}")
    await s.ensure()
    yield s
    await nc.jetstream().delete_object_store(s.bucket)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def state(store: BlobStore) -> api.StreamState:
    return (await store._js.stream_info(f"OBJ_{store.bucket}")).state


async def chunk_subjects(store: BlobStore) -> dict[str, int]:
    """Chunk subject -> message count: one subject per stored copy of a blob."""
    info = await store._js.stream_info(f"OBJ_{store.bucket}", subjects_filter=f"$O.{store.bucket}.C.>")
    return dict(info.state.subjects or {})


async def read_all(store: BlobStore, digest: str) -> bytes:
    return b"".join([c async for c in store.iter_chunks(digest)])


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS + 12345])
async def test_round_trip(store, tmp_path, size):
    data = os.urandom(size)
    info = await store.put_bytes(data)
    assert info == BlobInfo(sha(data), size)
    assert await store.info(info.sha256) == info
    out = tmp_path / "out"
    assert await store.get_to_file(info.sha256, str(out)) == info
    assert out.read_bytes() == data
    assert os.listdir(tmp_path) == ["out"]  # the temp file was renamed, nothing left behind
    assert await read_all(store, info.sha256) == data
    expected_chunks = -(-size // CS)
    assert sum((await chunk_subjects(store)).values()) == expected_chunks


@pytest.mark.parametrize("size", [0, CS + 1])
async def test_put_file_round_trip(store, tmp_path, size):
    data = os.urandom(size)
    src = tmp_path / "src"
    src.write_bytes(data)
    info = await store.put_file(str(src))
    assert info == BlobInfo(sha(data), size)
    await store.get_to_file(info.sha256, str(tmp_path / "dst"))
    assert (tmp_path / "dst").read_bytes() == data


async def test_dedup_stores_bytes_once(store, tmp_path):
    data = os.urandom(2 * CS + 7)
    first = await store.put_bytes(data)
    before = await state(store)
    src = tmp_path / "src"
    src.write_bytes(data)
    assert await store.put_bytes(data) == first
    assert await store.put_file(str(src)) == first
    assert await store.put_file(str(src), first.sha256) == first
    after = await state(store)
    assert (after.messages, after.bytes) == (before.messages, before.bytes)
    assert len(await chunk_subjects(store)) == 1


async def test_iter_chunks_streams_the_stored_chunks(store):
    data = os.urandom(3 * CS + 5)
    info = await store.put_bytes(data)
    pieces = [c async for c in store.iter_chunks(info.sha256)]
    assert [len(p) for p in pieces] == [CS, CS, CS, 5]
    assert b"".join(pieces) == data


async def test_not_found(store, tmp_path):
    missing = sha(b"never stored")
    assert await store.info(missing) is None
    with pytest.raises(NotFound):
        await store.get_to_file(missing, str(tmp_path / "x"))
    with pytest.raises(NotFound):
        await read_all(store, missing)
    assert not (tmp_path / "x").exists()
    await store.delete(missing)  # deleting what is absent is a no-op


@pytest.mark.parametrize("bad", ["", "abc", "A" * 64, "g" * 64, sha(b"x").upper()])
async def test_rejects_malformed_digest(store, bad):
    with pytest.raises(InvalidArgument):
        await store.info(bad)


async def test_wrong_digest_given_is_refused_and_cleaned_up(store, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(CS + 3))
    claimed = sha(b"something else")
    with pytest.raises(InvalidArgument):
        await store.put_file(str(src), claimed)
    assert await store.info(claimed) is None
    await acheck_for(5, lambda: _no_chunks(store))


async def _no_chunks(store) -> bool:
    return not await chunk_subjects(store)


async def _publish_meta(store: BlobStore, name: str, **fields) -> None:
    meta = {"name": name, "bucket": store.bucket, "mtime": "2024-01-01T00:00:00Z", **fields}
    await store._js.publish(store._meta_subject(name), json.dumps(meta).encode(), headers={"Nats-Rollup": "sub"})


async def test_digest_mismatch_is_detected(store, tmp_path):
    good = os.urandom(2 * CS + 10)
    stored = await store.put_bytes(good)
    (nuid,) = [s.rsplit(".", 1)[1] for s in await chunk_subjects(store)]
    # A meta that claims other bytes but points at the stored chunks.
    other = bytes([good[0] ^ 1]) + good[1:]
    claimed = sha(other)
    digest = "SHA-256=" + base64.urlsafe_b64encode(bytes.fromhex(claimed)).decode()
    await _publish_meta(store, claimed, nuid=nuid, size=stored.size, chunks=3, digest=digest)
    assert await store.info(claimed) == BlobInfo(claimed, stored.size)

    with pytest.raises(Internal) as e:
        await store.get_to_file(claimed, str(tmp_path / "out"))
    assert e.value.metadata["reason"] == "digest_mismatch"
    assert os.listdir(tmp_path) == []  # neither the file nor its temp file

    got = []
    with pytest.raises(Internal):
        async for chunk in store.iter_chunks(claimed):
            got.append(chunk)
    assert len(got) == 2  # the last chunk is withheld when verification fails
    assert await store.get_to_file(stored.sha256, str(tmp_path / "good")) == stored


async def test_missing_chunk_is_detected(store, tmp_path, monkeypatch):
    monkeypatch.setattr(blobs, "SHORT_READ_RETRIES", 2)
    data = os.urandom(3 * CS)
    info = await store.put_bytes(data)
    first_chunk_seq = (await state(store)).first_seq
    await store._js.delete_msg(f"OBJ_{store.bucket}", first_chunk_seq + 1)  # the middle chunk
    with pytest.raises(Internal) as e:
        await store.get_to_file(info.sha256, str(tmp_path / "out"))
    assert e.value.metadata["reason"] == "missing_chunks"
    assert os.listdir(tmp_path) == []


async def test_delete_then_put_again(store, tmp_path):
    data = os.urandom(CS + 1)
    info = await store.put_bytes(data)
    await store.delete(info.sha256)
    assert await store.info(info.sha256) is None
    with pytest.raises(NotFound):
        await store.get_to_file(info.sha256, str(tmp_path / "out"))
    assert not await chunk_subjects(store)
    await store.delete(info.sha256)
    assert await store.put_bytes(data) == info
    assert await read_all(store, info.sha256) == data


async def test_nats_py_object_store_reads_what_we_write(store, tmp_path):
    data = os.urandom(2 * CS + 99)
    info = await store.put_bytes(data)
    obs = await store._js.object_store(store.bucket)
    meta = await obs.get_info(info.sha256)
    assert (meta.size, meta.chunks) == (len(data), 3)
    with open(tmp_path / "stock", "wb") as f:
        await obs.get(info.sha256, writeinto=f)
    assert (tmp_path / "stock").read_bytes() == data


async def test_we_read_what_nats_py_writes(store):
    data = os.urandom(300_000)  # nats-py's default 128 KiB chunks: 3 of them
    obs = await store._js.object_store(store.bucket)
    await obs.put(sha(data), data)
    assert await store.info(sha(data)) == BlobInfo(sha(data), len(data))
    assert await read_all(store, sha(data)) == data
    await store.delete(sha(data))
    with pytest.raises(nats.js.errors.ObjectNotFoundError):
        await obs.get_info(sha(data))


async def test_same_blob_from_two_tasks_is_uploaded_once(store):
    data = os.urandom(4 * CS)
    a, b = await asyncio.gather(store.put_bytes(data), store.put_bytes(data))
    assert a == b == BlobInfo(sha(data), len(data))
    assert list((await chunk_subjects(store)).values()) == [4]


async def test_two_processes_racing_keep_one_copy(store, nats_url, tmp_path, caplog):
    """Writer A has checked for the blob and is uploading when writer B stores it: A's meta
    compare-and-set fails, A drops its chunks and returns B's info."""
    caplog.set_level(logging.INFO, logger="kpt.bus.blobs")
    data = os.urandom(3 * CS)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    go_on = threading.Event()

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(data[: CS + 1])  # enough for A to publish its first chunk
            f.flush()
            go_on.wait(20)
            f.write(data[CS + 1 :])

    feeder = asyncio.create_task(asyncio.to_thread(feed))
    writer_a = asyncio.create_task(store.put_file(str(fifo), sha(data)))
    await acheck_for(10, lambda: _has_chunks(store))  # A is past its dedup check

    nc_b = await nats.connect(nats_url)
    try:
        store_b = BlobStore(nc_b.jetstream(), bucket=store.bucket)
        info_b = await store_b.put_bytes(data)
    finally:
        await nc_b.close()
    go_on.set()
    assert await writer_a == info_b == BlobInfo(sha(data), len(data))
    await feeder
    assert "stored concurrently" in caplog.text
    assert list((await chunk_subjects(store)).values()) == [3]
    assert await read_all(store, sha(data)) == data


async def _has_chunks(store) -> bool:
    return bool(await chunk_subjects(store))


async def test_cancelled_put_leaves_nothing(store, tmp_path):
    data = os.urandom(3 * CS)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    go_on = threading.Event()

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(data[: CS + 1])
            f.flush()
            go_on.wait(20)
            with contextlib.suppress(BrokenPipeError):  # the cancelled put may close its end first
                f.write(data[CS + 1 :])

    feeder = asyncio.create_task(asyncio.to_thread(feed))
    put = asyncio.create_task(store.put_file(str(fifo), sha(data)))
    await acheck_for(10, lambda: _has_chunks(store))
    put.cancel()
    go_on.set()  # the pending file read ends, then the put cleans up
    with pytest.raises(asyncio.CancelledError):
        await put
    await feeder
    assert await store.info(sha(data)) is None
    assert not await chunk_subjects(store)


_KILLED_WRITER = """
import asyncio, sys, nats
from kpt.bus.blobs import BlobStore
async def main():
    nc = await nats.connect(sys.argv[1])
    await BlobStore(nc.jetstream(), bucket=sys.argv[2]).put_file(sys.argv[3], sys.argv[4])
asyncio.run(main())
"""


async def test_killed_put_is_never_complete(store, nats_url, tmp_path):
    data = os.urandom(3 * CS)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, nats_url, store.bucket, str(fifo), sha(data)])
    try:
        f = await asyncio.to_thread(open, fifo, "wb")
        await asyncio.to_thread(f.write, data[: CS + 1])
        await asyncio.to_thread(f.flush)
        await acheck_for(15, lambda: _has_chunks(store))
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        f.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert await store.info(sha(data)) is None  # orphaned chunks, but no blob
    with pytest.raises(NotFound):
        await read_all(store, sha(data))
    assert await store.put_bytes(data) == BlobInfo(sha(data), len(data))
    assert await read_all(store, sha(data)) == data


async def test_ensure_is_idempotent_under_races(nc):
    bucket = f"t_{uuid.uuid4().hex[:12]}"
    js = nc.jetstream()
    stores = [BlobStore(js, bucket=bucket) for _ in range(4)]
    try:
        await asyncio.gather(*(s.ensure() for s in stores))
        await stores[0].ensure()
        info = await stores[1].put_bytes(b"hello")
        assert await stores[2].info(info.sha256) == info
    finally:
        await js.delete_object_store(bucket)


async def test_ensure_binds_a_bucket_made_by_nats_py(nc):
    bucket = f"t_{uuid.uuid4().hex[:12]}"
    js = nc.jetstream()
    await js.create_object_store(bucket)
    try:
        s = BlobStore(js, bucket=bucket)
        await s.ensure()
        assert await s.put_bytes(b"x") == BlobInfo(sha(b"x"), 1)
    finally:
        await js.delete_object_store(bucket)


def test_config_validates_itself():
    with pytest.raises(ValueError):
        BlobStore(_FakeJs(), bucket="bad.name")
    with pytest.raises(ValueError):
        BlobStore(_FakeJs(), chunk_size=0)
    with pytest.raises(ValueError):
        BlobStore(_FakeJs(), replicas=0)


class _FakeJs:
    _nc = None


async def test_connection_lost_before_the_chunks_is_a_typed_error(store, nats_url, tmp_path):
    # The connection closes between reading the meta and reading the chunks: the get fails with a typed
    # error (the receiver could not subscribe) instead of waiting forever for chunks that never come.
    info = await store.put_bytes(os.urandom(CS + 1))
    nc_b = await nats.connect(nats_url)
    store_b = BlobStore(nc_b.jetstream(), bucket=store.bucket)
    read_meta = store_b._meta

    async def meta_then_close(digest):
        meta = await read_meta(digest)
        await nc_b.close()
        return meta

    store_b._meta = meta_then_close
    with pytest.raises(Unavailable):
        await asyncio.wait_for(store_b.get_to_file(info.sha256, str(tmp_path / "out")), 10)
    assert os.listdir(tmp_path) == []
