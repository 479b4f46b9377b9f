"""XGBoost tree ensembles evaluated in numpy, for the small batches a live stream brings.

XGBoost spends ~250-450 µs on every predict call before it looks at a row (on this project's
machines most of it is reading cgroup files to count CPUs, twice per call), so a batch of a few
transactions, the usual case at moderate rates, paid that per batch and per model. This
evaluator walks every tree of the ensemble for every row at once, level by level, and adds the
leaf values in XGBoost's own order (the base margin, then tree by tree, in float32), so it gives
XGBoost's margins to the bit; and its sigmoid calls the same C ``expf`` as XGBoost's, so the
probabilities are XGBoost's to the bit too (the parity tests pin both). Large batches still go
to XGBoost, which is faster per row there. The reasons' path attributions come from here too,
for every batch (XGBoost's ``approx_contribs``, to a few float32 ulps).

Only what the registry serves is supported: ``gbtree`` boosters with numerical splits, one
output (``binary:logistic``), one tree per round. ``Forest.from_json`` returns None for anything
else and the caller keeps XGBoost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

_LOGISTIC = {"binary:logistic", "reg:logistic"}


def _libm(name: str) -> Callable[[float], float] | None:
    """A float function of the C library, which XGBoost calls: numpy's float32 ``exp`` rounds
    differently from ``expf`` in ~5 % of cases, float64 ``exp`` rounded to float32 in ~0.01 %."""
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        fn = getattr(libm, name)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


_EXPF = _libm("expf")
_LOGF = _libm("logf")


@dataclass(frozen=True, slots=True)
class Forest:
    """Trees padded to one width and flattened: node ``j`` of tree ``t`` is at ``t * width + j``.
    Leaves point to themselves, so walking ``depth`` levels lands every row on a leaf."""

    n_features: int
    n_trees: int
    depth: int
    feature: npt.NDArray[np.intp]
    threshold: npt.NDArray[np.float32]
    left: npt.NDArray[np.intp]  # flat index of the left child (a leaf: itself)
    right: npt.NDArray[np.intp]
    default_left: npt.NDArray[np.bool_]  # where a missing (NaN) value goes
    leaf: npt.NDArray[np.float32]  # leaf value (0 on inner nodes)
    roots: npt.NDArray[np.intp]  # flat index of each tree's root
    base_margin: np.float32
    # Each node's cover-weighted mean leaf value (a leaf: its value), as XGBoost's
    # ``FillNodeMeanValue`` computes it for ``approx_contribs``.
    mean: npt.NDArray[np.float32]
    bias: np.float32  # the base margin plus every root's mean: the last contributions column

    @staticmethod
    def from_json(raw: bytes) -> Forest | None:
        """From ``Booster.save_raw("json")``; None when the model is not of the kind supported."""
        learner = orjson.loads(raw)["learner"]
        params = learner["learner_model_param"]
        booster = learner["gradient_booster"]
        if booster.get("name") != "gbtree" or learner["objective"]["name"] not in _LOGISTIC:
            return None
        if int(params.get("num_class", "0")) > 1 or int(params.get("num_target", "1")) != 1:
            return None
        model = booster["model"]
        if int(model["gbtree_model_param"].get("num_parallel_tree", "1")) != 1:
            return None
        trees = model["trees"]
        if not trees or any(
            any(t["split_type"]) or int(t["tree_param"].get("size_leaf_vector", "1")) > 1
            for t in trees
        ):
            return None
        base_score = float(str(params["base_score"]).strip("[]"))
        if not 0.0 < base_score < 1.0:
            return None
        return Forest._build(trees, int(params["num_feature"]), base_score)

    @staticmethod
    def _build(trees: list[dict[str, Any]], n_features: int, base_score: float) -> Forest:
        width = max(len(t["left_children"]) for t in trees)
        n = len(trees) * width
        feature = np.zeros(n, dtype=np.intp)
        threshold = np.zeros(n, dtype=np.float32)
        left = np.arange(n, dtype=np.intp)
        right = np.arange(n, dtype=np.intp)
        default_left = np.zeros(n, dtype=np.bool_)
        leaf = np.zeros(n, dtype=np.float32)
        mean = np.zeros(n, dtype=np.float32)
        depth = 0
        for t, tree in enumerate(trees):
            off = t * width
            lc = np.asarray(tree["left_children"], dtype=np.intp)
            rc = np.asarray(tree["right_children"], dtype=np.intp)
            cond = np.asarray(tree["split_conditions"], dtype=np.float32)
            inner = lc >= 0
            idx = off + np.arange(len(lc))
            feature[idx[inner]] = np.asarray(tree["split_indices"], dtype=np.intp)[inner]
            threshold[idx[inner]] = cond[inner]
            left[idx[inner]] = off + lc[inner]
            right[idx[inner]] = off + rc[inner]
            default_left[idx] = np.asarray(tree["default_left"], dtype=np.bool_)
            leaf[idx[~inner]] = cond[~inner]  # a leaf's value is kept in split_conditions
            depth = max(depth, _depth(lc, rc))
            hess = np.asarray(tree["sum_hessian"], dtype=np.float32)
            mean[off : off + len(lc)] = _node_means(lc, rc, cond, hess)
        # XGBoost keeps base_score as a probability and starts every row at its logit:
        # -logf(1.0f / p - 1.0f).
        p = np.float32(base_score)
        odds = np.float32(1.0) / p - np.float32(1.0)
        margin = -(np.float32(_LOGF(float(odds))) if _LOGF else np.log(odds, dtype=np.float32))
        roots = np.arange(len(trees), dtype=np.intp) * width
        bias = np.float32(0.0)
        for m in mean[roots].tolist():  # XGBoost's order: tree by tree in float32, then the base
            bias = np.float32(bias + np.float32(m))
        bias = np.float32(bias + np.float32(margin))
        return Forest(
            n_features=n_features,
            n_trees=len(trees),
            depth=depth,
            feature=feature,
            threshold=threshold,
            left=left,
            right=right,
            default_left=default_left,
            leaf=leaf,
            roots=roots,
            base_margin=np.float32(margin),
            mean=mean,
            bias=bias,
        )

    def margins(self, x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        """Raw scores (log-odds) of the rows of ``x`` (n × n_features)."""
        x = self._rows(x)
        n = x.shape[0]
        node = np.broadcast_to(self.roots, (n, self.n_trees))
        for _, _, child in self._levels(x):
            node = child
        # XGBoost's order: the base margin, then the trees one by one, each add in float32.
        terms = np.empty((n, self.n_trees + 1), dtype=np.float32)
        terms[:, 0] = self.base_margin
        terms[:, 1:] = self.leaf[node]
        out: npt.NDArray[np.float32] = np.cumsum(terms, axis=1, dtype=np.float32)[:, -1]
        return out

    def contributions(self, x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        """Path attributions (Saabas; XGBoost's ``pred_contribs`` with ``approx_contribs``):
        ``(n, n_features + 1)``, the last column the bias. Along each tree's path every split
        credits its feature with the change of the node mean it causes; each row sums to its
        margin. Independent of how many leaves a tree has, unlike exact TreeSHAP."""
        x = self._rows(x)
        n = x.shape[0]
        width = self.n_features + 1
        out_row = (np.arange(n, dtype=np.intp) * width)[:, None]
        where: list[npt.NDArray[np.intp]] = []
        delta: list[npt.NDArray[np.float32]] = []
        for node, feat, child in self._levels(x):
            inner = child != node  # a leaf points to itself
            where.append((out_row + feat)[inner])
            delta.append((self.mean[child] - self.mean[node])[inner])
        # One weighted count instead of an unbuffered add per level: sums in float64, so a
        # contribution differs from XGBoost's float32 running sum by a few ulps at most.
        sums = np.bincount(np.concatenate(where), np.concatenate(delta), minlength=n * width)
        contribs = sums.astype(np.float32).reshape(n, width)
        contribs[:, -1] = self.bias
        return contribs

    def _levels(
        self, x: npt.NDArray[np.float32]
    ) -> Iterator[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
        """Every row down every tree, one level at a time: per level, the node each (row, tree)
        is at, the feature it splits on, and the child taken (a leaf is its own child)."""
        n = x.shape[0]
        flat_x = x.ravel()
        row_start = (np.arange(n, dtype=np.intp) * self.n_features)[:, None]
        node = np.broadcast_to(self.roots, (n, self.n_trees))
        has_missing = bool(np.isnan(flat_x).any())  # once per call, not once per level
        for _ in range(self.depth):
            feat = self.feature[node]
            value = flat_x[row_start + feat]
            go_left = value < self.threshold[node]
            if has_missing:
                go_left = np.where(np.isnan(value), self.default_left[node], go_left)
            child = np.where(go_left, self.left[node], self.right[node])
            yield node, feat, child
            node = child

    def _rows(self, x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            # A wrong width would index the wrong features silently, as XGBoost would.
            raise ValueError(f"rows have shape {x.shape}; the model takes {self.n_features}")
        return x

    def predict(self, x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        """Probabilities, as XGBoost's ``binary:logistic`` turns margins into them."""
        # XGBoost: 1 / (expf(min(-x, 88.7)) + 1 + 1e-16), in float32 (the 1e-16 vanishes).
        z = np.minimum(-self.margins(x), np.float32(88.7))
        if _EXPF is not None:
            e = np.fromiter(map(_EXPF, z.tolist()), dtype=np.float32, count=len(z))
        else:  # no C library to call: off by one ulp in ~0.01 % of rows
            e = np.exp(z.astype(np.float64)).astype(np.float32)
        out: npt.NDArray[np.float32] = np.float32(1.0) / (e + np.float32(1.0))
        return out


def _depth(left: npt.NDArray[np.intp], right: npt.NDArray[np.intp]) -> int:
    """Edges on the longest root-to-leaf path."""
    best = 0
    stack = [(0, 0)]
    while stack:
        node, d = stack.pop()
        if left[node] < 0:
            best = max(best, d)
            continue
        stack.append((int(left[node]), d + 1))
        stack.append((int(right[node]), d + 1))
    return best


def _node_means(
    left: npt.NDArray[np.intp],
    right: npt.NDArray[np.intp],
    value: npt.NDArray[np.float32],
    hess: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """Each node's mean leaf value weighted by cover, children before parents, in float32 as
    XGBoost's ``FillNodeMeanValue``: (left mean * left cover + right mean * right cover) / cover."""
    mean = np.zeros(len(left), dtype=np.float32)
    order: list[int] = []
    stack = [0]
    while stack:  # parents before children; reversed below
        node = stack.pop()
        order.append(node)
        if left[node] >= 0:
            stack.append(int(left[node]))
            stack.append(int(right[node]))
    for node in reversed(order):
        lc, rc = int(left[node]), int(right[node])
        if lc < 0:
            mean[node] = value[node]
        else:
            total = mean[lc] * hess[lc]
            total += mean[rc] * hess[rc]
            mean[node] = total / hess[node]
    return mean
