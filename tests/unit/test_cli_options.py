"""``fraudstream.cli_options``: the shared file options take an existing file as a ``Path``,
are None when absent, and refuse a file that is not there with click's usage error."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from fraudstream.cli_options import file_option, policy_and_rules


@click.command()
@policy_and_rules("the policy", "the rules")
@file_option("--rates", "rates_file", "the rates")
def probe(policy_file: Path | None, rules_file: Path | None, rates_file: Path | None) -> None:
    click.echo(repr((policy_file, rules_file, rates_file)))


def test_file_options_give_paths_or_none_and_refuse_a_missing_file(tmp_path: Path) -> None:
    doc = tmp_path / "policy.json"
    doc.write_text("{}")
    runner = CliRunner()
    got = runner.invoke(probe, ["--policy", str(doc)])
    assert got.exit_code == 0, got.output
    assert got.output.strip() == repr((doc, None, None))
    missing = runner.invoke(probe, ["--rules", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
    helped = runner.invoke(probe, ["--help"])
    assert all(h in helped.output for h in ("the policy", "the rules", "the rates"))
