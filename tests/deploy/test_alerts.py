"""The alert rules are valid (`promtool check rules`) and do what their unit tests say
(`promtool test rules`: each alert fires when it should and stays quiet when it should)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.deploy.tools import tool

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("promtool")), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_rules_are_valid() -> None:
    proc = promtool("check", "rules", "alerts.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 8 rules found" in proc.stdout


def test_rule_unit_tests_pass() -> None:
    proc = promtool("test", "rules", "alerts.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_the_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    # Its rule file is mounted at /etc/prometheus/alerts.yml: check it from a copy that points
    # at the file here.
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    local = tmp_path / "prometheus.yml"
    local.write_text(
        config.replace("/etc/prometheus/alerts.yml", str(PROMETHEUS_DIR / "alerts.yml"))
    )
    proc = promtool("check", "config", str(local))
    assert proc.returncode == 0, proc.stdout + proc.stderr
