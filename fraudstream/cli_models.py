"""``fraudstream models …``, ``route``, ``promote`` and ``rollback``: registered model versions
and which of them decide, changed live through the control topic."""

from __future__ import annotations

import sys
from typing import Any

import click

from fraudstream.errors import FraudStreamError
from fraudstream.settings import get_settings


@click.group()
def models() -> None:
    """Registered model versions.

    \b
      fraudstream models list
      fraudstream models verify champion-v1
    """


@models.command("list")
def models_list() -> None:
    """Show registered versions with their metrics and thresholds."""
    from fraudstream.core.registry import list_versions, require_registry

    for m in list_versions(require_registry(get_settings().models_dir)):
        click.echo(
            f"{m.version:16s} trees={m.n_trees:<4d} "
            f"auc={m.metrics.get('auc_roc', float('nan')):.4f} "
            f"ap={m.metrics.get('average_precision', float('nan')):.4f} "
            f"review>={m.review_threshold:.4f} decline>={m.decline_threshold:.4f} "
            f"sha256={m.sha256[:12]}"
        )


@models.command("verify")
@click.argument("versions", nargs=-1)
def models_verify(versions: tuple[str, ...]) -> None:
    """Check sha256, format and feature names of VERSIONS (default: all). Exit 1 on a problem."""
    from fraudstream.core.registry import list_versions, require_registry, verify

    s = get_settings()
    names = list(versions) or [m.version for m in list_versions(require_registry(s.models_dir))]
    bad = 0
    for v in names:
        problems = verify(s.models_dir, v)
        click.echo(f"{v}: " + ("ok" if not problems else "; ".join(problems)))
        bad += bool(problems)
    sys.exit(1 if bad else 0)


def _current_routing() -> Any:
    from fraudstream.kafka.control import latest_routing, startup_routing

    s = get_settings()
    return latest_routing(s) or startup_routing(s)


@click.command()
@click.option("--champion", default=None, help="Champion version.")
@click.option("--challenger", default=None, help="Challenger version ('none' to remove).")
@click.option("--share", type=click.FloatRange(0, 1), default=None, help="Challenger share 0–1.")
@click.option("--shadow/--no-shadow", default=None, help="The other model scores too.")
@click.option("--salt", default=None, help="Changing it reshuffles which cards go where.")
def route(
    champion: str | None,
    challenger: str | None,
    share: float | None,
    shadow: bool | None,
    salt: str | None,
) -> None:
    """Change routing live for every worker (through the control topic).

    \b
      fraudstream route --challenger challenger-v2 --share 0.2 --shadow
      fraudstream route --share 0.5
      fraudstream route --challenger none
    """
    from dataclasses import replace

    from fraudstream.core.messages import utc_now_iso
    from fraudstream.kafka.control import publish_routing

    r = _current_routing()
    changes: dict[str, Any] = {"updated_at": utc_now_iso()}
    if champion:
        changes["champion"] = champion
    if challenger is not None:
        changes["challenger"] = None if challenger.lower() == "none" else challenger
        if changes["challenger"] is None:
            changes["challenger_share"] = 0.0
    if share is not None:
        changes["challenger_share"] = share
    if shadow is not None:
        changes["shadow"] = shadow
    if salt is not None:
        changes["salt"] = salt
    new = replace(r, **changes)
    _check_versions_exist([new.champion, new.challenger])
    publish_routing(get_settings(), new)
    click.echo(
        f"routing published: champion={new.champion} challenger={new.challenger} "
        f"share={new.challenger_share} shadow={new.shadow}"
    )


def _check_versions_exist(versions: list[str | None]) -> None:
    from fraudstream.core.registry import list_versions

    known = {m.version for m in list_versions(get_settings().models_dir)}
    for v in versions:
        if v and v not in known:
            raise click.BadParameter(
                f"model version {v!r} is not in {get_settings().models_dir} "
                f"(known: {', '.join(sorted(known)) or 'none'}); train it or copy it there first"
            )


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def promote(yes: bool) -> None:
    """Make the challenger the champion (the old champion becomes the challenger at share 0).

    Shows the champion-vs-challenger report first and asks to confirm unless --yes.

    \b
      fraudstream promote
      fraudstream promote --yes
    """
    from dataclasses import replace

    from fraudstream.core.messages import utc_now_iso
    from fraudstream.kafka.control import publish_routing

    r = _current_routing()
    if not r.challenger:
        raise click.UsageError("there is no challenger to promote; set one with `route`")
    try:
        from fraudstream.report import render_report

        click.echo(render_report(get_settings()))
    except FraudStreamError as exc:
        click.echo(f"(no report: {exc})")
    if not yes:
        click.confirm(f"Promote {r.challenger} over {r.champion}?", abort=True)
    new = replace(
        r,
        champion=r.challenger,
        challenger=r.champion,
        challenger_share=0.0,
        updated_at=utc_now_iso(),
    )
    publish_routing(get_settings(), new)
    click.echo(f"promoted {new.champion}; {new.challenger} kept as challenger at share 0")


@click.command()
def rollback() -> None:
    """Undo the last promotion: the challenger (previous champion) decides again.

    \b
      fraudstream rollback
    """
    from dataclasses import replace

    from fraudstream.core.messages import utc_now_iso
    from fraudstream.kafka.control import publish_routing

    r = _current_routing()
    if not r.challenger:
        raise click.UsageError("no previous champion is recorded as challenger; use `route`")
    new = replace(
        r,
        champion=r.challenger,
        challenger=r.champion,
        challenger_share=0.0,
        updated_at=utc_now_iso(),
    )
    publish_routing(get_settings(), new)
    click.echo(f"rolled back: {new.champion} is champion again")
