"""`kpt`: run the local mesh and drive jobs. Every command takes --json for scripts."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kpt import contract as c
from kpt import local, natsd, report, settings
from kpt.errors import InvalidArgument, KptError, NotFound, Unavailable

app = typer.Typer(no_args_is_help=True, add_completion=False, help="KernelPyTorch Mesh")
err = Console(stderr=True)
JSON = typer.Option(False, "--json", help="print machine-readable JSON")


def _home() -> Path:
    return Path(settings.get("KPT_HOME")).resolve()


def _out(obj, as_json: bool, render=None) -> None:
    if as_json:
        data = c.to_dict(obj) if hasattr(obj, "DESCRIPTOR") else obj
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        report.show(render(obj) if render else obj)


def _client():
    from kpt.client import Client

    token = settings.get("KPT_TOKEN")
    tok_file = _home() / "token"
    if not token and tok_file.exists():
        token = tok_file.read_text().strip()
    addr = settings.get("KPT_GATEWAY_ADDR")
    state = _state()
    if "KPT_GATEWAY_ADDR" not in os.environ and state:
        addr = state["gateway"]
    return Client(addr, token)


def _fail(e: KptError) -> None:
    err.print(f"[red]{e.code}[/red]: {escape(e.message)}")  # server text: "[...]" in it is not markup
    raise typer.Exit(2)


def _state() -> dict | None:
    """What `kpt up` wrote (.kpt/state.json), None when nothing is up; a file it cannot read fails with a hint."""
    path = _home() / "state.json"
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        if isinstance(state.get("gateway"), str) and isinstance(state.get("pids"), dict):
            return state
        problem = "its gateway or pids are missing"
    except (OSError, ValueError, AttributeError) as e:
        problem = str(e)
    _fail(InvalidArgument(f"{path} is not a state file of `kpt up` ({problem}); remove it if nothing runs"))


# -- the local mesh --------------------------------------------------------------------------
@app.command()
def up(targets: Optional[str] = typer.Option(None, help="comma list; default: every installed service"),
       port: int = typer.Option(0, help="NATS port (0: a free one)"),
       gateway: str = typer.Option("127.0.0.1:50051", help="gateway gRPC address"),
       http: str = typer.Option("127.0.0.1:8080", help="gateway HTTP API and web page address ('': none)"),
       as_json: bool = JSON) -> None:
    """Start nats-server (JetStream), the gateway and the services on this machine."""
    home = _home()
    state = _state()
    if state and _alive(state):
        err.print(f"already up (state in {home}); run `kpt down` first")
        raise typer.Exit(1)
    home.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    _write_private(home / "tokens", f"{token} local\n")
    _write_private(home / "token", token + "\n")
    (home / "logs").mkdir(exist_ok=True)
    server, launched = None, {}
    try:
        server = natsd.start(str(home / "nats"), port=port, log_path=str(home / "logs" / "nats.log"))
        wanted = targets.split(",") if targets else None
        procs = local.plan(server.url, gateway, wanted, common={"KPT_TOKENS_FILE": str(home / "tokens"),
                                                               "KPT_HTTP_ADDR": http})
        pids = {"nats": server.proc.pid}
        for p in procs:
            launched[p.name] = local.launch(p, str(home / "logs"))
            pids[p.name] = launched[p.name].pid
        state = {"nats": server.url, "gateway": gateway, "http": f"http://{http}" if http else "", "pids": pids,
                 "started": {name: local.started_at(pid) for name, pid in pids.items()}}
        (home / "state.json").write_text(json.dumps(state, indent=2))
        names = [p.name.removeprefix("svc-") for p in procs if p.name.startswith("svc-")]
        infos = _wait_targets(gateway, token, set(names), timeout=180, procs=launched)
    except BaseException as e:  # nothing half-started left behind (a missing service, a timeout, Ctrl-C)
        if server is not None:
            local.Mesh(server, gateway, {}, str(home / "logs"), {}, procs=launched).stop()
        (home / "state.json").unlink(missing_ok=True)
        if isinstance(e, (KptError, OSError)):
            err.print(f"[red]kpt up failed[/red]: {escape(str(e))} (logs in {escape(str(home / 'logs'))})")
            raise typer.Exit(1) from None
        raise
    if as_json:
        _out({"state": state, "targets": [c.to_dict(i) for i in infos]}, True)
    else:
        err.print(f"mesh up: NATS {server.url}, gateway {gateway}, services {', '.join(names) or 'none'}; logs in {home / 'logs'}")
        if http:
            err.print(f"web page: http://{http}/ (token in {home / 'token'})")
        report.show(_targets_table(infos))


def _write_private(path: Path, text: str) -> None:
    """A file only this user can read (tokens), from its first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _wait_targets(gateway: str, token: str, names: set[str], timeout: float,
                  procs: dict | None = None) -> list[c.TargetInfo]:
    from kpt.client import Client

    deadline = time.monotonic() + timeout
    with Client(gateway, token) as cl:
        while True:
            for name, proc in (procs or {}).items():
                if proc.poll() is not None:
                    raise Unavailable(f"{name} exited with {proc.returncode}; see {_home() / 'logs' / (name + '.log')}")
            try:
                infos = cl.targets()
                if {c.target_name(i.target) for i in infos} >= names:
                    return infos
            except KptError:
                pass  # gateway still starting
            if time.monotonic() > deadline:
                raise Unavailable(f"services {sorted(names)} did not come up within {timeout}s; see {_home() / 'logs'}")
            time.sleep(0.5)


def _ours(state: dict) -> dict[str, int]:
    """The processes of the state file that still run: a pid whose process started at another time than `kpt up`
    recorded was reused by another process (after a reboot, say) and is left alone."""
    started = state.get("started") or {}
    out = {}
    for name, pid in state.get("pids", {}).items():
        now = local.started_at(pid)
        if name in started and started[name] is not None and now is not None and now != started[name]:
            continue
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to another user
            continue
        out[name] = pid
    return out


def _alive(state: dict) -> bool:
    return bool(_ours(state))


@app.command()
def down() -> None:
    """Stop everything `kpt up` started."""
    path, state = _home() / "state.json", _state()
    if not state:
        err.print("nothing is up")
        return
    pids = _ours(state)
    for name, pid in reversed(list(pids.items())):
        try:
            os.killpg(pid, signal.SIGTERM) if name != "nats" else os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue
    mine = {**state, "pids": pids}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(mine):
        time.sleep(0.2)
    for pid in _ours(mine).values():
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    path.unlink()
    err.print("mesh down")


@app.command()
def status(as_json: bool = JSON) -> None:
    """Processes of the local mesh and the targets online."""
    procs = {}
    state = _state() or {"pids": {}}
    alive = _ours(state)
    for name in state["pids"]:
        procs[name] = name in alive
    try:
        with _client() as cl:
            infos = cl.targets()
    except KptError as e:
        infos = []
        err.print(f"gateway: {escape(str(e))}")
    if as_json:
        _out({"processes": procs, "targets": [c.to_dict(i) for i in infos]}, True)
        return
    t = Table(title="processes")
    t.add_column("process")
    t.add_column("running")
    for name, ok in procs.items():
        t.add_row(name, "yes" if ok else "[red]no[/red]")
    report.show(t)
    report.show(_targets_table(infos))


def _targets_table(infos: list[c.TargetInfo]) -> Table:
    t = Table(title="targets online")
    for col in ("target", "service", "device", "kind", "count", "memory GiB", "precisions", "available"):
        t.add_column(col)
    for i in infos:
        t.add_row(c.target_name(i.target), Text(i.service_id), Text(i.device_name), Text(i.device_kind),
                  str(i.device_count), f"{i.memory_bytes / 2**30:.1f}",
                  ",".join(c.Precision.Name(p).removeprefix("PRECISION_").lower() for p in i.precisions),
                  "yes" if i.available else Text(f"no: {i.unavailable_reason}"))
    return t


@app.command()
def targets(as_json: bool = JSON) -> None:
    """Targets online, with device, memory and toolchain."""
    try:
        with _client() as cl:
            infos = cl.targets()
    except KptError as e:
        _fail(e)
    _out({"targets": [c.to_dict(i) for i in infos]} if as_json else _targets_table(infos), as_json)


# -- jobs ----------------------------------------------------------------------------------
def _model(cl, model: str) -> c.ModelRef:
    if model.startswith("zoo:"):
        return cl.zoo(model[4:])
    if not os.path.exists(model):
        from kpt import catalog

        if model in catalog.ZOO:
            return cl.zoo(model)
        raise typer.BadParameter(f"{model}: no such file, and not a zoo model ({', '.join(catalog.ZOO)})")
    return cl.upload(model)


def _inputs(specs: list[str]) -> c.InputSpec:
    """name:dtype:d0xd1x... where a dim may be N or lo-hi=N (dynamic in [lo, hi], example N)."""
    out = c.InputSpec()
    for s in specs:
        try:
            name, dtype, dims = s.split(":")
            t = out.tensors.add(name=name, dtype=dtype)
            for d in dims.split("x"):
                if "=" in d:
                    rng, size = d.split("=")
                    lo, hi = rng.split("-")
                    t.dims.add(size=int(size), min=int(lo), max=int(hi))
                else:
                    t.dims.add(size=int(d))
        except ValueError:
            raise typer.BadParameter(f"--input {s!r}: expected name:dtype:DIMxDIM (a dim: N or LO-HI=N)") from None
    return out


def _run(kind: str, model: str, target: List[str], level: str, formats: List[str], inputs: List[str],
         precision: Optional[str], wait: bool, out: Optional[str], no_cache: bool, as_json: bool,
         threads: int = 0) -> None:
    try:
        with _client() as cl:
            ref = _model(cl, model)
            spec = cl._spec(kind, ref, level, export_formats=formats or None, precision=precision,
                            inputs=_inputs(inputs) if inputs else None,
                            benchmark=c.BenchmarkSettings(threads=threads) if threads else None)
            tg = [x for t in (target or ["auto"]) for x in t.split(",")]
            jobs = cl.submit(spec, tg, bypass_cache=no_cache)
            if wait:
                for j in jobs:
                    _follow(j, quiet=as_json)
            if out:
                for j in jobs:
                    if j.done and j.proto.state == c.JobState.JOB_STATE_SUCCEEDED:
                        j.download(out if len(jobs) == 1 else os.path.join(out, c.target_name(j.proto.target)))
    except KptError as e:
        _fail(e)
    if as_json:
        _out({"group_id": jobs[0].proto.group_id, "jobs": [c.to_dict(j.proto) for j in jobs]}, True)
    else:
        for j in jobs:
            report.show(report.job_report(j.proto))
        if len(jobs) > 1 and wait:
            report.show(report.compare_table([j.proto for j in jobs]))
    if any(j.proto.state == c.JobState.JOB_STATE_FAILED for j in jobs):
        raise typer.Exit(1)


def _follow(job, quiet: bool = False) -> None:
    if quiet:
        job.wait(raise_on_failure=False)
        return
    cols = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn()]
    with Progress(*cols, console=err, transient=False) as prog:
        task = prog.add_task(f"{job.id} {c.target_name(job.proto.target)}", total=1.0)
        for ev in job.events():
            prog.update(task, completed=ev.progress,
                        description=f"{job.id} {c.target_name(job.proto.target)} {escape(ev.phase)}: "
                                    f"{escape(ev.message[:60])}")
    job.wait(raise_on_failure=False)


TARGET = typer.Option(None, "--target", "-t", help="cpu, nvidia, amd, tpu, intel or auto; repeat for side by side")
LEVEL = typer.Option("O2", "--level", "-l", help="O0..O3")
INPUT = typer.Option(None, "--input", "-i", help="name:dtype:DIMS, e.g. x:float32:8x256 or ids:int64:1-8=1x128")
WAIT = typer.Option(True, "--wait/--no-wait", help="follow progress until the job ends")
OUT = typer.Option(None, "--out", "-o", help="download the artifacts into this folder")
NOCACHE = typer.Option(False, "--no-cache", help="run even if an identical result exists")
THREADS = typer.Option(0, "--threads", help="CPU threads each job measures with (0: all the service has); "
                                           "give targets sharing one host's cores an equal share")


@app.command()
def optimize(model: str, target: List[str] = TARGET, level: str = LEVEL, inputs: List[str] = INPUT,
             precision: Optional[str] = None, wait: bool = WAIT, out: Optional[str] = OUT,
             no_cache: bool = NOCACHE, threads: int = THREADS, as_json: bool = JSON) -> None:
    """Optimize MODEL (a .pt2/.onnx file or a zoo name) for a target; prints the report."""
    _run("optimize", model, target, level, [], inputs, precision, wait, out, no_cache, as_json, threads)


@app.command()
def export(model: str, fmt: List[str] = typer.Option(..., "--format", "-f", help="onnx, torchscript, exported_program, ..."),
           target: List[str] = TARGET, inputs: List[str] = INPUT, wait: bool = WAIT, out: Optional[str] = OUT,
           no_cache: bool = NOCACHE, as_json: bool = JSON) -> None:
    """Export MODEL to deployable formats, each validated against eager."""
    _run("export", model, target or ["cpu"], "O0", fmt, inputs, None, wait, out, no_cache, as_json)


@app.command()
def benchmark(model: str, target: List[str] = TARGET, level: str = LEVEL, inputs: List[str] = INPUT,
              wait: bool = WAIT, no_cache: bool = NOCACHE, threads: int = THREADS, as_json: bool = JSON) -> None:
    """Measure eager, torch.compile, onnxruntime and ours side by side on a target."""
    _run("benchmark", model, target, level, [], inputs, None, wait, None, no_cache, as_json, threads)


@app.command()
def compare(group: str, as_json: bool = JSON) -> None:
    """Side-by-side table of the jobs of one group (one submit naming several targets)."""
    try:
        with _client() as cl:
            jobs = [j.proto for j in cl.jobs(group_id=group)]
    except KptError as e:
        _fail(e)
    if not jobs:
        _fail(NotFound(f"no jobs in group {group}"))
    _out({"jobs": [c.to_dict(j) for j in jobs]} if as_json else report.compare_table(jobs), as_json)


@app.command()
def jobs(group: str = "", state: str = "", as_json: bool = JSON) -> None:
    """Your jobs, newest first."""
    try:
        with _client() as cl:
            found = [j.proto for j in cl.jobs(group_id=group, state=state)]
    except KptError as e:
        _fail(e)
    if as_json:
        _out({"jobs": [c.to_dict(j) for j in found]}, True)
        return
    t = Table(title="jobs")
    for col in ("id", "group", "kind", "target", "state", "level", "speedup", "created"):
        t.add_column(col)
    for j in found:
        t.add_row(j.id, j.group_id, c.kind_name(j.spec.kind), c.target_name(j.target), c.state_name(j.state),
                  c.level_name(j.result.achieved_level) if j.result.achieved_level else "-",
                  f"{j.result.speedup:.2f}x" if j.result.speedup else "-", j.created_at.ToDatetime().isoformat(timespec="seconds"))
    report.show(t)


@app.command()
def watch(job_id: str, as_json: bool = JSON) -> None:
    """Follow a job's progress until it ends; then print its report."""
    try:
        with _client() as cl:
            job = cl.job(job_id)
            if as_json:
                for ev in job.events():
                    sys.stdout.write(json.dumps(c.to_dict(ev)) + "\n")
                _out(job.proto, True)
            else:
                _follow(job)
    except KptError as e:
        _fail(e)
    if not as_json:
        report.show(report.job_report(job.proto))
    if job.proto.state == c.JobState.JOB_STATE_FAILED:
        raise typer.Exit(1)


@app.command()
def download(job_id: str, out: str = typer.Option(".", "--out", "-o"), fmt: Optional[str] = typer.Option(None, "--format", "-f"),
             as_json: bool = JSON) -> None:
    """Download a job's artifacts (digests verified)."""
    try:
        with _client() as cl:
            job = cl.job(job_id)
            paths = job.download(out, fmt)
            if not paths:
                raise NotFound(f"job {job_id} ({job.state}) has no artifacts" + (f" in format {fmt}" if fmt else ""))
    except KptError as e:
        _fail(e)
    _out({"paths": paths}, as_json) if as_json else [err.print(Text(p)) for p in paths]


if __name__ == "__main__":
    app()
