"""The container deployment (Dockerfile, docker-compose.yml, deploy/) agrees with the application.

No Docker engine is needed: the files are parsed and checked against the code they configure —
settings names and defaults, CLI commands and options, HTTP routes, Prometheus metric names and
labels — so that a rename in the code breaks a test here instead of a dashboard in production.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import prometheus_client
import pytest
import yaml

import fraudstream.app.metrics as app_metrics
from fraudstream.core.messages import OutcomeKind
from fraudstream.settings import Settings, companion_roles

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOY = REPO / "deploy"
NGINX_CONF = DEPLOY / "nginx.conf"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_YML = DEPLOY / "prometheus" / "alerts.yml"
GRAFANA = DEPLOY / "grafana"
DATASOURCES_YML = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARDS_YML = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD_JSON = GRAFANA / "dashboards" / "fraudstream.json"

WORKERS = ("worker-1", "worker-2")  # scoring (FRAUD_ROLES=score), behind nginx
COMPANION = "companion"  # the feedback join and the entity aggregator
STREAM_PROCESSES = (*WORKERS, COMPANION)
FRAUD_IMAGE = "fraudstream:local"
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}


# --- helpers ---------------------------------------------------------------------------------
def settings_env_names() -> set[str]:
    return {f"FRAUD_{name}".upper() for name in Settings.model_fields}


def field_default(env_name: str) -> Any:
    return Settings.model_fields[env_name.removeprefix("FRAUD_").lower()].default


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def fraudstream_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in services.items()
        if svc.get("image") == FRAUD_IMAGE or "build" in svc
    }


def as_argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in dockerfile_instructions():
        if word == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def dockerfile_json(word: str) -> list[str]:
    found = [args for w, args in dockerfile_instructions() if w == word]
    assert found, f"Dockerfile has no {word}"
    return json.loads(found[-1])


def published_ports(service: dict[str, Any]) -> Iterator[tuple[str | None, str, str]]:
    """(host_ip, host_port, container_port) of every published port."""
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            yield port.get("host_ip"), str(port.get("published")), str(port["target"])
            continue
        parts = str(port).split(":")
        if len(parts) == 3:
            yield parts[0], parts[1], parts[2]
        elif len(parts) == 2:
            yield None, parts[0], parts[1]
        else:
            yield None, "", parts[0]


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            out.append((str(vol["source"]), str(vol["target"])))
        else:
            source, target = str(vol).split(":")[:2]
            out.append((source, target))
    return out


def web_routes() -> set[str]:
    source = (REPO / "fraudstream" / "app" / "web.py").read_text()
    return set(re.findall(r"""\.page\(\s*["']([^"']+)["']""", source))


# --- metrics exposed by fraudstream.app.metrics ---------------------------------------------------
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


def exposed_metrics() -> dict[str, set[str]]:
    """Every sample name the worker exposes -> the label names it carries."""
    names: dict[str, set[str]] = {}
    for obj in vars(app_metrics).values():
        if not isinstance(obj, prometheus_client.metrics.MetricWrapperBase):
            continue
        base = obj._name  # a counter's name is stored without "_total"
        for suffix in SUFFIXES[obj._type]:
            labels = set(obj._labelnames)
            if suffix == "_bucket":
                labels.add("le")
            names[base + suffix] = labels
    assert names, "no prometheus_client metrics found in fraudstream.app.metrics"
    return names


# --- Dockerfile ------------------------------------------------------------------------------
def test_dockerfile_entrypoint_is_the_cli_and_runs_a_worker_by_default() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert dockerfile_json("ENTRYPOINT") == ["fraudstream"]
    assert "fraudstream" in scripts
    assert dockerfile_json("CMD") == ["worker"]


def test_dockerfile_base_user_port_and_web_host() -> None:
    instructions = dockerfile_instructions()
    froms = [args for word, args in instructions if word == "FROM"]
    assert froms[-1].split()[0].startswith("python:3.11-slim")
    users = [args for word, args in instructions if word == "USER"]
    assert users, "the image must not run as root"
    assert users[-1] not in {"root", "0", "0:0"}
    exposed = {p for word, args in instructions if word == "EXPOSE" for p in args.split()}
    assert str(Settings().web_port) in exposed
    env = dockerfile_env()
    # In a container 127.0.0.1 is unreachable from nginx / Prometheus.
    assert env.get("FRAUD_WEB_HOST") == "0.0.0.0"
    unknown = {k for k in env if k.startswith("FRAUD_")} - settings_env_names()
    assert not unknown, f"Dockerfile sets FRAUD_* variables that are not settings: {unknown}"


def test_dockerfile_installs_the_package_not_the_source_tree() -> None:
    # The image runs what a user installs: dependencies from the hashed runtime lock, then a
    # normal (non-editable) install of the package, whose data (schemas) travels inside it.
    runs = [args for word, args in dockerfile_instructions() if word == "RUN"]
    assert any("--require-hashes -r" in r and "requirements/runtime.txt" in r for r in runs)
    installs = [r for r in runs if "pip install --no-deps" in r]
    assert installs, "the project is not installed"
    assert all(" -e " not in f" {r} " and "--editable" not in r for r in runs)
    assert "fraudstream --version" in installs[-1]
    copies = [args.split() for word, args in dockerfile_instructions() if word == "COPY"]
    copied = {a for c in copies for a in c[:-1] if not a.startswith("--")}
    assert {"fraudstream", "pyproject.toml", "LICENSE", "requirements/runtime.txt"} <= copied
    assert not any(c[-2:] == ["schemas", "./schemas"] for c in copies), "schemas are package data"
    models_dir = dockerfile_env()["FRAUD_MODELS_DIR"]
    workdir = [args for word, args in dockerfile_instructions() if word == "WORKDIR"][-1]
    assert any(c[-2] == "models" and f"{workdir}/{c[-1].removeprefix('./')}" == models_dir
               for c in copies)  # fmt: skip


def test_dockerfile_copy_sources_exist_and_are_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for word, args in dockerfile_instructions():
        if word != "COPY" or "--from=" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: not in the build context"
            assert src not in ignored, f"COPY {src}: excluded by .dockerignore"


# --- compose: the application's containers ---------------------------------------------------
def test_compose_has_the_whole_stack(services: dict[str, dict[str, Any]]) -> None:
    expected = {"kafka", "topics", *STREAM_PROCESSES, "simulator", "nginx", "prometheus", "grafana"}
    assert expected <= set(services)


def test_compose_fraud_variables_are_settings(services: dict[str, dict[str, Any]]) -> None:
    known = settings_env_names()
    for name, svc in services.items():
        unknown = {k for k in env_of(svc) if k.startswith("FRAUD_")} - known
        assert not unknown, f"{name}: {unknown} are not fields of fraudstream.settings.Settings"


@pytest.mark.parametrize("service", ["topics", *STREAM_PROCESSES, "simulator"])
def test_compose_settings_validate(
    services: dict[str, dict[str, Any]], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment each container gets is accepted by Settings, as the container reads it."""
    for key in list(os.environ):
        if key.startswith("FRAUD_"):
            monkeypatch.delenv(key)
    env = {**dockerfile_env(), **env_of(services[service])}
    for key, value in env.items():
        if key.startswith("FRAUD_"):
            monkeypatch.setenv(key, value)
    s = Settings()
    assert s.web_host == "0.0.0.0"
    assert s.kafka_bootstrap == "kafka:29092"


def test_compose_topic_names_are_the_defaults(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for key, value in env_of(svc).items():
            if key.startswith("FRAUD_TOPIC_"):
                assert value == field_default(key), f"{name}: {key}={value}"


def test_compose_fraudstream_commands_exist(services: dict[str, dict[str, Any]]) -> None:
    """Each fraudstream invocation in compose names a real CLI command and real options."""
    from fraudstream.cli import main

    invocations: list[tuple[str, list[str]]] = []
    default_cmd = dockerfile_json("CMD")
    for name, svc in fraudstream_services(services).items():
        entrypoint = as_argv(svc.get("entrypoint"))
        command = as_argv(svc.get("command")) or default_cmd
        if not entrypoint:
            invocations.append((name, command))
            continue
        assert entrypoint[:2] == ["sh", "-c"], f"{name}: unexpected entrypoint {entrypoint}"
        script = " ".join(command)
        for part in re.split(r"\|\||&&|;|[()]", script):
            argv = shlex.split(part)
            if not argv:
                continue
            assert argv[0] == "fraudstream", f"{name}: {part!r}"
            invocations.append((name, argv[1:]))
    assert invocations
    for name, argv in invocations:
        cmd: click.Command = main
        args = list(argv)
        while isinstance(cmd, click.Group):
            assert args, f"{name}: {argv} names no command"
            sub = cmd.get_command(click.Context(cmd), args[0])
            assert sub is not None, f"{name}: unknown command {args[0]!r} in {argv}"
            cmd, args = sub, args[1:]
        # Parses the options (unknown ones raise UsageError) without invoking the command.
        with cmd.make_context(cmd.name, args):
            pass


def test_workers(services: dict[str, dict[str, Any]]) -> None:
    port = Settings().web_port
    assert port == 6066
    data_dirs, volumes, urls = set(), set(), set()
    for name in STREAM_PROCESSES:
        svc = services[name]
        assert as_argv(svc.get("command")) in ([], ["worker"])
        env = {**dockerfile_env(), **env_of(svc)}
        assert int(env.get("FRAUD_WEB_PORT", port)) == port
        assert "FRAUD_WEB_HOST" not in env_of(svc) or env_of(svc)["FRAUD_WEB_HOST"] == "0.0.0.0"
        assert env["FRAUD_KAFKA_BOOTSTRAP"] == "kafka:29092"
        data_dirs.add(env["FRAUD_DATA_DIR"])
        data_mounts = [
            (src, dst) for src, dst in mounts(svc) if env["FRAUD_DATA_DIR"].startswith(dst + "/")
        ]
        assert len(data_mounts) == 1, f"{name}: FRAUD_DATA_DIR is not on a volume"
        volumes.add(data_mounts[0][0])
        # Every role loads the models at start (the registry, read-only).
        assert ("model-registry", env["FRAUD_MODELS_DIR"]) in mounts(svc), name
        # Each member of the consumer group advertises its own URL, reachable by its hostname.
        assert env["FRAUD_WEB_URL"] == f"http://{svc['hostname']}:{port}", name
        urls.add(env["FRAUD_WEB_URL"])
        health = " ".join(as_argv(svc["healthcheck"]["test"]))
        assert f"127.0.0.1:{port}/healthz" in health
        deps = svc["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["topics"]["condition"] == "service_completed_successfully"
    assert len(data_dirs) == len(STREAM_PROCESSES), "workers must not share FRAUD_DATA_DIR"
    assert len(volumes) == len(STREAM_PROCESSES), "workers must not share a state volume"
    assert len(urls) == len(STREAM_PROCESSES), "workers must advertise distinct URLs"
    assert "/healthz" in web_routes()


def test_scoring_workers_and_the_companion_split_the_roles(
    services: dict[str, dict[str, Any]],
) -> None:
    """As `make demo` and the bench run them: the workers score, the companion runs the join
    and the aggregator (what the workers leave out), each role somewhere and never twice."""
    roles = {
        name: Settings(roles=env_of(services[name])["FRAUD_ROLES"]).role_set
        for name in STREAM_PROCESSES
    }
    companion = env_of(services[COMPANION])["FRAUD_ROLES"]
    for name in WORKERS:
        assert roles[name] == {"score"}, name
        assert companion_roles(env_of(services[name])["FRAUD_ROLES"]) == companion
    assert roles[COMPANION] == {"join", "aggregate"}
    assert roles[COMPANION].isdisjoint(roles[WORKERS[0]])
    assert set().union(*roles.values()) == {"score", "join", "aggregate"}


def test_workers_run_a_challenger_and_shadow_the_models_service_registers(
    services: dict[str, dict[str, Any]],
) -> None:
    """The dashboard's champion/challenger panels need both versions deciding or scoring."""
    from fraudstream.core.registry import list_versions

    shipped = {m.version for m in list_versions(REPO / "models")}
    registered = " ".join(as_argv(services["models"]["command"]))
    for name in WORKERS:
        env = {**dockerfile_env(), **env_of(services[name])}
        s = Settings(**{k.removeprefix("FRAUD_").lower(): v for k, v in env.items()
                        if k.startswith("FRAUD_")})  # fmt: skip
        assert s.challenger is not None
        assert 0 < s.challenger_share < 1
        assert s.shadow
        for version in (s.champion, s.challenger):
            assert version in shipped
            assert f"models verify {version} || fraudstream train --version {version}" in registered


def test_simulator_publishes_with_feedback(services: dict[str, dict[str, Any]]) -> None:
    argv = as_argv(services["simulator"]["command"])
    assert argv[0] == "simulate"
    assert "--no-feedback" not in argv
    assert float(argv[argv.index("--rate") + 1]) == 200


# --- compose: infrastructure -----------------------------------------------------------------
def test_kafka_is_single_node_kraft(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert tag.split(".")[0] == "4"
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_NODE_ID"]
    assert env["CLUSTER_ID"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert f"{controller}://" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    # Containers use kafka:29092; the host uses the project's default bootstrap.
    assert "://kafka:29092" in advertised
    assert f"://{field_default('FRAUD_KAFKA_BOOTSTRAP')}" in advertised
    assert ("127.0.0.1", "9092", "9092") in set(published_ports(kafka))
    assert "healthcheck" in kafka


def test_published_ports_are_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for host_ip, host_port, target in published_ports(svc):
            assert host_ip == "127.0.0.1", f"{name}: port {host_port}:{target} is not loopback"


def test_depends_on_and_volumes_are_consistent(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep, spec in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            assert dep in services, f"{name} depends on unknown service {dep}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name}: {dep} has no healthcheck"
        for source, _target in mounts(svc):
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_nginx_upstream_is_the_workers() -> None:
    conf = NGINX_CONF.read_text()
    upstreams = dict(re.findall(r"upstream\s+(\S+)\s*\{([^}]*)\}", conf))
    assert len(upstreams) == 1
    (upstream, body), *_ = upstreams.items()
    servers = re.findall(r"^\s*server\s+([^\s;]+)", body, re.MULTILINE)
    assert sorted(servers) == sorted(f"{w}:{Settings().web_port}" for w in WORKERS)
    locations = dict(re.findall(r"location\s+(?:=\s+)?(\S+)\s*\{([^}]*)\}", conf))
    routes = web_routes()
    for path in ("/v1/", "/healthz", "/readyz"):
        assert f"proxy_pass http://{upstream};" in locations[path], path
        assert any(r == path or r.startswith(path) for r in routes), f"no worker route {path}"


def test_nginx_mount_and_port(services: dict[str, dict[str, Any]]) -> None:
    nginx = services["nginx"]
    assert ("./deploy/nginx.conf", "/etc/nginx/conf.d/default.conf") in mounts(nginx)
    listen = re.findall(r"^\s*listen\s+(\d+)", NGINX_CONF.read_text(), re.MULTILINE)
    assert ("127.0.0.1", "8080", listen[0]) in set(published_ports(nginx))


def test_prometheus_scrapes_every_worker(services: dict[str, dict[str, Any]]) -> None:
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    job = jobs["fraudstream"]
    assert job.get("scrape_interval", prom["global"].get("scrape_interval")) == "5s"
    metrics_path = job.get("metrics_path", "/metrics")
    assert metrics_path in web_routes()
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    # The companion too: the join's and the aggregator's metrics are only there.
    assert targets == {f"{w}:{Settings().web_port}" for w in STREAM_PROCESSES}
    prom_mounts = mounts(services["prometheus"])
    assert ("./deploy/prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml") in prom_mounts
    for rule_file in prom["rule_files"]:
        assert (f"./deploy/prometheus/{Path(rule_file).name}", rule_file) in prom_mounts


def test_alert_rules_use_exposed_metrics_and_labels() -> None:
    exposed = exposed_metrics()
    every_label = set().union(*exposed.values()) | TARGET_LABELS
    rules = [r for g in yaml.safe_load(ALERTS_YML.read_text())["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    for rule in rules:
        expr = rule["expr"]
        for name in re.findall(r"\bfraudstream_[a-z0-9_]+", expr):
            assert name in exposed, f"{rule['alert']}: {name} is not exposed"
        for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
            for label in filter(None, (x.strip() for x in clause.split(","))):
                assert label in every_label, f"{rule['alert']}: no metric has label {label!r}"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])


# --- Grafana ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def datasource_uid() -> str:
    ds = yaml.safe_load(DATASOURCES_YML.read_text())["datasources"]
    prom = [d for d in ds if d["type"] == "prometheus"]
    assert len(prom) == 1
    assert prom[0]["url"] == "http://prometheus:9090"
    return str(prom[0]["uid"])


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_JSON.read_text())
    assert isinstance(data, dict)
    return data


def all_panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dash: dict[str, Any]) -> Iterator[str]:
    for panel in all_panels(dash):
        for target in panel.get("targets", []):
            yield target["expr"]
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            yield query["query"] if isinstance(query, dict) else query


def test_grafana_provisioning_is_mounted(services: dict[str, dict[str, Any]]) -> None:
    for path in (DATASOURCES_YML, DASHBOARDS_YML, DASHBOARD_JSON):
        assert path.is_file(), path
    grafana_mounts = dict(mounts(services["grafana"]))
    assert grafana_mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load(DASHBOARDS_YML.read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [
        grafana_mounts["./deploy/grafana/dashboards"]
    ]


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "fraudstream"
    assert dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_dashboard_uses_the_provisioned_datasource(
    dashboard: dict[str, Any], datasource_uid: str
) -> None:
    refs: list[Any] = []
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        refs.append(panel["datasource"])
        refs.extend(t["datasource"] for t in panel.get("targets", []))
    refs.extend(v["datasource"] for v in dashboard["templating"]["list"] if "datasource" in v)
    assert refs
    for ref in refs:
        assert ref == {"type": "prometheus", "uid": datasource_uid}


def test_dashboard_metrics_exist(dashboard: dict[str, Any]) -> None:
    exposed = exposed_metrics()
    used: set[str] = set()
    for expr in expressions(dashboard):
        for name in re.findall(r"\bfraudstream_[a-z0-9_]+", expr):
            assert name in exposed, (
                f"{name} (in {expr!r}) is not exposed by fraudstream.app.metrics"
            )
            used.add(name)
    required = {
        "fraudstream_decisions_total",
        "fraudstream_decision_latency_seconds_bucket",
        "fraudstream_score_bucket",
        "fraudstream_confusion",
        "fraudstream_feedback_outcomes_total",
        "fraudstream_dead_letters_total",
        "fraudstream_consumer_lag",
        "fraudstream_duplicates_total",
        "fraudstream_model_info",
        "fraudstream_model_load_failures_total",
    }
    assert required <= used, f"not on the dashboard: {required - used}"


def test_dashboard_labels_exist(dashboard: dict[str, Any]) -> None:
    exposed = exposed_metrics()
    every_label = set().union(*exposed.values()) | TARGET_LABELS
    outcome_cells = set(typing.get_args(OutcomeKind))
    for expr in expressions(dashboard):
        for name, matchers in re.findall(r"\b(fraudstream_[a-z0-9_]+)\s*\{([^}]*)\}", expr):
            for label, _op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers):
                assert label in exposed[name] | TARGET_LABELS, f"{name} has no label {label}"
                if label == "cell":
                    assert set(value.split("|")) <= outcome_cells, value
        for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
            for label in filter(None, (x.strip() for x in clause.split(","))):
                assert label in every_label, f"no metric has label {label!r} ({expr!r})"
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert label in every_label, f"legend uses unknown label {label!r}"
