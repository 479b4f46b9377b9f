"""The bad-input scenario: a corpus of malformed, oversized and unscorable records, repeated ids and
a replay older than the dedup window, sent in bursts while valid load runs."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message

from fraudstream.faults.load import Load, Row, finish, setup
from fraudstream.faults.procs import WorkerProc, workers
from fraudstream.faults.verifier import Sent, Verdict, verify
from fraudstream.kafka.clients import make_producer
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate

# The kinds of tests/integration/test_pipeline.py, plus size, null keys, repeated ids and a
# transaction whose features cannot be computed. (label, key, value, expected DLQ reason or
# "decided" when the record is valid and must get a decision).
Corpus = list[tuple[str, bytes | None, bytes | None, str]]


def bad_corpus(base: dict[str, Any], tag: str) -> Corpus:
    key = base["card_id"].encode()

    def variant(i: int, **change: Any) -> bytes:
        d = {**base, "transaction_id": f"bad-{tag}-{i}-{uuid.uuid4().hex[:8]}", **change}
        return orjson.dumps({k: v for k, v in d.items() if v is not None})

    missing = {**base, "transaction_id": f"bad-{tag}-missing"}
    del missing["amount"]
    padded = {**base, "transaction_id": f"big-{tag}", "padding": "x" * 900_000}
    return [
        ("malformed JSON", key, b"{this is not json", "not_json"),
        ("non-UTF-8", key, b"\xff\xfe\xfa not utf-8", "not_utf8"),
        ("empty value", key, b"", "empty"),
        ("null value", key, None, "empty"),
        ("not an object", key, b"[1, 2, 3]", "not_object"),
        ("missing field", key, orjson.dumps(missing), "schema"),
        ("wrong-typed amount", key, variant(1, amount="12.50"), "schema"),
        ("negative amount", key, variant(2, amount=-5), "schema"),
        ("unknown currency", key, variant(3, currency="XYZ"), "bad_currency"),
        ("bad timestamp", key, variant(4, event_time="2026-13-45T25:61:00+00:00"), "bad_timestamp"),
        ("card number as card_id", key, variant(5, card_id="4111111111111111"), "card_number"),
        ("null key", None, variant(6), "key_mismatch"),
        ("~900 KB junk value", key, b"y" * 900_000, "not_json"),
        ("~900 KB valid value (unknown field)", key, orjson.dumps(padded), "decided"),
        ("1.1 MB value", key, b"z" * 1_100_000, "too_large"),
    ]


# A valid transaction whose time features come out non-finite: the decoder accepts any real
# RFC 3339 date (year 1..9999), the feature code refuses |ts| > 1e11 (year ~5138) as NaN.
def scoring_failures(base: dict[str, Any], tag: str, count: int) -> Corpus:
    key = base["card_id"].encode()
    out: Corpus = []
    for i in range(count):
        d = {**base, "transaction_id": f"nan-{tag}-{i}", "event_time": "9999-12-31T23:00:00+00:00"}
        out.append(("non-finite feature (year 9999)", key, orjson.dumps(d), "non_finite_feature"))
    return out


def _tx_id(value: bytes | None) -> str | None:
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    tid = obj.get("transaction_id") if isinstance(obj, dict) else None
    return tid if isinstance(tid, str) else None


class CorpusSender:
    """Produces raw records and remembers each acknowledged one with its partition and offset."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic_transactions
        self.producer = make_producer(settings, **{"message.max.bytes": 4_000_000})
        self.acked: list[tuple[Sent, str, str]] = []  # (record, label, expected)
        self.failed = 0
        self._lock = threading.Lock()

    def send(self, corpus: Sequence[tuple[str, bytes | None, bytes | None, str]]) -> None:
        for label, key, value, expect in corpus:
            cb = self._callback(label, expect, value)
            self.producer.produce(self.topic, key=key, value=value, on_delivery=cb)
        if self.producer.flush(60) > 0:
            raise RuntimeError("the broker did not acknowledge the corpus")

    def _callback(self, label: str, expect: str, value: bytes | None) -> Callable[..., None]:
        tid = _tx_id(value)

        def cb(err: KafkaError | None, msg: Message) -> None:
            with self._lock:
                if err is not None:
                    self.failed += 1
                    return
                sent = Sent(tid, msg.partition(), msg.offset())
                self.acked.append((sent, label, expect))

        return cb


def retries(base: dict[str, Any], count: int) -> Corpus:
    """``count`` valid transactions on cards of their own, meant to be sent twice (an upstream
    retry within the dedup window): one decision each."""
    out: Corpus = []
    for i in range(count):
        card = f"retry-card-{i}"
        d = {**base, "transaction_id": f"retry-{i}", "card_id": card}
        out.append(("repeated transaction_id", card.encode(), orjson.dumps(d), "decided"))
    return out


def bad_input(
    settings: Settings,
    tmp: Path,
    *,
    n: int = 2000,
    rate: float = 300.0,
    repeats: int = 50,
    nan_count: int = 20,
    seed: int = 6,
) -> tuple[Row, Row, Row]:
    """The corpus in three bursts while valid load runs, ``repeats`` valid transactions sent twice
    (an upstream retry) and ``nan_count`` scoring-time failures. After the load, the load's first
    ``repeats`` transactions are replayed: by then their cards' newest events are more than the
    24 h dedup window later in event time (the simulator compresses days into seconds).

    Returns three rows: the corpus (without the late replay), the scoring-time failures alone, and
    the late replay alone."""
    from fraudstream.core.messages import encode_transaction

    started = setup(settings)
    cfg = SimConfig(seed=seed, n_cards=max(100, n // 4))
    first = [e.tx for e in generate(cfg, n=repeats)]
    base = orjson.loads(encode_transaction(first[0]))
    sender = CorpusSender(settings)
    w = WorkerProc(settings, "w1", tmp).start()
    with workers(w):
        w.wait_ready()
        load = Load(settings, n, rate, seed).start()
        window = n / rate
        for burst in range(3):
            load.sleep_until((0.2 + 0.25 * burst) * window)
            sender.send(bad_corpus(base, f"{burst}"))
            sender.send(
                scoring_failures(base, f"{burst}", nan_count // 3 + (burst < nan_count % 3))
            )
            if burst in (0, 2):
                sender.send(retries(base, repeats))
        load.join()
        late = [
            ("late replay", t.card_id.encode(), encode_transaction(t), "decided") for t in first
        ]
        sender.send(late)
        extra = [s for s, _, _ in sender.acked]
        row, verdict, _ = finish(
            "bad-input corpus under load",
            settings,
            load,
            extra_acked=extra,
            faults=[f"{len(sender.acked)} corpus records in 3 bursts, then a late replay"],
            started=started,
        )
        alive = w.alive()

    def subset(label: str) -> tuple[list[Sent], Verdict]:
        sent = [s for s, lab, _ in sender.acked if lab == label]
        return sent, _subset_verdict(settings, sent)

    late_sent, late_v = subset("late replay")
    nan_sent, nan_v = subset("non-finite feature (year 9999)")
    # The corpus row leaves the late replay out: it has its own row.
    row.duplicated -= late_v.duplicated
    row.events -= len(late_sent)
    want: dict[str, int] = {}
    for _, _, expect in sender.acked:
        if expect != "decided":
            want[expect] = want.get(expect, 0) + 1
    short = {
        r: c - verdict.reasons.get(r, 0) for r, c in want.items() if verdict.reasons.get(r, 0) < c
    }
    row.notes = (
        f"{len(sender.acked) - len(late_sent)} corpus records (15 kinds x3 incl. a ~900 KB junk "
        f"value, a ~900 KB valid one, a 1.1 MB one and null keys; {repeats} ids sent twice; "
        f"{nan_count} non-finite); dead-letter reasons short of expected: {short or 'none'}; "
        f"worker alive after: {alive}"
    )
    row.samples["expected_reasons"] = [f"{k}={v}" for k, v in sorted(want.items())]
    nan_row = Row(
        scenario="scoring-time failure (non-finite feature)",
        events=len(nan_sent),
        lost=nan_v.lost,
        duplicated=nan_v.duplicated,
        phantom=0,
        dead_lettered=nan_v.reasons.get("non_finite_feature", 0),
        final_lag=row.final_lag,
        recovery_s=row.recovery_s,
        converge_s=row.converge_s,
        duration_s=0.0,
        faults=["part of the bad-input run"],
        notes=(
            "valid Transactions with event_time in year 9999: the decoder accepts any real RFC "
            "3339 date, the time features come out NaN (|ts| > 1e11 s, past year ~5138); "
            f"dead-lettered as non_finite_feature, decided: {nan_v.decided} (must be 0)"
        ),
        reasons=nan_v.reasons,
        samples={"decided": [str(nan_v.decided)]},
        measured_at=row.measured_at,
    )
    late_row = Row(
        scenario="replay older than the dedup window",
        events=len(late_sent),
        lost=late_v.lost,
        duplicated=late_v.duplicated,
        phantom=0,
        dead_lettered=late_v.dead_letters,
        final_lag=row.final_lag,
        recovery_s=0.0,
        converge_s=row.converge_s,
        duration_s=0.0,
        faults=["part of the bad-input run: the load's first ids re-sent after the load"],
        notes=(
            "dedup is per card over a 24 h window of EVENT time (FRAUD_DEDUP_WINDOW_HOURS): an id "
            "whose card has since seen events more than 24 h later (event time) is forgotten and "
            "decided again. Expected by design; an upstream retry within the window is deduped "
            "(corpus row)."
        ),
        samples={"duplicated": late_v.duplicated_sample},
        measured_at=row.measured_at,
    )
    return row, nan_row, late_row


def _subset_verdict(settings: Settings, sent: list[Sent]) -> Verdict:
    from fraudstream.faults.verifier import parse_dead_letter, parse_decision_id
    from fraudstream.kafka.clients import read_all

    ids = {s.transaction_id for s in sent}
    msgs = read_all(settings, [settings.topic_decisions, settings.topic_dlq], timeout=60)
    decided: list[str] = [
        t
        for m in msgs
        if m.topic() == settings.topic_decisions
        and (t := parse_decision_id(m.key(), m.value())) is not None
        and t in ids
    ]
    dls = [
        d
        for m in msgs
        if m.topic() == settings.topic_dlq
        and (d := parse_dead_letter(m.value(), m.headers())).transaction_id in ids
    ]
    return verify(sent, decided, dls)
