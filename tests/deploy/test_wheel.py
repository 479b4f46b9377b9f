"""The wheel works on its own: built from the source tree, installed into a fresh virtualenv
(pinned by the lock), run from a folder that is not the source tree.

It must carry its JSON Schemas and other package data (read with importlib.resources), answer
``--version``, say clearly that no model registry is configured, and decide transactions in
process from a registry it is pointed at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
from packaging.requirements import Requirement

import fraudstream
from fraudstream.core.messages import encode_transaction, load_schema
from fraudstream.sim.generator import SimConfig, generate

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "runtime.txt"


def run(
    argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # From a copy of what the repository tracks: a build/ left in the tree by an earlier build
    # could smuggle stale modules into the wheel.
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in files.stdout.decode().split("\0"):
        if name and (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    proc = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src], src)
    assert proc.returncode == 0, proc.stderr
    (built,) = dist.glob("fraudstream-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    uv = Path(sys.executable).with_name("uv")
    made = run([uv, "venv", "-q", "--seed", "--python", sys.executable, home / "v"], home)
    assert made.returncode == 0, made.stderr
    # Resolved like a user's `pip install fraudstream` (uv: the same resolution, in seconds), with
    # the runtime lock's versions as constraints (without its hashes: they would be demanded for
    # the wheel just built too).
    pins = [line.rstrip(" \\") for line in LOCK.read_text().splitlines() if "==" in line]
    constraints = home / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    proc = run(
        [uv, "pip", "install", "-q", "--python", home / "v" / "bin" / "python", "-c", constraints,
         wheel],
        home,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return home / "v"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUD_", "PYTHON"))}
    return {**env, **extra}


def test_the_wheel_carries_package_data_and_license(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for schema in ("transaction", "decision", "score", "feedback", "outcome", "routing"):
        assert f"fraudstream/schemas/{schema}.json" in names
    for data in ("py.typed", "kafka/pom.xml", "kafka/log4j2.yaml", "app/openapi.json"):
        assert f"fraudstream/{data}" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "models/")) for n in names)
    meta = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        .decode()
    )
    assert "License-Expression: Apache-2.0" in meta
    assert f"Version: {fraudstream.__version__}" in meta
    # Exactly one XGBoost distribution on every platform: the CPU-only wheel where it exists.
    requires = [
        Requirement(line.removeprefix("Requires-Dist: "))
        for line in meta.splitlines()
        if line.startswith("Requires-Dist: xgboost")
    ]
    for platform, machine, want in (
        ("linux", "x86_64", "xgboost-cpu"),
        ("linux", "aarch64", "xgboost-cpu"),
        ("win32", "AMD64", "xgboost-cpu"),
        ("darwin", "arm64", "xgboost"),  # xgboost-cpu publishes no macOS wheels
        ("darwin", "x86_64", "xgboost"),
        ("linux", "ppc64le", "xgboost"),
    ):
        env = {"sys_platform": platform, "platform_machine": machine}
        chosen = [r.name for r in requires if r.marker is None or r.marker.evaluate(env)]
        assert chosen == [want], (platform, machine, chosen)


def test_installed_wheel_runs_outside_the_source_tree(venv: Path, tmp_path: Path) -> None:
    cli = venv / "bin" / "fraudstream"
    where = run([venv / "bin" / "python", "-c", "import fraudstream; print(fraudstream.__file__)"],
                tmp_path, clean_env())  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), "imported from the source tree"

    version = run([cli, "--version"], tmp_path, clean_env())
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"fraudstream {fraudstream.__version__}"

    # No registry configured (no ./models here): one clear line, exit 2, no traceback.
    missing = run([cli, "models", "list"], tmp_path, clean_env())
    assert missing.returncode == 2
    assert "FRAUD_MODELS_DIR" in missing.stderr
    assert "Traceback" not in missing.stderr

    env = clean_env(FRAUD_MODELS_DIR=str(REPO / "models"))
    listed = run([cli, "models", "list"], tmp_path, env)
    assert listed.returncode == 0, listed.stderr
    assert "champion-v1" in listed.stdout
    assert "challenger-v2" in listed.stdout
    verified = run([cli, "models", "verify"], tmp_path, env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_installed_wheel_decides_transactions(venv: Path, tmp_path: Path) -> None:
    txs = list(generate(SimConfig(seed=11), n=200))
    lines = "".join(encode_transaction(t.tx).decode() + "\n" for t in txs)
    env = clean_env(
        FRAUD_MODELS_DIR=str(REPO / "models"),
        FRAUD_CHALLENGER="challenger-v2",
        FRAUD_CHALLENGER_SHARE="0.5",
        FRAUD_SHADOW="true",
    )
    proc = run([venv / "bin" / "fraudstream", "score", "-"], tmp_path, env, stdin=lines)
    assert proc.returncode == 0, proc.stderr
    decisions = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(decisions) == len(txs)
    schema = load_schema("decision")
    for d in decisions:
        jsonschema.validate(d, schema)
    assert {d["variant"] for d in decisions} == {"champion", "challenger"}
    assert all(d["shadow"] for d in decisions)
    assert "200 decided" in proc.stderr
