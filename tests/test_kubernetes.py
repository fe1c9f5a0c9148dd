"""deploy/kubernetes/: valid against the Kubernetes API schemas (kubernetes-validate, which
ships them), and the parts operators rely on: probes on /healthz and /readyz, the metrics
port annotated, secrets from a Secret, state on a volume, and configs that parse as our own
YAML documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cloudtrail_adapter.config import parse_documents
from cloudtrail_adapter.config.shard import Shard

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
ENV = {
    "LC_OID": "6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a",
    "LC_INSTALLATION_KEY": "k",
    "POD_NAME": "cloudtrail-adapter-s3-0",  # the downward API's, in the StatefulSet
}


def resources() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(DEPLOY.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in resources() if doc["kind"] == kind]


def label(value: object) -> str:
    return value if isinstance(value, str) else str(value["kind"])  # type: ignore[index]


@pytest.mark.parametrize(("name", "doc"), resources(), ids=label)
def test_each_resource_is_valid_against_the_kubernetes_schemas(
    name: str, doc: dict[str, Any]
) -> None:
    kubernetes_validate.validate(doc, "1.30", strict=True)  # raises, naming the field


def test_a_broken_resource_is_refused() -> None:
    (deployment,) = by_kind("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)


def test_sqs_runs_three_replicas_and_s3_shards_its_streams_with_state_on_a_volume() -> None:
    (deployment,) = by_kind("Deployment")
    (stateful,) = by_kind("StatefulSet")
    assert deployment["spec"]["replicas"] == 3
    (claim,) = stateful["spec"]["volumeClaimTemplates"]
    (container,) = stateful["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/cloudtrail-adapter"

    # every pod is its own shard: i from its name (the StatefulSet's ordinal), N = replicas
    replicas = stateful["spec"]["replicas"]
    assert replicas > 1
    (pod_name,) = [e for e in container["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    (config_map,) = [m for m in by_kind("ConfigMap") if m["metadata"]["name"].endswith("-s3")]
    shards = set()
    for ordinal in range(replicas):
        env = ENV | {"POD_NAME": f"{stateful['metadata']['name']}-{ordinal}"}
        (cfg,) = parse_documents(config_map["data"]["config.yaml"], env, "s3")
        shards.add(cfg.source.shard)  # type: ignore[union-attr]
    assert shards == {Shard(i, replicas) for i in range(replicas)}


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_probes_metrics_and_secrets(kind: str) -> None:
    (workload,) = by_kind(kind)
    pod = workload["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    (port,) = container["ports"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == port["containerPort"] == 9108  # the image's
    (secret,) = by_kind("Secret")
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]


def test_the_config_maps_are_documents_the_daemon_accepts() -> None:
    maps = by_kind("ConfigMap")
    assert len(maps) == 2
    for config_map in maps:
        text = config_map["data"]["config.yaml"]
        assert "installation_key: ${LC_INSTALLATION_KEY}" in text  # not in the ConfigMap
        (cfg,) = parse_documents(text, ENV, config_map["metadata"]["name"])
        assert cfg.client_options is not None
