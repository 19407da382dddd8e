"""Operational edges of compose/ and k8s/ that a running deployment hits, not a schema: what `kubectl apply`
does to autoscaled replicas, whether a cache fits the volume it lives on, and what the host exposes."""

from __future__ import annotations

import ast
import re

import pytest

from tests.deploy.tools import OVERLAYS, REPO, compose_config, kustomize

UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
         "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def quantity(q: str | int) -> int:
    """Bytes of a Kubernetes quantity such as 20Gi (the forms these manifests use)."""
    m = re.fullmatch(r"(\d+)([kMGT]i?|)", str(q))
    assert m, f"unexpected quantity {q!r}"
    return int(m.group(1)) * UNITS[m.group(2)]


def package_cache_budget() -> int:
    """MAX_PACKAGE_BYTES of shared/kpt/gpu/cache.py (read from the source: importing it imports torch)."""
    tree = ast.parse((REPO / "shared/kpt/gpu/cache.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["MAX_PACKAGE_BYTES"]:
            return eval(compile(ast.Expression(node.value), "cache.py", "eval"))  # a constant expression
    raise AssertionError("MAX_PACKAGE_BYTES not found in shared/kpt/gpu/cache.py")


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, kustomize(request.param)


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(rendered):
    # A Deployment whose manifest sets spec.replicas is scaled back to that number by every `kubectl apply`
    # (Kubernetes' HPA docs: remove spec.replicas once an HPA manages it). For a KEDA pool that means: a
    # re-apply (a new image tag) scales a busy pool of 4 back to 1 and cuts the jobs of the pods it removes.
    overlay, docs = rendered
    targets = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")}
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert targets and targets <= set(deployments), overlay
    assert [n for n in sorted(targets) if "replicas" in deployments[n]["spec"]] == [], overlay


def test_gpu_package_cache_fits_its_volume(rendered):
    # nvidia/amd jobs keep AOTInductor packages under KPT_CACHE_DIR and drop the oldest only beyond
    # MAX_PACKAGE_BYTES (64 GiB; a new package is written before the trim). An emptyDir smaller than that
    # is over its sizeLimit first, and the kubelet evicts the pod: its running job is killed, its cache lost.
    overlay, docs = rendered
    budget = package_cache_budget()
    pools = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"} & {"svc-nvidia", "svc-amd"}
    if not pools:
        pytest.skip(f"overlay {overlay} has no GPU pool")
    for d in docs:
        if d["kind"] != "Deployment" or d["metadata"]["name"] not in pools:
            continue
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        mount = next(m["name"] for m in c["volumeMounts"] if m["mountPath"] == env["KPT_CACHE_DIR"])
        volume = next(v for v in pod["volumes"] if v["name"] == mount)
        limit = volume.get("emptyDir", {}).get("sizeLimit")
        if limit is not None:
            # room for the budget, one package being stored over it, and Inductor's and Triton's caches
            assert quantity(limit) >= budget * 5 // 4, (d["metadata"]["name"], limit, budget >> 30)


def test_compose_publishes_only_the_gateway_and_only_on_loopback():
    # `kpt up` binds the gateway to 127.0.0.1 (KPT_GATEWAY_ADDR/KPT_HTTP_ADDR defaults) and the gateway speaks
    # plaintext gRPC/HTTP with bearer tokens: compose must not publish it on every interface of the host
    # (Docker's published ports also bypass host firewalls such as ufw). NATS (no auth) is never published.
    services = compose_config("*")["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"gateway"}
    assert {p["target"] for p in published["gateway"]} == {50051, 8080}
    assert [p for p in published["gateway"] if p.get("host_ip") != "127.0.0.1"] == []
