"""``make model-quality``'s table: the published rows, one row per path measured, and per path
whether the targets are met (no data needed)."""

from __future__ import annotations

from fraudstream.backtest import handbook


def _ours(auc: float, ap: float, cp: float) -> dict[str, float]:
    return {
        "auc_roc": auc,
        "average_precision": ap,
        "card_precision_at_100": cp,
        "transactions": 58_264,
        "frauds": 385,
    }


def test_the_table_shows_both_paths_and_says_which_meet_the_targets() -> None:
    text = handbook.table(
        [("in process", _ours(0.884, 0.737, 0.312)), ("live stream", _ours(0.884, 0.737, 0.303))]
    )
    lines = text.splitlines()
    assert sum("(published)" in ln for ln in lines) == len(handbook.PUBLISHED)
    row = "| **fraudstream handbook-fs2** (live stream) | **0.884** | **0.737** | **0.303** |"
    assert row in lines
    assert "in process: targets met" in lines
    assert "live stream: targets NOT met" in lines
    assert lines[-1].endswith("58,264 transactions, 385 frauds")


def test_the_table_shows_the_ceiling_of_card_precision() -> None:
    ours = {
        **_ours(0.881, 0.724, 0.304),
        "card_precision_ceiling": {
            "frauds": 385,
            "knowable": 302,
            "model_order": 0.304,
            "random_mean": 0.306,
            "random_min": 0.303,
            "random_max": 0.314,
            "random_reaching_target": 0.08,
            "draws": 200,
        },
    }
    lines = handbook.table([("live stream", ours)]).splitlines()
    ceiling = [ln for ln in lines if ln.startswith("| ceiling of card precision@100 (live stream)")]
    assert len(ceiling) == 1
    assert ceiling[0].endswith("| 0.304 / 0.306 (0.303–0.314) |")
    assert any(ln.startswith("302 of 385 frauds knowable in time") for ln in lines)
    assert any("0.31 is reached by 8% of the random orders" in ln for ln in lines)
