

"""Pairing the items of two lists, and the precision/recall/F1 that follows.

Unordered lists are paired by **optimal assignment**: the one-to-one pairing of
predicted and reference items whose total similarity is largest (scipy's
``linear_sum_assignment``, the Hungarian/Jonker-Volgenant algorithm). Greedy
pairing under-scores: with similarities ``[[0.9, 0.8], [0.85, 0.1]]`` greedy takes
0.9 first and is left with 0.1 (total 1.0), while the optimum pairs 0.8 + 0.85 =
1.65.

Similarities below the match threshold are set to 0 *before* the assignment, so
the assignment maximises exactly the credit that will be counted.

With ``S`` the sum of the similarities of the matched pairs, ``P`` predicted
items and ``R`` reference items (a fuzzy F1; with exact matches ``S`` is the
number of true positives)::

    precision = S / P        recall = S / R        F1 = 2 S / (P + R)

Two empty lists agree completely (precision = recall = F1 = 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Pair = tuple[int, int, float]
"""One matched pair: (index into the prediction, index into the reference, similarity).
A plain tuple: a million grades build millions of them."""


def assign(matrix: Sequence[Sequence[float]], threshold: float = 0.0) -> list[Pair]:
    """Optimal one-to-one pairing of rows (predictions) and columns (references).

    Entries below ``threshold`` (and zeros) never form a pair. The result is
    sorted by prediction index. When every row has at most one candidate and
    no two rows want the same column, that pairing is the optimum and scipy is
    skipped (the common case of exact matches plus misses).

    >>> assign([[0.9, 0.8], [0.85, 0.1]])
    [(0, 1, 0.8), (1, 0, 0.85)]
    >>> assign([[0.3]], threshold=0.5)
    []
    >>> assign([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.2]], threshold=0.5)
    [(0, 0, 1.0), (2, 1, 1.0)]
    """
    if not matrix or len(matrix[0]) == 0:
        return []
    pairs: list[Pair] = []
    taken: set[int] = set()
    for i, row in enumerate(matrix):
        hit = -1
        for j, v in enumerate(row):
            if v > 0.0 and v >= threshold:
                if hit >= 0:
                    break  # two candidates in one row: a real choice
                hit = j
        else:
            if hit < 0:
                continue
            if hit not in taken:
                taken.add(hit)
                pairs.append((i, hit, float(row[hit])))
                continue
        break  # a real choice to make: solve it properly below
    else:
        return pairs
    m = np.asarray(matrix, dtype=np.float64)  # (P, R)
    m = np.where((m >= threshold) & (m > 0.0), m, 0.0)
    from scipy.optimize import linear_sum_assignment  # here, not at the top: scipy.optimize is half of `import graders` (~0.47 s)

    picked_rows, picked_cols = linear_sum_assignment(m, maximize=True)
    return [(i, j, float(m[i, j])) for i, j in zip(picked_rows.tolist(), picked_cols.tolist()) if m[i, j] > 0.0]


def ordered_pairs(scores: Sequence[float], threshold: float = 0.0) -> list[Pair]:
    """Pairs for an ordered comparison: item ``i`` against item ``i`` only.

    >>> ordered_pairs([1.0, 0.2, 0.9], threshold=0.5)
    [(0, 0, 1.0), (2, 2, 0.9)]
    """
    return [(i, i, s) for i, s in enumerate(scores) if s > 0.0 and s >= threshold]


def prf(matched: float, n_pred: int, n_ref: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from the matched similarity mass ``S``.

    precision = S / P, recall = S / R, F1 = 2S / (P + R); empty vs empty is (1, 1, 1),
    and an empty side gives 0 for the ratio it divides (no division by zero).

    >>> prf(2.0, 3, 3)
    (0.6666666666666666, 0.6666666666666666, 0.6666666666666666)
    >>> prf(0.0, 0, 0)
    (1.0, 1.0, 1.0)
    >>> prf(0.0, 2, 0)
    (0.0, 1.0, 0.0)
    """
    if n_pred == 0 and n_ref == 0:
        return 1.0, 1.0, 1.0
    if n_pred == 0:  # nothing predicted: precision is vacuous, nothing was found
        return 1.0, 0.0, 0.0
    if n_ref == 0:  # nothing to find: every prediction is a false positive
        return 0.0, 1.0, 0.0
    return matched / n_pred, matched / n_ref, 2.0 * matched / (n_pred + n_ref)


