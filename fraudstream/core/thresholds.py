"""Choosing thresholds from scored, labelled transactions (``fraudstream policy suggest``): by
flag rate, or by cost.

Cost of a decision, per transaction, in one currency:

* approve: the amount when it is fraud (the loss), else nothing;
* review: ``cost_review`` (an analyst's time; a reviewed fraud is caught);
* decline: ``cost_decline_good`` when it is genuine (a lost sale, an angry customer), else nothing.

Over the transactions sorted by score, declining the top ``i`` and flagging the top ``j >= i``
costs ``c_dg·G(i) + c_r·(j - i) + F - FA(j)``, where ``G(i)`` counts genuine ones among the top
``i``, ``FA(j)`` sums the fraud amounts among the top ``j`` and ``F`` all of them: for each ``j``
the best ``i`` is a running minimum, so the optimum is exact in O(n log n). Cuts fall only between
different scores, and a threshold sits midway between the two scores it separates.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fraudstream.core.policy import ModelPolicy, Segment, SegmentThresholds, Thresholds
from fraudstream.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Costs:
    review: float
    decline_good: float

    def __post_init__(self) -> None:
        if not (self.review >= 0 and self.decline_good >= 0):
            raise ConfigError("costs must be >= 0 (review and declined-genuine)")


@dataclass(frozen=True, slots=True)
class Choice:
    """Thresholds and what they would have done on the rows they were chosen on."""

    thresholds: Thresholds
    rows: int
    frauds: int
    flagged: int
    declined: int
    frauds_flagged: int
    cost: float | None  # under the costs given, or None when chosen by flag rate

    @property
    def flag_rate(self) -> float:
        return self.flagged / self.rows if self.rows else 0.0

    @property
    def recall(self) -> float:
        return self.frauds_flagged / self.frauds if self.frauds else 0.0


def _cut(desc: npt.NDArray[np.float64], k: int) -> float:
    """The threshold that flags exactly the top ``k`` of ``desc`` (descending, cut between two
    different scores): 1.0 for none, 0.0 for all."""
    if k <= 0:
        return 1.0
    if k >= len(desc):
        return 0.0
    return float((desc[k - 1] + desc[k]) / 2.0)


def _valid_cuts(desc: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """ok[k]: the top k can be cut from the rest (k = 0..n), i.e. no tie straddles the cut."""
    n = len(desc)
    ok = np.ones(n + 1, dtype=bool)
    if n > 1:
        ok[1:n] = desc[:-1] != desc[1:]
    return ok


def _choice(
    desc: npt.NDArray[np.float64],
    fraud: npt.NDArray[np.bool_],
    i: int,
    j: int,
    cost: float | None,
) -> Choice:
    return Choice(
        Thresholds(review=_cut(desc, j), decline=_cut(desc, i)),
        rows=len(desc),
        frauds=int(fraud.sum()),
        flagged=j,
        declined=i,
        frauds_flagged=int(fraud[:j].sum()),
        cost=cost,
    )


def _sorted(
    scores: Sequence[float] | npt.NDArray[np.floating], is_fraud: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
    """Scores descending, the labels in that order, and the order itself."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ConfigError("no scored rows to choose thresholds from")
    if np.isnan(s).any():
        raise ConfigError("scores contain NaN; drop those rows first")
    order = np.argsort(-s, kind="stable")
    return s[order], np.asarray(is_fraud, dtype=bool)[order], order


def by_flag_rate(
    scores: Sequence[float] | npt.NDArray[np.floating],
    is_fraud: Sequence[bool] | npt.NDArray[np.bool_],
    review_rate: float,
    decline_rate: float,
) -> Choice:
    """Thresholds flagging (review or decline) at most ``review_rate`` of the rows and declining
    at most ``decline_rate`` (the cut nearest below the rate when scores tie)."""
    if not (0.0 <= decline_rate <= review_rate <= 1.0):
        raise ConfigError(
            f"rates must satisfy 0 <= decline rate <= review rate <= 1, got "
            f"review={review_rate}, decline={decline_rate}"
        )
    desc, fraud, _ = _sorted(scores, is_fraud)
    ok = _valid_cuts(desc)
    n = len(desc)

    def largest_ok(limit: int) -> int:
        k = min(limit, n)
        while k > 0 and not ok[k]:
            k -= 1
        return k

    j = largest_ok(int(np.floor(review_rate * n + 1e-9)))
    i = min(largest_ok(int(np.floor(decline_rate * n + 1e-9))), j)
    return _choice(desc, fraud, i, j, None)


def by_cost(
    scores: Sequence[float] | npt.NDArray[np.floating],
    is_fraud: Sequence[bool] | npt.NDArray[np.bool_],
    amounts: Sequence[float] | npt.NDArray[np.floating],
    costs: Costs,
) -> Choice:
    """The thresholds of least total cost on these rows (see the module)."""
    desc, fraud, order = _sorted(scores, is_fraud)
    amount = np.asarray(amounts, dtype=np.float64)[order]
    n = len(desc)
    ok = _valid_cuts(desc)
    zero = np.zeros(1)
    genuine_top = np.concatenate((zero, np.cumsum(~fraud, dtype=np.float64)))  # G(k), k = 0..n
    fraud_amount_top = np.concatenate((zero, np.cumsum(np.where(fraud, amount, 0.0))))
    total_loss = fraud_amount_top[-1]
    # For each k: the best i <= k of c_dg·G(i) - c_r·i, over valid cuts only.
    ks = np.arange(n + 1, dtype=np.float64)
    decline_part = np.where(ok, costs.decline_good * genuine_top - costs.review * ks, np.inf)
    running = np.minimum.accumulate(decline_part)
    # at every j: min over i <= j of (c_dg·G(i) - c_r·i), + c_r·j + F - FA(j)
    total = np.where(ok, running + costs.review * ks + (total_loss - fraud_amount_top), np.inf)
    j = int(np.argmin(total))
    i = int(np.argmin(decline_part[: j + 1]))
    return _choice(desc, fraud, i, j, float(total[j]))


# --------------------------------------------------------------------------------------------
# A policy from a file's rows: per model version, and per segment (channel × amount band).

Chooser = Callable[
    [npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.float64]], Choice
]


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the suggestion: a version's default (``segment`` None) or one segment."""

    model_version: str
    segment: SegmentThresholds | None
    choice: Choice | None  # None: too few frauds, the segment falls back to the default
    rows: int
    frauds: int


def bands_of(edges: Sequence[float]) -> list[tuple[float | None, float | None]]:
    """Amount bands [0, e1), [e1, e2), ..., [en, ∞) from increasing positive edges."""
    edges = list(edges)
    if any(b <= a for a, b in itertools.pairwise(edges)) or any(e <= 0 for e in edges):
        raise ConfigError(f"amount band edges must be positive and increasing, got {edges}")
    lows: list[float | None] = [None, *edges]
    highs: list[float | None] = [*edges, None]
    return list(zip(lows, highs, strict=True))


def _segments(
    channels: Sequence[str] | None, bands: Sequence[tuple[float | None, float | None]]
) -> list[tuple[str, Segment]]:
    out: list[tuple[str, Segment]] = []
    for channel in channels or [None]:  # type: ignore[list-item]
        for lo, hi in bands:
            parts = [channel] if channel else []
            if lo is not None or hi is not None:
                parts.append(f"{lo or 0:g}-{'' if hi is None else f'{hi:g}'}")
            out.append(("/".join(parts), Segment(channel=channel, amount_min=lo, amount_max=hi)))
    return [(name, seg) for name, seg in out if name]


def suggest(
    versions: npt.NDArray[np.str_],
    scores: npt.NDArray[np.float64],
    is_fraud: npt.NDArray[np.bool_],
    amounts: npt.NDArray[np.float64],
    channels: npt.NDArray[np.object_] | None,
    choose: Chooser,
    *,
    losses: npt.NDArray[np.float64] | None = None,
    band_edges: Sequence[float] = (),
    min_frauds: int = 20,
) -> tuple[dict[str, ModelPolicy], list[Line]]:
    """Per model version: thresholds over all its rows (the version's default), then per segment
    (each channel of ``channels`` when given × each amount band) that has at least
    ``min_frauds`` frauds; a segment with fewer keeps the default (too few to choose from).
    Bands select by ``amounts`` (as the worker compares them); ``choose`` gets ``losses`` (the
    amounts in one currency; ``amounts`` when None)."""
    loss = amounts if losses is None else losses
    models: dict[str, ModelPolicy] = {}
    lines: list[Line] = []
    bands = bands_of(band_edges) if band_edges else [(None, None)]
    channel_names = sorted({c for c in channels.tolist() if c}) if channels is not None else None
    for version in sorted(set(versions.tolist())):
        mine = versions == version
        default = choose(scores[mine], is_fraud[mine], loss[mine])
        lines.append(Line(version, None, default, default.rows, default.frauds))
        chosen: list[SegmentThresholds] = []
        for name, seg in _segments(channel_names, bands):
            inside = mine.copy()
            if seg.channel is not None and channels is not None:
                inside &= channels == seg.channel
            if seg.amount_min is not None:
                inside &= amounts >= seg.amount_min
            if seg.amount_max is not None:
                inside &= amounts < seg.amount_max
            rows, frauds = int(inside.sum()), int(is_fraud[inside].sum())
            if frauds < min_frauds or rows == 0:
                lines.append(
                    Line(
                        version,
                        SegmentThresholds(name, seg, default.thresholds),
                        None,
                        rows,
                        frauds,
                    )
                )
                continue
            choice = choose(scores[inside], is_fraud[inside], loss[inside])
            st = SegmentThresholds(name, seg, choice.thresholds)
            chosen.append(st)
            lines.append(Line(version, st, choice, rows, frauds))
        models[version] = ModelPolicy(default.thresholds, tuple(chosen))
    return models, lines
