"""The Python SDK: kpt.Client -> Job (status, events, wait, result, download).

    import kpt
    client = kpt.Client()                      # KPT_GATEWAY_ADDR, KPT_TOKEN
    model = client.upload("model.pt2")
    job = client.optimize(model, target="cpu", level="O2")
    job.wait()
    print(job.result.speedup)
    job.download("out/")

Errors arrive as the typed exceptions of kpt.errors, rebuilt from the gateway's ErrorDetail.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Iterable, Iterator

import grpc
from grpc_status import rpc_status

from kpt import contract as c
from kpt import grpc_options, settings
from kpt.errors import Internal, InvalidArgument, KptError, Timeout, Unavailable, from_dict

CHUNK = 4 << 20  # upload chunk: below the gateway's 16 MiB message limit (grpc_options.MAX_MESSAGE)


def _typed(e: grpc.RpcError) -> KptError:
    st = rpc_status.from_call(e)
    if st is not None:
        for any_ in st.details:
            if any_.Is(c.ErrorDetail.DESCRIPTOR):
                d = c.ErrorDetail()
                any_.Unpack(d)
                return from_dict({"code": d.code, "message": d.message, "metadata": dict(d.metadata)})
    if e.code() == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"gateway unreachable: {e.details()}")
    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Timeout(e.details() or "deadline exceeded")
    return Internal(f"{e.code().name}: {e.details()}")


class _Calls:
    """Wraps the stub so every call carries the token and raises typed errors."""

    def __init__(self, stub: c.GatewayStub, token: str) -> None:
        self._stub = stub
        self._md = (("authorization", f"Bearer {token}"),) if token else ()

    def unary(self, name: str, request, timeout: float | None = 60):
        try:
            return getattr(self._stub, name)(request, metadata=self._md, timeout=timeout)
        except grpc.RpcError as e:
            raise _typed(e) from None

    def stream_out(self, name: str, request, timeout: float | None = None) -> Iterator:
        try:
            yield from getattr(self._stub, name)(request, metadata=self._md, timeout=timeout)
        except grpc.RpcError as e:
            raise _typed(e) from None

    def stream_in(self, name: str, requests: Iterable, timeout: float | None = None):
        try:
            return getattr(self._stub, name)(requests, metadata=self._md, timeout=timeout)
        except grpc.RpcError as e:
            raise _typed(e) from None


class Job:
    """A handle on one job; refresh() re-reads it, wait() blocks until it ends."""

    def __init__(self, client: "Client", job: c.Job) -> None:
        self._client = client
        self.proto = job

    @property
    def id(self) -> str:
        return self.proto.id

    @property
    def state(self) -> str:
        return c.state_name(self.proto.state)

    @property
    def done(self) -> bool:
        return self.proto.state in c.TERMINAL

    @property
    def result(self) -> c.Result:
        return self.proto.result

    @property
    def error(self) -> c.ErrorDetail | None:
        return self.proto.error if self.proto.HasField("error") else None

    def refresh(self) -> "Job":
        self.proto = self._client.calls.unary("GetJob", c.GetJobRequest(job_id=self.id)).job
        return self

    def events(self, timeout: float | None = None) -> Iterator[c.Event]:
        """Events as they happen, until the job ends (then the job itself is refreshed); timeout: of the stream."""
        for update in self._client.calls.stream_out("WatchJob", c.WatchJobRequest(job_id=self.id), timeout=timeout):
            if update.WhichOneof("update") == "event":
                yield update.event
            else:
                self.proto = update.job

    def wait(self, timeout: float | None = None, raise_on_failure: bool = True) -> "Job":
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(f"job {self.id} still {self.state} after {timeout}s")
            try:
                for _ in self.events(timeout=left):  # the stream's own deadline: a queued job sends nothing
                    pass
            except Timeout:
                if deadline is None:
                    raise
                continue  # the stream's deadline: the loop's top says how long the job has been waited for
            if not self.done:
                self.refresh()
        if raise_on_failure and self.proto.state == c.JobState.JOB_STATE_FAILED:
            raise from_dict({"code": self.proto.error.code, "message": self.proto.error.message,
                             "metadata": dict(self.proto.error.metadata)})
        return self

    def cancel(self) -> "Job":
        self.proto = self._client.calls.unary("CancelJob", c.CancelJobRequest(job_id=self.id)).job
        return self

    def download(self, dest: str = ".", fmt: str | None = None) -> list[str]:
        """Write the job's artifacts (or the one format) into dest; returns the paths."""
        try:
            os.makedirs(dest, exist_ok=True)
        except OSError as e:  # a file of that name, no permission
            raise InvalidArgument(f"cannot create the folder {dest}: {e.strerror}") from None
        paths = []
        for art in self.result.artifacts:
            if fmt and c.format_name(art.format) != fmt:
                continue
            paths.append(self._client.download(self.id, art.sha256, os.path.join(dest, os.path.basename(art.name))))
        return paths

    def __repr__(self) -> str:
        return f"Job({self.id}, {c.target_name(self.proto.target)}, {self.state})"


class Client:
    def __init__(self, addr: str | None = None, token: str | None = None) -> None:
        self.addr = addr or settings.get("KPT_GATEWAY_ADDR")
        self.channel = grpc.insecure_channel(self.addr, options=grpc_options.client())
        self.calls = _Calls(c.GatewayStub(self.channel), token if token is not None else settings.get("KPT_TOKEN"))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- models ----------------------------------------------------------------------------
    def upload(self, path: str, fmt: int = c.ModelFormat.MODEL_FORMAT_UNSPECIFIED) -> c.ModelRef:
        h = hashlib.sha256()
        if not os.path.isfile(path):
            raise InvalidArgument(f"{path} is not a readable file ({'a folder' if os.path.isdir(path) else 'no such file'})")
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(CHUNK), b""):
                    h.update(block)
        except OSError as e:
            raise InvalidArgument(f"{path} is not a readable file ({e.strerror})") from None

        def parts():
            yield c.UploadModelRequest(header=c.UploadHeader(
                name=os.path.basename(path), format=fmt, size_bytes=size, sha256=h.hexdigest()))
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(CHUNK), b""):
                    yield c.UploadModelRequest(chunk=block)

        return self.calls.stream_in("UploadModel", parts()).model

    @staticmethod
    def zoo(name: str) -> c.ModelRef:
        return c.ModelRef(format=c.ModelFormat.MODEL_FORMAT_ZOO, name=name)

    # -- jobs ------------------------------------------------------------------------------
    def submit(self, spec: c.JobSpec, targets: Iterable[str] = ("auto",), job_id: str = "",
               bypass_cache: bool = False) -> list[Job]:
        req = c.SubmitJobRequest(spec=spec, targets=[c.parse_target(t) for t in targets], job_id=job_id,
                                 bypass_cache=bypass_cache)
        return [Job(self, j) for j in self.calls.unary("SubmitJob", req).jobs]

    def _spec(self, kind: str, model: c.ModelRef | str, level: str = "O2", **fields) -> c.JobSpec:
        if isinstance(model, str):
            model = self.zoo(model)
        spec = c.JobSpec(kind=c.parse_kind(kind), model=model, level=c.parse_level(level))
        for name, value in fields.items():
            if value is None:
                continue
            if name == "export_formats":
                spec.export_formats.extend(c.parse_format(f) for f in value)
            elif name == "precision":
                spec.precision = c.parse_precision(value)
            elif hasattr(value, "CopyFrom"):
                getattr(spec, name).CopyFrom(value)
            else:
                setattr(spec, name, value)
        return spec

    def optimize(self, model: c.ModelRef | str, target: str = "auto", level: str = "O2", **fields) -> Job:
        return self.submit(self._spec("optimize", model, level, **fields), [target])[0]

    def export(self, model: c.ModelRef | str, formats: Iterable[str], target: str = "cpu", **fields) -> Job:
        return self.submit(self._spec("export", model, "O0", export_formats=list(formats), **fields), [target])[0]

    def benchmark(self, model: c.ModelRef | str, target: str = "auto", level: str = "O2", **fields) -> Job:
        return self.submit(self._spec("benchmark", model, level, **fields), [target])[0]

    def job(self, job_id: str) -> Job:
        return Job(self, self.calls.unary("GetJob", c.GetJobRequest(job_id=job_id)).job)

    def jobs(self, group_id: str = "", state: str = "") -> list[Job]:
        try:
            st = c.JobState.Value("JOB_STATE_" + state.upper()) if state else 0
        except ValueError:
            names = [c.state_name(v) for v in c.JobState.values() if v]
            raise InvalidArgument(f"unknown state {state!r}; choose among {', '.join(names)}") from None
        out, token = [], ""
        while True:
            resp = self.calls.unary("ListJobs", c.ListJobsRequest(group_id=group_id, state=st, page_token=token))
            out.extend(Job(self, j) for j in resp.jobs)
            token = resp.next_page_token
            if not token:
                return out

    def targets(self) -> list[c.TargetInfo]:
        return list(self.calls.unary("ListTargets", c.ListTargetsRequest()).targets)

    def download(self, job_id: str, sha256: str, path: str) -> str:
        h = hashlib.sha256()
        tmp = path + ".part"
        try:
            with open(tmp, "wb") as f:
                for part in self.calls.stream_out("DownloadArtifact", c.DownloadArtifactRequest(job_id=job_id, sha256=sha256)):
                    if part.WhichOneof("part") == "chunk":
                        h.update(part.chunk)
                        f.write(part.chunk)
        except BaseException as e:  # a broken stream, a full disk, Ctrl-C: no partial artifact left behind
            if os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(e, OSError):
                raise InvalidArgument(f"cannot write {path}: {e.strerror or e}") from None
            raise
        if h.hexdigest() != sha256:
            os.unlink(tmp)
            raise Internal(f"downloaded artifact digest {h.hexdigest()[:12]} does not match {sha256[:12]}")
        os.replace(tmp, path)
        return path
