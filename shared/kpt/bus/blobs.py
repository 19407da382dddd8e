"""Content-addressed blobs (models, artifacts) in a JetStream object store.

A blob is named by the lowercase hex sha256 of its bytes and never travels inside a job message.
The layout is the standard NATS object store (ADR-20), so `nats object get`, nats-py's
`ObjectStore` and the Go client read what we write and we read what they write:

    stream   OBJ_<bucket>              subjects $O.<bucket>.C.> and $O.<bucket>.M.>
    chunks   $O.<bucket>.C.<nuid>      one message per chunk, in order
    meta     $O.<bucket>.M.<b64url(name)>  JSON ObjectInfo (size, chunks, nuid, digest "SHA-256=..."),
                                       published last with Nats-Rollup: sub

Why not nats-py's ObjectStore: its get() reads through an ordered push consumer and does a
thread hop per 128 KiB chunk (6-61 MiB/s here), its put() waits for every chunk's ack before
sending the next, and it purges its chunks even when the meta publish may have landed. Here:

- put: chunks go out with publish_async, up to WINDOW_BYTES unacknowledged, while a thread
  reads and hashes the next chunk of the file.
- get: JetStream direct get batches (server >= 2.11, ADR-31): one request returns up to
  WINDOW_BYTES of the object's chunks followed by an EOB marker; no consumer is created, any
  replica may answer. A short batch (a replica that lags behind the meta we read from the
  leader) is retried briefly before the blob is declared to be missing chunks.
- The digest is checked on every read. iter_chunks holds the last chunk back until it checks,
  so a stream that fails verification never delivers the complete bytes; get_to_file writes a
  temp file and renames it into place only when the digest matches.

Crash safety and dedup: the meta is published only after every chunk is acknowledged, so a put
killed midway leaves at most unreferenced chunks (never a blob that info() calls complete).
The meta publish is a compare-and-set (Nats-Expected-Last-Subject-Sequence = the meta sequence
seen before uploading): of two processes racing to store the same bytes one wins, the other
purges its chunks and returns the winner's info, so the same bytes stay stored once. Within one
process a per-digest lock makes the second put wait for the first and upload nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.errors import APIError, BadRequestError, NotFoundError
from nats.nuid import NUID

from kpt.errors import Internal, InvalidArgument, NotFound, Timeout, Unavailable

log = logging.getLogger(__name__)

# 1 MiB chunks, chosen by the sweep in docs/benchmarks/bus.md (bench/bus_blobs.py): 128 KiB (the
# nats-py default) is clearly slower; 512 KiB..8 MiB are within this VM's noise of each other,
# and at 1 GiB in one round-robin run 1 MiB beat 2 and 4 MiB. 1 MiB is also a stock server's
# max_payload (so the layout is the same on any server) and stays under gRPC's 4 MiB message
# limit, so iter_chunks can feed a gRPC stream as is. Clamped to the server's max_payload.
CHUNK_SIZE = 1 << 20
# Bytes in flight per transfer: unacknowledged chunks of a put; the queue of received chunks and
# the max_bytes of one direct-get batch of a get (so a get holds at most ~2x this). The server
# cuts a client whose pending outbound data passes max_pending (64 MiB default), and nats-py
# drops messages past a subscription's pending limit: stay well under both. 4..32 MiB measure the
# same on loopback (window rows of the sweep); 16 MiB leaves room for a higher-latency network.
WINDOW_BYTES = 16 << 20
OP_TIMEOUT_S = 30.0  # no progress (ack, chunk, API reply) for this long fails the transfer
SHORT_READ_RETRIES = 20  # direct-get batches that return nothing new before chunks count as missing
SHORT_READ_BACKOFF_S = 0.05

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_BUCKET_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
_DIGEST_PREFIX = "SHA-256="
_ERR_WRONG_LAST_SEQUENCE = 10071  # JetStream: Nats-Expected-Last-Subject-Sequence did not hold
_ERR_STREAM_NOT_FOUND = 10059
_ERR_STREAM_NAME_IN_USE = 10058  # created concurrently with a different config
_ZERO_TIME = "0001-01-01T00:00:00Z"  # what the Go client writes in a tombstone; Go cannot parse ""


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int


@dataclass(frozen=True)
class _Meta:
    """One meta message: what info() knows plus where the chunks live."""

    info: BlobInfo
    nuid: str
    chunks: int
    chunk_size: int
    deleted: bool
    seq: int  # stream sequence of the meta message, the compare-and-set token


class BlobStore:
    def __init__(self, js, bucket: str = "kpt_blobs", replicas: int = 1, chunk_size: int = CHUNK_SIZE) -> None:
        if not _BUCKET_RE.match(bucket):
            raise ValueError(f"bucket {bucket!r}: use letters, digits, '-' and '_' only")
        if replicas < 1:
            raise ValueError(f"replicas={replicas}: use 1, or 3 in a cluster")
        if not (1 << 10) <= chunk_size <= (64 << 20):
            raise ValueError(f"chunk_size={chunk_size}: use 1 KiB..64 MiB (default {CHUNK_SIZE})")
        self._js = js
        self._nc = js._nc  # nats-py keeps the connection private; needed for raw subscribe/publish
        self.bucket = bucket
        self.replicas = replicas
        self.chunk_size = chunk_size
        self._stream = f"OBJ_{bucket}"
        self._nuid = NUID()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    # -- bucket ------------------------------------------------------------------------------

    async def ensure(self) -> None:
        """Create the bucket or bind to it; safe when several processes race to create it."""
        with _typed_errors(f"ensure bucket {self.bucket}"):
            await self._ensure()

    async def _ensure(self) -> None:
        config = api.StreamConfig(
            name=self._stream,
            subjects=[f"$O.{self.bucket}.C.>", f"$O.{self.bucket}.M.>"],
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
            discard=api.DiscardPolicy.NEW,
            max_bytes=-1,
            max_consumers=0,  # what nats-py's create_object_store sends; 0 means unlimited
            allow_rollup_hdrs=True,
            allow_direct=True,
        )
        try:
            si = await self._js.stream_info(self._stream)
        except NotFoundError:
            try:
                si = await self._js.add_stream(config)
                log.info("created object store bucket %s (replicas=%d)", self.bucket, self.replicas)
            except BadRequestError as e:
                if e.err_code != _ERR_STREAM_NAME_IN_USE:
                    raise Internal(f"cannot create bucket {self.bucket}: {e}") from e
                si = await self._js.stream_info(self._stream)
        if si.config.num_replicas != self.replicas:
            log.warning(
                "bucket %s has %s replicas, not %d: left as it is", self.bucket, si.config.num_replicas, self.replicas
            )
        if not si.config.allow_direct:
            # A bucket made by an older tool: reads here need direct get (stateless batches).
            si.config.allow_direct = True
            await self._js.update_stream(si.config)
            log.info("enabled allow_direct on bucket %s", self.bucket)
        if self._chunk() < self.chunk_size:
            log.warning(
                "server max_payload %d < chunk_size %d: storing %d-byte chunks (slower; kpt.natsd sets 8 MiB)",
                self._nc.max_payload,
                self.chunk_size,
                self._chunk(),
            )

    def _chunk(self) -> int:
        return min(self.chunk_size, self._nc.max_payload)

    def _meta_subject(self, sha: str) -> str:
        return f"$O.{self.bucket}.M.{base64.urlsafe_b64encode(sha.encode()).decode()}"

    def _chunk_subject(self, nuid: str) -> str:
        return f"$O.{self.bucket}.C.{nuid}"

    # -- meta --------------------------------------------------------------------------------

    async def _meta(self, sha: str) -> _Meta | None:
        """The latest meta message for sha (a tombstone included), None if there never was one."""
        try:
            msg = await self._js.get_last_msg(self._stream, self._meta_subject(sha))
        except NotFoundError as e:
            if e.err_code == _ERR_STREAM_NOT_FOUND:
                raise Unavailable(f"object store bucket {self.bucket} does not exist; call ensure()") from e
            return None
        try:
            d = json.loads(msg.data)
            deleted = bool(d.get("deleted", False))
            size, chunks = int(d.get("size") or 0), int(d.get("chunks") or 0)
            nuid = d.get("nuid") or ""
            # Writers that omit max_chunk_size still bound their chunks by size/chunks on average.
            chunk_size = int((d.get("options") or {}).get("max_chunk_size") or 0) or -(-size // max(chunks, 1))
            digest = d.get("digest") or ""
        except (ValueError, TypeError, AttributeError) as e:
            raise Internal(f"unreadable meta for blob {sha}: {e}", sha256=sha) from e
        if not deleted:
            if not digest.upper().startswith(_DIGEST_PREFIX) or not nuid:
                raise Internal(f"meta of blob {sha} has no nuid or SHA-256 digest", sha256=sha)
            try:
                stored = base64.urlsafe_b64decode(digest[len(_DIGEST_PREFIX) :]).hex()
            except ValueError as e:
                raise Internal(f"meta of blob {sha} has a malformed digest", sha256=sha) from e
            if stored != sha:
                raise Internal(f"meta of blob {sha} records digest {stored}", sha256=sha, reason="digest_mismatch")
        return _Meta(BlobInfo(sha, size), nuid, chunks, chunk_size, deleted, msg.seq or 0)

    async def _publish_meta(self, payload: dict, expected_seq: int) -> bool:
        """Compare-and-set the meta message; False when another writer got there first."""
        headers = {
            api.Header.ROLLUP.value: "sub",
            api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(expected_seq),
        }
        try:
            await self._js.publish(
                self._meta_subject(payload["name"]),
                json.dumps(payload).encode(),
                timeout=OP_TIMEOUT_S,
                headers=headers,
            )
        except BadRequestError as e:
            if e.err_code == _ERR_WRONG_LAST_SEQUENCE:
                return False
            raise Internal(f"meta publish for blob {payload['name']} refused: {e}") from e
        return True

    async def info(self, sha256: str) -> BlobInfo | None:
        """The blob if it is completely stored, else None."""
        with _typed_errors(f"info of blob {sha256}"):
            meta = await self._meta(_check_sha(sha256))
        return None if meta is None or meta.deleted else meta.info

    # -- put ---------------------------------------------------------------------------------

    async def put_bytes(self, data: bytes) -> BlobInfo:
        """Store bytes (hashed first: an existing blob is not uploaded again)."""
        view = memoryview(data).cast("B")
        sha = (await asyncio.to_thread(hashlib.sha256, view)).hexdigest()

        def source(size: int) -> AsyncIterator[bytes]:
            return _memory_chunks(view, size)

        with _typed_errors(f"put of blob {sha}"):
            return await self._put(sha, source, None)

    async def put_file(self, path: str, sha256: str | None = None) -> BlobInfo:
        """Store a file; hashes it first unless sha256 is given (and checks it while uploading)."""
        if sha256 is None:
            sha256 = await asyncio.to_thread(_hash_file, path)
        sha = _check_sha(sha256)
        h = hashlib.sha256()  # the upload hashes what it sends: a wrong digest or a changing file fails

        def source(size: int) -> AsyncIterator[bytes]:
            return _file_chunks(path, size, h)

        with _typed_errors(f"put of blob {sha}"):
            return await self._put(sha, source, h)

    async def _put(self, sha: str, source, h) -> BlobInfo:
        lock, users = self._locks.get(sha, (asyncio.Lock(), 0))
        self._locks[sha] = (lock, users + 1)
        try:
            async with lock:  # a second put of the same digest in this process waits, then dedups
                meta = await self._meta(sha)
                if meta is not None and not meta.deleted:
                    log.debug("blob %s already stored", sha)
                    return meta.info
                return await self._upload(sha, source(self._chunk()), h, meta.seq if meta else 0)
        finally:
            lock, users = self._locks[sha]
            if users == 1:
                del self._locks[sha]
            else:
                self._locks[sha] = (lock, users - 1)

    async def _upload(self, sha: str, chunks: AsyncIterator[bytes], h, expected_seq: int) -> BlobInfo:
        nuid = self._nuid.next().decode()
        subject = self._chunk_subject(nuid)
        inflight: deque[tuple[asyncio.Future, int]] = deque()
        inflight_bytes = size = count = 0
        meta_sent = False
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    inflight.append((await self._js.publish_async(subject, chunk), len(chunk)))
                    inflight_bytes += len(chunk)
                    size += len(chunk)
                    count += 1
                    while inflight_bytes > WINDOW_BYTES:
                        fut, n = inflight.popleft()
                        await _acked(fut)
                        inflight_bytes -= n
            while inflight:
                await _acked(inflight.popleft()[0])
            if h is not None and h.hexdigest() != sha:
                raise InvalidArgument(
                    f"content hashes to {h.hexdigest()}, not {sha} (wrong sha256 given, or the file changed)",
                    sha256=sha,
                )
            digest = base64.urlsafe_b64encode(bytes.fromhex(sha)).decode()
            payload = {
                "name": sha,
                "options": {"max_chunk_size": self._chunk()},
                "bucket": self.bucket,
                "nuid": nuid,
                "size": size,
                "mtime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "chunks": count,
                "digest": _DIGEST_PREFIX + digest,
            }
            while True:
                meta_sent = True
                if await self._publish_meta(payload, expected_seq):
                    log.info("stored blob %s (%d bytes, %d chunks)", sha, size, count)
                    return BlobInfo(sha, size)
                meta_sent = False  # refused: our meta is not there
                current = await self._meta(sha)
                if current is not None and not current.deleted:
                    log.info("blob %s was stored concurrently; dropping our copy", sha)
                    await self._purge(subject)
                    return current.info
                expected_seq = current.seq if current else 0  # deleted in between: try again
        except BaseException:
            await asyncio.shield(self._abort(sha, nuid, inflight, meta_sent))
            raise

    async def _abort(self, sha: str, nuid: str, inflight: deque, meta_sent: bool) -> None:
        """Remove the chunks of a failed put, unless its meta may have landed and points at them."""
        for fut, _ in inflight:  # purge only after in-flight chunks landed, or they would outlive it
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(fut, OP_TIMEOUT_S)
        try:
            if meta_sent:
                current = await self._meta(sha)
                if current is None or current.nuid == nuid:
                    log.warning("put of blob %s failed after its meta was sent; keeping chunks %s", sha, nuid)
                    return
            await self._purge(self._chunk_subject(nuid))
        except Exception:  # noqa: BLE001 - the original error is what the caller needs to see
            log.exception("could not clean up chunks %s of failed put of blob %s", nuid, sha)

    async def _purge(self, subject: str) -> None:
        await self._js.purge_stream(self._stream, subject=subject)

    # -- get ---------------------------------------------------------------------------------

    async def get_to_file(self, sha256: str, path: str) -> BlobInfo:
        """Download into a temp file next to `path`, renamed into place once the digest checks."""
        with _typed_errors(f"get of blob {sha256}"):
            meta = await self._require(sha256)
            await self._download(meta, path)
        return meta.info

    async def _download(self, meta: _Meta, path: str) -> None:
        loop = asyncio.get_running_loop()
        tmp = f"{path}.part-{self._nuid.next().decode()}"
        h = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as f:

                def hash_and_write(chunk: bytes) -> None:  # one thread hop per chunk: measured faster than two
                    h.update(chunk)
                    f.write(chunk)

                working: asyncio.Future | None = None  # chunk i is hashed and written while i+1 arrives
                try:
                    async with contextlib.aclosing(self._fetch(meta)) as chunks:
                        async for chunk in chunks:
                            if working is not None:
                                await working
                            working = loop.run_in_executor(None, hash_and_write, chunk)
                            size += len(chunk)
                finally:
                    if working is not None:
                        await asyncio.wait([working])  # let a running write end before the file closes
                if working is not None:
                    working.result()  # raises if the last write failed
            _check_digest(meta, size, h)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def iter_chunks(self, sha256: str) -> AsyncIterator[bytes]:
        """Yield the blob's chunks as stored (each at most the writer's chunk size, CHUNK_SIZE here).

        Raises NotFound on first iteration if absent; raises Internal instead of yielding the last
        chunk when size or digest do not match.
        """
        with _typed_errors(f"get of blob {sha256}"):
            meta = await self._require(sha256)
            async with contextlib.aclosing(self._verified_chunks(meta)) as chunks:
                async for chunk in chunks:
                    yield chunk

    async def _require(self, sha256: str) -> _Meta:
        meta = await self._meta(_check_sha(sha256))
        if meta is None or meta.deleted:
            raise NotFound(f"blob {sha256} not found", sha256=sha256)
        return meta

    async def _verified_chunks(self, meta: _Meta) -> AsyncIterator[bytes]:
        """The chunks in order; the last one is held back until size and digest check.

        Chunk i is hashed in a thread while the caller handles chunk i-1.
        """
        loop = asyncio.get_running_loop()
        h = hashlib.sha256()
        size = 0
        held: bytes | None = None
        hashing: asyncio.Future | None = None
        try:
            async with contextlib.aclosing(self._fetch(meta)) as chunks:
                async for chunk in chunks:
                    if hashing is not None:
                        await hashing
                    hashing = loop.run_in_executor(None, h.update, chunk)
                    size += len(chunk)
                    if held is not None:
                        yield held
                    held = chunk
            if hashing is not None:
                await hashing
        finally:
            if hashing is not None and not hashing.done():
                hashing.cancel()
        _check_digest(meta, size, h)
        if held is not None:
            yield held

    async def _fetch(self, meta: _Meta) -> AsyncIterator[bytes]:
        """The chunks in order, received by a task that keeps up to a window of them queued."""
        if meta.chunks == 0:
            return
        window = max(WINDOW_BYTES, meta.chunk_size + (64 << 10))
        queue: asyncio.Queue = asyncio.Queue(maxsize=max(2, window // max(meta.chunk_size, 1)))
        receiver = asyncio.create_task(self._receive(meta, window, queue))
        try:
            for _ in range(meta.chunks):
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            receiver.cancel()
            with contextlib.suppress(BaseException):
                await receiver

    async def _receive(self, meta: _Meta, window: int, queue: asyncio.Queue) -> None:
        """Read the chunk subject with direct-get batches of up to `window` bytes into `queue`.

        The next batch is asked for as soon as the previous one ends, so the server sends while
        the consumer is still working through the queue.
        """
        sha = meta.info.sha256
        subject = self._chunk_subject(meta.nuid)
        api_subject = f"{self._js._prefix}.DIRECT.GET.{self._stream}"
        inbox = self._nc.new_inbox()
        sub = None
        got, next_seq, stalls = 0, 1, 0
        try:
            sub = await self._nc.subscribe(inbox, pending_msgs_limit=1 << 20, pending_bytes_limit=4 * window)
            while got < meta.chunks:
                req = {"seq": next_seq, "next_by_subj": subject, "batch": meta.chunks - got, "max_bytes": window}
                await self._nc.publish(api_subject, json.dumps(req).encode(), reply=inbox)
                before = got
                while True:
                    try:
                        msg = await sub.next_msg(timeout=OP_TIMEOUT_S)
                    except nats.errors.TimeoutError as e:
                        raise Timeout(f"no chunk of blob {sha} for {OP_TIMEOUT_S}s", sha256=sha) from e
                    headers = msg.headers or {}
                    status = headers.get("Status")
                    if status is None:
                        got += 1
                        next_seq = int(headers["Nats-Sequence"]) + 1
                        await queue.put(msg.data)
                    elif status in ("204", "404"):  # end of batch / nothing (more) on the subject
                        break
                    else:
                        raise Internal(f"direct get of blob {sha} failed: status {status}", sha256=sha)
                if got > before:
                    stalls = 0
                    continue
                stalls += 1  # a replica behind the leader, or chunks really gone
                if stalls > SHORT_READ_RETRIES:
                    raise Internal(
                        f"blob {sha} is missing chunks: read {got} of {meta.chunks}",
                        sha256=sha,
                        reason="missing_chunks",
                    )
                await asyncio.sleep(SHORT_READ_BACKOFF_S)
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put(e)
        finally:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    # -- delete ------------------------------------------------------------------------------

    async def delete(self, sha256: str) -> None:
        """Remove a blob; deleting an absent blob is a no-op."""
        sha = _check_sha(sha256)
        with _typed_errors(f"delete of blob {sha}"):
            await self._delete(sha)

    async def _delete(self, sha: str) -> None:
        while True:
            meta = await self._meta(sha)
            if meta is None or meta.deleted:
                return
            tombstone = {
                "name": sha,
                "bucket": self.bucket,
                "nuid": meta.nuid,
                "size": 0,
                "chunks": 0,
                "digest": "",
                "mtime": _ZERO_TIME,
                "deleted": True,
            }
            if await self._publish_meta(tombstone, meta.seq):
                await self._purge(self._chunk_subject(meta.nuid))
                log.info("deleted blob %s", sha)
                return


@contextlib.contextmanager
def _typed_errors(what: str):
    """Map nats-py's exceptions to the kpt catalog at the public boundary; kpt errors pass through."""
    try:
        yield
    except asyncio.TimeoutError as e:  # nats.errors.TimeoutError is one too
        raise Timeout(f"{what}: timed out") from e
    except (
        nats.errors.NoRespondersError,
        nats.errors.ConnectionClosedError,
        nats.errors.StaleConnectionError,
        nats.errors.OutboundBufferLimitError,
        nats.js.errors.ServiceUnavailableError,
        nats.js.errors.NoStreamResponseError,
    ) as e:
        raise Unavailable(f"{what}: NATS/JetStream unavailable ({e})") from e
    except nats.errors.Error as e:
        raise Internal(f"{what}: {e}") from e


def _check_digest(meta: _Meta, size: int, h) -> None:
    sha = meta.info.sha256
    if size != meta.info.size or h.hexdigest() != sha:
        raise Internal(
            f"blob {sha} read back as {size} bytes hashing to {h.hexdigest()}", sha256=sha, reason="digest_mismatch"
        )


def _check_sha(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA_RE.match(sha256):
        raise InvalidArgument(f"not a lowercase hex sha256: {sha256!r}")
    return sha256


async def _acked(fut: asyncio.Future) -> None:
    try:
        await asyncio.wait_for(fut, OP_TIMEOUT_S)
    except asyncio.TimeoutError as e:
        raise Timeout(f"chunk not acknowledged within {OP_TIMEOUT_S}s") from e
    except APIError as e:
        raise Internal(f"chunk refused by JetStream: {e}") from e


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(CHUNK_SIZE):
            h.update(block)
    return h.hexdigest()


async def _memory_chunks(view: memoryview, size: int) -> AsyncIterator[bytes]:
    for off in range(0, len(view), size):
        yield view[off : off + size]


async def _file_chunks(path: str, size: int, h) -> AsyncIterator[bytes]:
    """Read and hash the next chunk in a thread while the caller publishes the current one."""
    loop = asyncio.get_running_loop()

    def read(f) -> bytes:
        block = f.read(size)
        while block and len(block) < size and (more := f.read(size - len(block))):
            block += more  # a raw read may return short; keep chunks full so layouts match
        h.update(block)
        return block

    f = await loop.run_in_executor(None, open, path, "rb", 0)  # open may block too (a FIFO, a slow disk)
    try:
        pending = loop.run_in_executor(None, read, f)
        try:
            while block := await pending:
                pending = loop.run_in_executor(None, read, f)
                yield block
        finally:
            await asyncio.wait([pending])  # never close the file under a running read
    finally:
        f.close()
