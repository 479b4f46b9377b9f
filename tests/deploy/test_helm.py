"""The Helm chart renders (helm lint --strict, helm template) into objects that Kubernetes and
KEDA would accept, validated offline against schemas pinned in a package (kubernetes-validate,
for Kubernetes' kinds) and in the repository (KEDA's CRDs, deploy/schemas/): strictly (unknown
fields refused), and no object may go unvalidated for want of a schema. Then what the chart
means: probes on the worker's real routes, settings that are real FRAUD_* fields, secrets by
reference, KEDA scaling on the workers' consumer group up to the partition count; scoring
workers (FRAUD_ROLES=score) and a companion StatefulSet (join,aggregate) whose selectors never
overlap, so the API Service reaches scoring pods only."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from fraudstream.settings import Settings, companion_roles
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
        "companion.persistence.enabled=false",
        "companion.replicaCount=2",
    ],
    "no companion: every role in the workers": ["companion.enabled=false"],
    "the aggregator with scoring, the join apart": ["roles=score\\,aggregate"],
}
ALL_ROLES = {"score", "join", "aggregate"}
COMPONENT = "app.kubernetes.io/component"


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


def statefulsets(docs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The StatefulSets by their pods' component label: "worker" (scoring), "companion"."""
    out = {pod_labels(sts)[COMPONENT]: sts for sts in docs["StatefulSet"]}
    assert len(out) == len(docs["StatefulSet"]), "two StatefulSets with the same component"
    return out


def container(sts: dict[str, Any]) -> dict[str, Any]:
    (only,) = sts["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(sts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(sts)["env"]}


def pod_labels(sts: dict[str, Any]) -> dict[str, str]:
    return dict(sts["spec"]["template"]["metadata"]["labels"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def web_routes() -> set[str]:
    source = (REPO / "fraudstream" / "app" / "web.py").read_text()
    return set(re.findall(r"""\.page\(\s*["']([^"']+)["']""", source))


def test_workers_probes_config_and_secrets() -> None:
    docs = by_kind(render(VALUE_SETS["sasl-ssl, own secret, CA, models volume"]))
    (config,) = docs["ConfigMap"]
    sets = statefulsets(docs)
    assert set(sets) == {"worker", "companion"}
    known = {f"FRAUD_{name}".upper() for name in Settings.model_fields}
    assert set(config["data"]) <= known, set(config["data"]) - known
    # The ConfigMap's values are settings the worker accepts.
    s = Settings(**{k.removeprefix("FRAUD_").lower(): v for k, v in config["data"].items()})
    assert s.web_host == "0.0.0.0"
    assert s.partitions == 12
    assert s.challenger == "challenger-v2"
    assert s.decision_retention_days == 120
    assert s.kafka_security_protocol == "SASL_SSL"
    assert "FRAUD_KAFKA_SASL_PASSWORD" not in config["data"]
    headless = {
        svc["metadata"]["name"]: svc
        for svc in docs["Service"]
        if svc["spec"].get("clusterIP") == "None"
    }
    urls = set()
    # Both StatefulSets run the same worker (its roles aside): probes on routes every role
    # serves, the same settings, secrets and mounts, their own stable name each.
    for component, sts in sets.items():
        pod = sts["spec"]["template"]
        worker = container(sts)
        assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert worker["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert {"/readyz", "/healthz", "/metrics"} <= web_routes()
        assert worker["args"] == ["worker"]
        port = worker["ports"][0]["containerPort"]
        assert port == Settings().web_port
        assert worker["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        env = env_of(sts)
        assert {n for n in env if n.startswith("FRAUD_")} <= known
        # Secrets by reference only; the CA from its Secret.
        for name in ("FRAUD_KAFKA_SASL_USERNAME", "FRAUD_KAFKA_SASL_PASSWORD"):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "fraud-kafka"
        mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
        assert env["FRAUD_KAFKA_SSL_CAFILE"]["value"].startswith(mounts["kafka-ca"] + "/")
        assert mounts["models"] == config["data"]["FRAUD_MODELS_DIR"]
        assert config["data"]["FRAUD_DATA_DIR"].startswith(mounts["state"] + "/")
        # Each pod advertises its own stable name (its StatefulSet's headless Service) to the
        # consumer group: distinct per member, as the assignor and API forwarding need.
        url = env["FRAUD_WEB_URL"]["value"]
        service = headless[sts["spec"]["serviceName"]]
        host = f"$(POD_NAME).{service['metadata']['name']}.$(POD_NAMESPACE).svc"
        assert url == f"http://{host}:{port}"
        assert selects(service["spec"]["selector"], pod_labels(sts)), component
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        names = [e["name"] for e in worker["env"]]
        assert names.index("POD_NAME") < names.index("FRAUD_WEB_URL")
        urls.add(url)
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user
        # Prometheus scrapes every pod, the companion's too (the join's and the aggregator's
        # metrics are only there).
        notes = pod["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert int(notes["prometheus.io/port"]) == port
        assert notes["prometheus.io/path"] in web_routes()
    assert len(urls) == len(sets), "the StatefulSets' pods must advertise distinct URLs"


def test_scoring_workers_and_a_companion_split_the_roles() -> None:
    """As `make demo` and the bench run them: the workers score, the companion runs the join
    and the aggregator (fraudstream.settings.companion_roles), each role exactly once."""
    docs = by_kind(render([]))
    sets = statefulsets(docs)
    assert set(sets) == {"worker", "companion"}
    roles = {c: env_of(sts)["FRAUD_ROLES"]["value"] for c, sts in sets.items()}
    assert roles == {"worker": "score", "companion": "join,aggregate"}
    assert roles["companion"] == companion_roles(roles["worker"])
    role_sets = [Settings(roles=r).role_set for r in roles.values()]  # valid FRAUD_ROLES
    assert set().union(*role_sets) == ALL_ROLES
    assert sum(len(r) for r in role_sets) == len(ALL_ROLES), "a role runs in both"
    companion = sets["companion"]
    assert companion["metadata"]["name"] == sets["worker"]["metadata"]["name"] + "-companion"
    assert companion["spec"]["replicas"] == 1  # not autoscaled
    assert container(companion)["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    (claim,) = companion["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert {m["name"] for m in container(companion)["volumeMounts"]} >= {"state"}


@pytest.mark.parametrize(
    ("roles", "worker", "companion"),
    [("score\\,join", "score,join", "aggregate"), ("score\\,aggregate", "score,aggregate", "join")],
)
def test_the_companion_runs_what_the_workers_leave_out(
    roles: str, worker: str, companion: str
) -> None:
    sets = statefulsets(by_kind(render([f"roles={roles}"])))
    assert env_of(sets["worker"])["FRAUD_ROLES"]["value"] == worker
    assert env_of(sets["companion"])["FRAUD_ROLES"]["value"] == companion == companion_roles(worker)


def test_selectors_keep_the_api_on_scoring_pods() -> None:
    """No selector matches both StatefulSets' pods: the API Service, the scoring workers'
    headless Service and their budget select scoring pods only; the companion has its own
    StatefulSet selector, headless Service (no cluster IP: no API traffic) and budget."""
    docs = by_kind(render([]))
    sets = statefulsets(docs)
    labels = {c: pod_labels(sts) for c, sts in sets.items()}
    for component, sts in sets.items():
        selector = sts["spec"]["selector"]["matchLabels"]
        assert [c for c in sets if selects(selector, labels[c])] == [component]
    (api,) = [svc for svc in docs["Service"] if svc["spec"].get("clusterIP") != "None"]
    assert api["metadata"]["name"] == sets["worker"]["metadata"]["name"]
    assert selects(api["spec"]["selector"], labels["worker"])
    assert not selects(api["spec"]["selector"], labels["companion"])
    for svc in docs["Service"]:
        matched = [c for c in sets if selects(svc["spec"]["selector"], labels[c])]
        assert len(matched) == 1, (svc["metadata"]["name"], matched)
        if matched == ["companion"]:
            assert svc["spec"]["clusterIP"] == "None", "no API Service for the companion"
            assert svc["metadata"]["name"] == sets["companion"]["spec"]["serviceName"]
    # One PodDisruptionBudget per StatefulSet, each selecting its pods only.
    budgets = docs["PodDisruptionBudget"]
    assert len(budgets) == len(sets) == 2
    covered = []
    for pdb in budgets:
        matched = [c for c in sets if selects(pdb["spec"]["selector"]["matchLabels"], labels[c])]
        assert len(matched) == 1, (pdb["metadata"]["name"], matched)
        assert pdb["spec"]["maxUnavailable"] == 1
        covered += matched
    assert sorted(covered) == sorted(sets)


def test_without_the_companion_every_worker_runs_every_role() -> None:
    docs = by_kind(render(VALUE_SETS["no companion: every role in the workers"]))
    (sts,) = docs["StatefulSet"]
    assert Settings(roles=env_of(sts)["FRAUD_ROLES"]["value"]).role_set == ALL_ROLES
    assert companion_roles(env_of(sts)["FRAUD_ROLES"]["value"]) is None
    (pdb,) = docs["PodDisruptionBudget"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(sts))
    assert len(docs["Service"]) == 2  # the API and the workers' headless Service
    for svc in docs["Service"]:
        assert selects(svc["spec"]["selector"], pod_labels(sts))
    (so,) = docs["ScaledObject"]
    assert so["spec"]["scaleTargetRef"]["name"] == sts["metadata"]["name"]


def test_keda_scales_on_the_workers_group_up_to_the_partitions() -> None:
    docs = by_kind(render(VALUE_SETS["sasl-ssl, own secret, CA, models volume"]))
    (so,) = docs["ScaledObject"]
    sets = statefulsets(docs)
    sts = sets["worker"]
    (config,) = docs["ConfigMap"]
    (auth,) = docs["TriggerAuthentication"]
    # The scoring workers, whose lag on `transactions` it measures; the companion keeps its count.
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": sts["metadata"]["name"],
    }
    assert "score" in Settings(roles=env_of(sts)["FRAUD_ROLES"]["value"]).role_set
    assert "replicas" not in sts["spec"], "KEDA owns the replica count"
    assert sets["companion"]["spec"]["replicas"] == 1
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
    sets = statefulsets(docs)
    assert sets["worker"]["spec"]["replicas"] == 3
    assert sets["companion"]["spec"]["replicas"] == 2
    (secret,) = docs["Secret"]
    for sts in sets.values():
        assert "volumeClaimTemplates" not in sts["spec"]
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        assert volumes["state"] == {"name": "state", "emptyDir": {}}
        assert (
            env_of(sts)["FRAUD_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
            == (secret["metadata"]["name"])
        )


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("kafka.securityProtocol=SASL_SLL", "/kafka/securityProtocol"),
        ("routing.challengerShare=1.5", "/routing/challengerShare"),
        ("config.DECISION_RETENTION_DAYS=120", "propertyName"),
        ("partitions=0", "/partitions"),
        # The roles come from `roles` and `companion`, never from config.
        ("config.FRAUD_ROLES=score", "propertyName 'FRAUD_ROLES'"),
        ("roles=join", "/roles"),
        ("roles=score\\,join\\,aggregate", "neither join nor aggregate to the companion"),
        ("companion.replicaCount=0", "/companion/replicaCount"),
        ("companion.replicas=2", "/companion"),
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
