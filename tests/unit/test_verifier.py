"""The fault suite's counting, without Kafka (fraudstream.faults.verifier.verify)."""

from __future__ import annotations

from pathlib import Path

import orjson

from fraudstream.faults import load_results, record, render_table, reset
from fraudstream.faults.verifier import (
    DeadLetter,
    Sent,
    parse_dead_letter,
    parse_decision_id,
    verify,
)


def test_clean_run_counts_nothing() -> None:
    v = verify(["a", "b", "c"], ["a", "b", "c"], lag=0)
    assert (v.lost, v.duplicated, v.phantom, v.decided) == (0, 0, 0, 3)
    assert v.clean


def test_acknowledged_without_decision_or_dead_letter_is_lost() -> None:
    v = verify(["a", "b", "c"], ["a"], [DeadLetter("b", 0, 7, "schema")])
    assert v.lost == 1
    assert v.lost_sample == ["c"]
    assert not v.clean


def test_extra_decisions_for_one_id_are_duplicates() -> None:
    v = verify(["a", "b"], ["a", "a", "a", "b"])
    assert v.duplicated == 2
    assert v.decisions == 4
    assert v.decided == 2
    assert v.duplicated_sample == ["a"]
    assert v.clean  # duplicates are reported, not a lost/phantom failure


def test_decision_for_an_id_never_sent_is_phantom() -> None:
    v = verify(["a"], ["a", "zz"])
    assert v.phantom == 1
    assert v.phantom_sample == ["zz"]
    # Sent but unacknowledged (a producer timeout) is not a phantom when sent_ids says so.
    assert verify(["a"], ["a", "zz"], sent_ids=["a", "zz"]).phantom == 0


def test_bad_records_are_matched_by_origin_offset_when_they_have_no_id() -> None:
    acked = [Sent(None, 1, 40), Sent(None, 1, 41), Sent("x", 0, 3)]
    dls = [DeadLetter(None, 1, 40, "not_json"), DeadLetter("x", 0, 3, "schema")]
    v = verify(acked, [], dls)
    assert v.lost == 1
    assert v.lost_sample == ["(1, 41)"]
    assert v.reasons == {"not_json": 1, "schema": 1}


def test_repeated_ids_need_one_decision_and_a_dead_letter_twice_is_counted() -> None:
    v = verify(["a", "a", "b"], ["a", "b"], [DeadLetter(None, 0, 9, "x")] * 2)
    assert v.lost == 0
    assert v.duplicated == 0
    assert v.dlq_duplicated == 1


def test_lag_makes_a_verdict_unclean() -> None:
    assert not verify(["a"], ["a"], lag=3).clean
    assert verify(["a"], ["a"], lag=None).clean


def test_parsers() -> None:
    assert parse_decision_id(b"k", orjson.dumps({"transaction_id": "t1"})) == "t1"
    assert parse_decision_id(b"k", b"not json") == "k"
    d = parse_dead_letter(
        b"\xff junk",
        [("error.class", b"not_utf8"), ("origin.partition", b"2"), ("origin.offset", b"17")],
    )
    assert d == DeadLetter(None, 2, 17, "not_utf8")
    d = parse_dead_letter(orjson.dumps({"transaction_id": "t9"}), [("error.class", b"schema")])
    assert d == DeadLetter("t9", None, None, "schema")


def test_table_renders_rows_in_order_with_the_hot_swap_reference() -> None:
    rows = {
        "SIGKILL x3": {
            "scenario": "SIGKILL x3",
            "events": 10,
            "lost": 0,
            "duplicated": 2,
            "phantom": 0,
            "final_lag": 0,
            "recovery_s": 3.25,
            "faults": ["k"],
        },
        "SIGTERM + restart": {"scenario": "SIGTERM + restart", "events": 5, "lost": 0},
    }
    table = render_table(rows)
    assert table.index("SIGTERM + restart") < table.index("SIGKILL x3")
    assert "| SIGKILL x3 | 1 | 10 | 0 | 2 | 0 | – | 0 | 3.2 |" in table
    assert "test_hot_swap.py" in table


def test_a_scenario_run_several_times_keeps_its_worst_run(tmp_path: Path) -> None:
    path = tmp_path / "results.json"

    def run(duplicated: int, recovery: float) -> dict[str, object]:
        return {
            "scenario": "SIGKILL x3",
            "events": 6000,
            "lost": 0,
            "duplicated": duplicated,
            "phantom": 0,
            "final_lag": 0,
            "recovery_s": recovery,
            "notes": f"run with {duplicated} duplicated, recovery {recovery}",
        }

    for duplicated, recovery in [(0, 11.0), (42, 11.5), (0, 30.0), (0, 12.0)]:
        record(run(duplicated, recovery), path)
    [kept] = load_results(path).values()
    assert (kept["runs"], kept["duplicated"], kept["recovery_s"]) == (4, 42, 11.5)
    record(run(0, 1.0), path)
    assert load_results(path)["SIGKILL x3"]["runs"] == 5
    assert "| SIGKILL x3 | 5 | 6000 | 0 | 42 |" in render_table(load_results(path))
    reset(path)
    assert load_results(path) == {}
