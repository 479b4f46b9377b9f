"""The Helm chart renders (helm lint --strict, helm template) into objects that Kubernetes and
KEDA would accept, validated offline against schemas pinned in a package (kubernetes-validate,
for Kubernetes' kinds) and in the repository (KEDA's CRDs, deploy/schemas/): strictly (unknown
fields refused), and no object may go unvalidated for want of a schema. Then what the chart
means: probes on the worker's real routes, settings that are real FRAUD_* fields, secrets by
reference, KEDA scaling on the workers' consumer group up to the partition count."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from fraudstream.settings import Settings
from tests.deploy.tools import tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "fraudstream"
KEDA_CRDS = REPO / "deploy" / "schemas" / "keda-v2.20.2"
# The chart's kubeVersion floor and the newest the pinned schemas know.
KUBE_VERSIONS = ("1.29.0", "1.37.0")

VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "sasl-ssl, own secret, CA, models volume": [
        "kafka.bootstrap=kafka-0.kafka:9093",
        "kafka.securityProtocol=SASL_SSL",
        "kafka.sasl.mechanism=SCRAM-SHA-512",
        "kafka.sasl.existingSecret=fraud-kafka",
        "kafka.tls.caSecret=fraud-kafka-ca",
        "models.existingClaim=model-registry",
        "partitions=12",
        "routing.challenger=challenger-v2",
        "routing.challengerShare=0.2",
        "routing.shadow=true",
        "config.FRAUD_DECISION_RETENTION_DAYS=120",
    ],
    "sasl-plain, chart-made secret, no autoscaling, no volumes": [
        "kafka.securityProtocol=SASL_PLAINTEXT",
        "kafka.sasl.mechanism=PLAIN",
        "kafka.sasl.username=fraud",
        "kafka.sasl.password=not-a-real-password",
        "autoscaling.keda.enabled=false",
        "persistence.enabled=false",
        "replicaCount=3",
    ],
}


def helm(*args: str) -> str:
    proc = subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def render(values: list[str], kube_version: str = KUBE_VERSIONS[0]) -> list[dict[str, Any]]:
    sets = [arg for v in values for arg in ("--set", v)]
    out = helm("template", "fraud", str(CHART), "--namespace", "payments",
               "--kube-version", kube_version, *sets)  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


def strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema as JSON Schema, refusing unknown fields where the CRD lists its
    fields (as an API server with strict field validation does)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    if schema.get("nullable"):
        out.pop("nullable")
        if "type" in out:
            out["type"] = [out["type"], "null"]
    return out


def keda_schemas() -> dict[tuple[str, str], Any]:
    schemas = {}
    for crd_file in sorted(KEDA_CRDS.glob("*.yaml")):
        crd = yaml.safe_load(crd_file.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            schema["properties"]["metadata"] = {"type": "object", "required": ["name"]}
            schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
            schemas[(f"{group}/{version['name']}", kind)] = schema
    assert {k for _, k in schemas} == {"ScaledObject", "TriggerAuthentication"}
    return schemas


def validate(doc: dict[str, Any], kube_version: str, keda: dict[tuple[str, str], Any]) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if doc["apiVersion"].startswith("keda.sh/"):
        assert key in keda, f"no pinned KEDA schema for {key}"
        jsonschema.validate(doc, keda[key])
        return
    # Raises SchemaNotFoundError for a kind without a schema: never skipped.
    kubernetes_validate.validate(doc, kube_version, strict=True)


def test_lint() -> None:
    helm("lint", "--strict", str(CHART))


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_rendered_objects_validate_against_pinned_schemas(name: str, kube_version: str) -> None:
    keda = keda_schemas()
    docs = render(VALUE_SETS[name], kube_version)
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    for doc in docs:
        validate(doc, kube_version, keda)


def test_a_wrong_object_is_refused() -> None:
    """The validation has teeth: a misspelt field and a wrong type are both refused."""
    keda = keda_schemas()
    docs = {d["kind"]: d for d in render([])}
    sts = copy.deepcopy(docs["StatefulSet"])
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(sts, KUBE_VERSIONS[0], keda)
    so = copy.deepcopy(docs["ScaledObject"])
    so["spec"]["maxReplicaCount"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        validate(so, KUBE_VERSIONS[0], keda)
    so = copy.deepcopy(docs["ScaledObject"])
    so["spec"]["maxReplicas"] = 4
    with pytest.raises(jsonschema.ValidationError):
        validate(so, KUBE_VERSIONS[0], keda)
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate(unknown, KUBE_VERSIONS[0], keda)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def test_workers_probes_config_and_secrets() -> None:
    docs = by_kind(render(VALUE_SETS["sasl-ssl, own secret, CA, models volume"]))
    (sts,) = docs["StatefulSet"]
    (config,) = docs["ConfigMap"]
    pod = sts["spec"]["template"]
    (worker,) = pod["spec"]["containers"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["args"] == ["worker"]
    port = worker["ports"][0]["containerPort"]
    assert port == Settings().web_port

    known = {f"FRAUD_{name}".upper() for name in Settings.model_fields}
    env = {e["name"]: e for e in worker["env"]}
    assert set(config["data"]) <= known, set(config["data"]) - known
    assert {n for n in env if n.startswith("FRAUD_")} <= known
    # The ConfigMap's values are settings the worker accepts.
    s = Settings(**{k.removeprefix("FRAUD_").lower(): v for k, v in config["data"].items()})
    assert s.web_host == "0.0.0.0"
    assert s.partitions == 12
    assert s.challenger == "challenger-v2"
    assert s.decision_retention_days == 120
    assert s.kafka_security_protocol == "SASL_SSL"
    # Secrets by reference only; the CA from its Secret.
    for name in ("FRAUD_KAFKA_SASL_USERNAME", "FRAUD_KAFKA_SASL_PASSWORD"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "fraud-kafka"
    assert "FRAUD_KAFKA_SASL_PASSWORD" not in config["data"]
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert env["FRAUD_KAFKA_SSL_CAFILE"]["value"].startswith(mounts["kafka-ca"] + "/")
    assert mounts["models"] == config["data"]["FRAUD_MODELS_DIR"]
    assert config["data"]["FRAUD_DATA_DIR"].startswith(mounts["state"] + "/")
    # Each pod advertises its own stable name for API forwarding (the headless Service).
    url = env["FRAUD_WEB_URL"]["value"]
    headless = next(s for s in docs["Service"] if s["spec"].get("clusterIP") == "None")
    assert url == f"http://$(POD_NAME).{headless['metadata']['name']}.$(POD_NAMESPACE).svc:{port}"
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert [e["name"] for e in worker["env"]].index("POD_NAME") < list(env).index("FRAUD_WEB_URL")
    labels = pod["metadata"]["labels"]
    for svc in docs["Service"]:
        assert svc["spec"]["selector"].items() <= labels.items()
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
    (pdb,) = docs["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user


def test_keda_scales_on_the_workers_group_up_to_the_partitions() -> None:
    docs = by_kind(render(VALUE_SETS["sasl-ssl, own secret, CA, models volume"]))
    (so,) = docs["ScaledObject"]
    (sts,) = docs["StatefulSet"]
    (config,) = docs["ConfigMap"]
    (auth,) = docs["TriggerAuthentication"]
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": sts["metadata"]["name"],
    }
    assert "replicas" not in sts["spec"], "KEDA owns the replica count"
    assert so["spec"]["maxReplicaCount"] == 12 == int(config["data"]["FRAUD_PARTITIONS"])
    (trigger,) = so["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == config["data"]["FRAUD_APP_ID"]  # Faust's group is its app id
    assert meta["topic"] == Settings().topic_transactions
    assert meta["bootstrapServers"] == config["data"]["FRAUD_KAFKA_BOOTSTRAP"]
    assert meta["allowIdleConsumers"] == "false"
    assert meta["sasl"] == "scram_sha512"
    assert meta["tls"] == "enable"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    params = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert params == {
        "username": ("fraud-kafka", "username"),
        "password": ("fraud-kafka", "password"),
        "ca": ("fraud-kafka-ca", "ca.crt"),
    }
    # A maximum above the partition count is capped: an extra worker would own no partition.
    capped = by_kind(render(["partitions=6", "autoscaling.keda.maxReplicaCount=50"]))
    assert capped["ScaledObject"][0]["spec"]["maxReplicaCount"] == 6


def test_without_autoscaling_the_chart_sets_replicas_and_makes_the_secret() -> None:
    docs = by_kind(render(VALUE_SETS["sasl-plain, chart-made secret, no autoscaling, no volumes"]))
    assert "ScaledObject" not in docs
    assert "TriggerAuthentication" not in docs
    (sts,) = docs["StatefulSet"]
    assert sts["spec"]["replicas"] == 3
    assert "volumeClaimTemplates" not in sts["spec"]
    (secret,) = docs["Secret"]
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (
        env["FRAUD_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
        == (secret["metadata"]["name"])
    )


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("kafka.securityProtocol=SASL_SLL", "/kafka/securityProtocol"),
        ("routing.challengerShare=1.5", "/routing/challengerShare"),
        ("config.DECISION_RETENTION_DAYS=120", "propertyName"),
        ("partitions=0", "/partitions"),
    ],
)
def test_wrong_values_are_refused_with_where(value: str, complaint: str) -> None:
    proc = subprocess.run(
        [str(tool("helm")), "template", "fraud", str(CHART), "--kube-version", KUBE_VERSIONS[0],
         "--set", value],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert complaint in proc.stderr, proc.stderr
