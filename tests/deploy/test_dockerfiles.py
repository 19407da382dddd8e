"""Every Dockerfile is hadolint-clean, multi-stage, non-root and health-checked, and lives in compose/."""

from __future__ import annotations

import subprocess

import pytest

from tests.deploy.tools import COMPOSE_DIR, REPO, final_stage, hadolint

DOCKERFILES = sorted(COMPOSE_DIR.glob("*.Dockerfile"))
TARGETS = ("cpu", "nvidia", "amd", "tpu", "intel")


def test_one_dockerfile_per_process():
    assert {p.name for p in DOCKERFILES} == {"gateway.Dockerfile", *(f"{t}.Dockerfile" for t in TARGETS)}


def test_no_dockerfile_outside_compose():
    skip = {".git", ".venv", "node_modules"}
    stray = [p for p in REPO.rglob("*Dockerfile*")
             if p.parent != COMPOSE_DIR and not skip & set(p.relative_to(REPO).parts)]
    assert stray == [], "Dockerfiles live in compose/ (one per service)"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path):
    out = subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path):
    # the check above can fail: an untagged base image and a root user are reported
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install -y curl\n")
    out = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3006" in out.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_non_root_health_checked(path):
    text = path.read_text()
    assert sum(1 for line in text.splitlines() if line.startswith("FROM ")) >= 2, "multi-stage: build, then runtime"
    final = final_stage(path)
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the image runs as a non-root user"
    assert any(word == "HEALTHCHECK" for word, _ in final), "the image declares its grpc health check"
