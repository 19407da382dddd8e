"""k8s/: every overlay renders with kubectl kustomize, every rendered object validates against the
Kubernetes schemas (strict: unknown fields are errors), and the KEDA ScaledObjects, for which there is no
schema here, are checked field by field against KEDA's v1alpha1 API and against the bus's names."""

from __future__ import annotations

import copy
import re
import sys

import pytest

from kpt import local, natsd
from kpt.bus import core
from kpt.contract import CONCRETE_TARGETS
from tests.deploy.tools import OVERLAYS, kustomize

K8S_VERSION = "1.30.0"  # the oldest release the manifests are written for (grpc probes are GA since 1.27)
# Custom resources kubernetes-validate has no schema for, each checked by a test of its own below.
NO_SCHEMA = {("keda.sh/v1alpha1", "ScaledObject")}
DEVICE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu", "tpu": "google.com/tpu", "intel": "gpu.intel.com/i915"}


def validator():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip("kubernetes-validate not installed: pip install kubernetes-validate==1.37.0 (compose/README.md)")
    return kubernetes_validate


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, kustomize(request.param)


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_overlays_exist():
    assert {"local", "production"} <= set(OVERLAYS)


def test_every_object_validates(rendered):
    kv = validator()
    overlay, docs = rendered
    checked = 0
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in NO_SCHEMA:
            continue
        kv.validate(doc, K8S_VERSION, strict=True)  # raises kubernetes_validate.ValidationError
        checked += 1
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "kpt", (overlay, doc["kind"], doc["metadata"]["name"])
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kpt"
    assert checked >= 15, overlay


def test_validation_rejects_a_wrong_field(rendered):
    kv = validator()
    deployment = copy.deepcopy(by_kind(rendered[1], "Deployment")["gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSION, strict=True)
    deployment = copy.deepcopy(by_kind(rendered[1], "Deployment")["gateway"])
    deployment["spec"]["replica"] = 2
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSION, strict=True)


def test_kinds_without_schema_are_only_the_listed_ones(rendered):
    kv = validator()
    for doc in rendered[1]:
        if (doc["apiVersion"], doc["kind"]) in NO_SCHEMA:
            with pytest.raises(kv.SchemaNotFoundError):
                kv.validate(doc, K8S_VERSION, strict=True)


# -- KEDA ScaledObject (keda.sh/v1alpha1): the fields of its CRD that these manifests may use ---------------
SCALED_OBJECT_SPEC = {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
                      "idleReplicaCount", "initialCooldownPeriod", "fallback", "advanced", "triggers"}
TRIGGER = {"type", "name", "metadata", "metricType", "authenticationRef", "useCachedMetrics"}
# the nats-jetstream scaler's metadata (keda.sh/docs/latest/scalers/nats-jetstream)
JETSTREAM_METADATA = {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold",
                      "activationLagThreshold", "useHttps"}


def test_scaled_objects(rendered):
    overlay, docs = rendered
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    scaled = by_kind(docs, "ScaledObject")
    pools = {name for name, d in deployments.items() if name.startswith("svc-")}
    assert set(scaled) == pools, "every hardware pool scales on its queue, and nothing else does"
    for name, so in scaled.items():
        assert set(so) == {"apiVersion", "kind", "metadata", "spec"}
        spec = so["spec"]
        assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
        assert set(spec["scaleTargetRef"]) <= {"apiVersion", "kind", "name", "envSourceContainerName"}
        assert spec["scaleTargetRef"]["name"] == name
        for key in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
            assert isinstance(spec[key], int) and spec[key] >= 0, key
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert set(spec["fallback"]) == {"failureThreshold", "replicas"}
        (trigger,) = spec["triggers"]
        assert set(trigger) <= TRIGGER and trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert set(meta) <= JETSTREAM_METADATA and all(isinstance(v, str) for v in meta.values()), meta
        target = name.removeprefix("svc-")
        assert meta["stream"] == core.JOBS_STREAM
        assert meta["consumer"] == f"svc_{target}"  # the durable in shared/kpt/worker/runtime.py
        assert int(meta["lagThreshold"]) >= 1 and meta["account"] == "$G"
        # KEDA runs in its own namespace: the endpoint names the headless Service with its namespace
        host, port = meta["natsServerMonitoringEndpoint"].rsplit(":", 1)
        service, namespace = host.split(".")[:2]
        assert namespace == so["metadata"]["namespace"] and service in services
        assert services[service]["spec"]["clusterIP"] == "None" and port == "8222"


def test_nats_is_a_three_node_jetstream_cluster(rendered):
    docs = rendered[1]
    nats = by_kind(docs, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    conf = by_kind(docs, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert re.search(r"jetstream\s*\{[^}]*sync_interval:\s*always", conf)
    assert re.search(r"^\s*max_payload:\s*(\d+)$", conf, re.M).group(1) == str(natsd.MAX_PAYLOAD)
    routes = re.findall(r"nats://(nats-\d)\.nats-headless:6222", conf)
    assert routes == [f"nats-{i}" for i in range(3)]
    for d in by_kind(docs, "Deployment").values():
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["KPT_STREAM_REPLICAS"] == "3", "R3 streams and buckets"
        assert env["KPT_NATS_URL"] == "nats://nats:4222"


def test_processes_are_the_ones_kpt_up_starts(rendered):
    docs = rendered[1]
    procs = {p.name: p for p in local.plan("nats://x:4222", "x:50051", list(CONCRETE_TARGETS),
                                          pythons={t: sys.executable for t in CONCRETE_TARGETS})}
    for name, d in by_kind(docs, "Deployment").items():
        (container,) = d["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", *procs[name].argv[1:]], name


def test_probes_and_pools(rendered):
    docs = rendered[1]
    for name, d in by_kind(docs, "Deployment").items():
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e for e in c["env"]}
        port = 50051 if name == "gateway" else 8081
        if name != "gateway":
            assert env["KPT_HEALTH_ADDR"]["value"] == f"0.0.0.0:{port}"
            assert env["KPT_SERVICE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, (name, probe)
        assert pod["securityContext"]["runAsNonRoot"] is True
        target = name.removeprefix("svc-")
        if target in DEVICE:
            assert c["resources"]["limits"][DEVICE[target]] == 1, name
            assert pod["nodeSelector"] and pod["tolerations"], name
            assert "KPT_JOB_MEMORY_BYTES" not in env, "GPU job processes get no RLIMIT_AS"
        elif target == "cpu":
            assert pod["nodeSelector"] and pod["tolerations"]
    if rendered[0] == "production":
        assert {n.removeprefix("svc-") for n in by_kind(docs, "Deployment")} == set(CONCRETE_TARGETS) | {"gateway"}


def test_gateway_is_the_only_way_in(rendered):
    docs = rendered[1]
    for name, s in by_kind(docs, "Service").items():
        if name != "gateway":
            assert s["spec"].get("type", "ClusterIP") == "ClusterIP", name
    policies = by_kind(docs, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny
    open_to_all = [n for n, p in policies.items() for rule in p["spec"].get("ingress", []) if "from" not in rule]
    assert open_to_all == ["gateway"]
    assert {p["port"] for p in policies["gateway"]["spec"]["ingress"][0]["ports"]} == {50051, 8080}
    gw = by_kind(docs, "Deployment")["gateway"]["spec"]["template"]["spec"]
    secret = [v["secret"]["secretName"] for v in gw["volumes"] if "secret" in v]
    env = {e["name"]: e["value"] for e in gw["containers"][0]["env"]}
    assert secret == ["kpt-tokens"] and env["KPT_TOKENS_FILE"].startswith("/etc/kpt/tokens/")
    assert set(by_kind(docs, "HorizontalPodAutoscaler")) == {"gateway"}
    assert {"gateway", "nats"} <= set(by_kind(docs, "PodDisruptionBudget"))
