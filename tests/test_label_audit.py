"""The audit's signals: margins, the cleanlab ranking of out-of-fold probabilities, the margin ranking."""

import numpy as np
import pytest

from dcl_keras import label_audit

pytestmark = pytest.mark.backend_agnostic


def test_margin_is_the_given_logit_minus_the_best_other():
    logits = np.array([[3.0, 1.0, 0.0], [0.5, 2.0, 1.5], [1.0, 1.0, 4.0]])
    np.testing.assert_allclose(label_audit.margins(logits, [0, 2, 0]), [2.0, -0.5, -3.0])


def _planted(num=300, classes=4, wrong=30, seed=0):
    """Out-of-fold probabilities that favour the true class, and given labels with `wrong` of them flipped."""
    rng = np.random.default_rng(seed)
    truth = np.arange(num) % classes
    logits = rng.normal(0, 0.3, (num, classes))
    logits[np.arange(num), truth] += 5.0
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    given = truth.copy()
    flipped = rng.choice(num, wrong, replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, classes, wrong)) % classes
    keys = [f"c{t}/{i}.jpg" for i, t in enumerate(truth)]
    return keys, given, probabilities, truth, {keys[i] for i in flipped}


def test_cleanlab_ranking_flags_the_planted_wrong_labels_first_and_suggests_the_true_class():
    keys, given, probabilities, truth, wrong = _planted()
    names = [f"class_{c}" for c in range(4)]
    rows, flagged = label_audit.rank_out_of_fold(keys, given, probabilities, names)
    assert len(rows) == len(keys) and {r["key"] for r in rows} == set(keys)
    assert [r["flagged"] for r in rows] == [True] * flagged + [False] * (len(rows) - flagged)
    assert {r["key"] for r in rows[:flagged]} == wrong
    by_key = {k: i for i, k in enumerate(keys)}
    assert all(r["suggested"] == names[truth[by_key[r["key"]]]] for r in rows[:flagged])
    scores = [r["score"] for r in rows[flagged:]]
    assert scores == sorted(scores)  # The rest: least confident in the given label first.


def test_margin_ranking_flags_the_lower_of_two_mixture_components_of_the_area_under_the_margin():
    rng = np.random.default_rng(0)
    clean, wrong = rng.normal(2.0, 0.5, (3, 90)), rng.normal(-2.0, 0.5, (3, 10))  # 3 epochs.
    rows_over_epochs = np.concatenate([clean, wrong], axis=1)
    keys = [f"k{i}" for i in range(100)]
    rows, flagged = label_audit.rank_margins(keys, [0] * 100, rows_over_epochs, [1] * 100, ["x", "y"])
    assert flagged == 10 and {r["key"] for r in rows[:10]} == {f"k{i}" for i in range(90, 100)}
    assert all(r["flagged"] for r in rows[:10]) and not any(r["flagged"] for r in rows[10:])
    assert [r["rank"] for r in rows] == list(range(1, 101)) and rows[0]["suggested"] == "y"
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores)
    np.testing.assert_allclose(scores[0], rows_over_epochs.mean(axis=0).min())


def test_the_mixture_flags_nothing_without_a_distinct_group_that_loses_to_another_class():
    rng = np.random.default_rng(1)
    easy_and_hard = np.concatenate([rng.normal(3.0, 0.3, 80), rng.normal(0.8, 0.3, 20)])  # All learned.
    assert label_audit.mixture_flags(easy_and_hard).size == 0
    assert label_audit.mixture_flags(np.ones(10)).size == 0
    overlapping = np.concatenate([rng.normal(-0.5, 1.0, 50), rng.normal(0.8, 1.0, 50)])  # A tail, not two groups.
    assert label_audit.mixture_flags(overlapping).size == 0


def test_precision_and_recall_against_the_truth():
    assert label_audit.precision_recall({"a", "b", "c", "d"}, {"a", "b", "e"}) == (0.5, 2 / 3)
    assert label_audit.precision_recall(set(), {"a"}) == (None, 0.0)
