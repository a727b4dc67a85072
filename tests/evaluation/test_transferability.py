"""Tests for transferlab.evaluation.transferability."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.covariance import LedoitWolf

from transferlab.evaluation.transferability import (
    SCORES,
    h_score,
    leep,
    logme,
    nce,
    rank_agreement,
    score_all,
    trusted,
)


# ------------------------------------------------------- direct reference implementations
def _logme_direct(f: np.ndarray, y: np.ndarray) -> float:
    """LogME with explicit D x D matrices and inverses (You et al., 2021, Alg. 1)."""
    n, d = f.shape
    ftf = f.T @ f
    eye = np.eye(d)
    evidences = []
    for c in sorted(set(y.tolist())):
        t_vec = np.array([1.0 if yi == c else 0.0 for yi in y])
        alpha, beta = 1.0, 1.0
        m2 = res2 = 0.0
        for _ in range(11):
            a_inv = np.linalg.inv(alpha * eye + beta * ftf)
            m = beta * a_inv @ f.T @ t_vec
            gamma = d - alpha * np.trace(a_inv)  # sum_i beta s_i / (alpha + beta s_i)
            m2 = float(m @ m)
            res2 = float(sum((t_vec[i] - f[i] @ m) ** 2 for i in range(n)))
            lam_old = alpha / beta
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - lam_old) / lam_old <= 1e-3:
                break
        _, log_det = np.linalg.slogdet(alpha * eye + beta * ftf)
        ev = (
            d / 2 * math.log(alpha)
            + n / 2 * math.log(beta)
            - 0.5 * log_det
            - beta / 2 * res2
            - alpha / 2 * m2
            - n / 2 * math.log(2 * math.pi)
        )
        evidences.append(ev / n)
    return sum(evidences) / len(evidences)


def _leep_loop(theta: np.ndarray, y: np.ndarray) -> float:
    n, z_dim = theta.shape
    n_cls = int(max(y)) + 1
    joint = [[0.0] * z_dim for _ in range(n_cls)]
    for i in range(n):
        for z in range(z_dim):
            joint[y[i]][z] += theta[i, z] / n
    p_z = [sum(joint[c][z] for c in range(n_cls)) for z in range(z_dim)]
    total = 0.0
    for i in range(n):
        total += math.log(sum(joint[y[i]][z] / p_z[z] * theta[i, z] for z in range(z_dim)))
    return total / n


def _nce_loop(z: np.ndarray, y: np.ndarray) -> float:
    n = len(y)
    counts: dict[tuple[int, int], int] = {}
    z_counts: dict[int, int] = {}
    for zi, yi in zip(z.tolist(), y.tolist(), strict=True):
        counts[(yi, zi)] = counts.get((yi, zi), 0) + 1
        z_counts[zi] = z_counts.get(zi, 0) + 1
    cond_entropy = 0.0
    for (_, zi), c in counts.items():
        p_yz = c / n
        cond_entropy -= p_yz * math.log(p_yz / (z_counts[zi] / n))
    return -cond_entropy


def _h_score_loop(f: np.ndarray, y: np.ndarray) -> float:
    n = f.shape[0]
    mu = sum(f[i] for i in range(n)) / n
    cov_f = sum(np.outer(f[i] - mu, f[i] - mu) for i in range(n)) / (n - 1)
    class_mean = {c: np.mean([f[i] for i in range(n) if y[i] == c], axis=0) for c in set(y)}
    g = np.array([class_mean[y[i]] for i in range(n)])
    g_mu = g.mean(axis=0)
    cov_g = sum(np.outer(g[i] - g_mu, g[i] - g_mu) for i in range(n)) / (n - 1)
    return float(np.trace(np.linalg.inv(cov_f) @ cov_g))


def _random_probs(rng: np.random.Generator, n: int, z: int) -> np.ndarray:
    return rng.dirichlet(np.ones(z), size=n)


# ------------------------------------------------------------------ LogME
@pytest.mark.parametrize(("n", "d", "c", "seed"), [(40, 6, 3, 0), (60, 10, 4, 1), (12, 20, 3, 2)])
def test_logme_matches_direct_inverse_implementation(n: int, d: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d)) + rng.normal(size=d)
    y = np.arange(n) % c
    rng.shuffle(y)
    assert logme(f, y) == pytest.approx(_logme_direct(f, y), rel=1e-6, abs=1e-8)


def test_logme_rank_deficient_features_match_direct() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(30, 3))
    f = np.hstack([base, base @ rng.normal(size=(3, 2))])  # rank 3 in 5 dimensions
    y = np.arange(30) % 2
    assert logme(f, y) == pytest.approx(_logme_direct(f, y), rel=1e-6, abs=1e-8)


def test_logme_separable_beats_noise() -> None:
    rng = np.random.default_rng(10)
    n, d, c = 200, 16, 4
    y = np.arange(n) % c
    good = 3.0 * rng.normal(size=(c, d))[y] + 0.01 * rng.normal(size=(n, d))
    noise = rng.normal(size=(n, d))
    assert logme(good, y) > logme(noise, y) + 1.0


# ------------------------------------------------------------------- LEEP
@pytest.mark.parametrize(("n", "z", "c", "seed"), [(30, 5, 3, 0), (50, 8, 4, 1), (25, 2, 5, 2)])
def test_leep_matches_loop(n: int, z: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    theta = _random_probs(rng, n, z)
    y = np.arange(n) % c
    assert leep(theta, y) == pytest.approx(_leep_loop(theta, y), rel=1e-6, abs=1e-10)


def test_leep_hand_computed() -> None:
    theta = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    y = np.array([0, 0, 1, 1])
    # P(y|z): 0|0 = 15/22, 0|1 = 5/18, 1|0 = 7/22, 1|1 = 13/18 -> EEP 127/198, 103/198 (x2)
    expected = 0.5 * (math.log(127 / 198) + math.log(103 / 198))
    assert leep(theta, y) == pytest.approx(expected, abs=1e-12)


def test_leep_label_function_beats_uniform_and_random() -> None:
    rng = np.random.default_rng(11)
    n, c, z = 120, 4, 6
    y = np.arange(n) % c
    informative = np.full((n, z), 0.02)
    informative[np.arange(n), (2 * y + 1) % z] = 1.0 - 0.02 * (z - 1)
    uniform = np.full((n, z), 1.0 / z)
    random = _random_probs(rng, n, z)
    assert leep(informative, y) > leep(random, y) + 0.5
    assert leep(informative, y) > leep(uniform, y) + 0.5
    assert leep(uniform, y) == pytest.approx(math.log(1.0 / c), abs=1e-12)


# -------------------------------------------------------------------- NCE
@pytest.mark.parametrize(("n", "z", "c", "seed"), [(30, 5, 3, 0), (80, 7, 4, 1), (40, 1, 2, 2)])
def test_nce_matches_loop(n: int, z: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    zs = rng.integers(0, z, size=n)
    y = np.arange(n) % c
    assert nce(zs, y) == pytest.approx(_nce_loop(zs, y), rel=1e-6, abs=1e-10)


def test_nce_hand_computed() -> None:
    z = np.array([0, 0, 1, 1])
    y = np.array([0, 1, 1, 1])
    # P(y,z): (0,0)=1/4, (1,0)=1/4, (1,1)=1/2; P(y|z) = 1/2, 1/2, 1 -> -H = -log(2)/2
    assert nce(z, y) == pytest.approx(-0.5 * math.log(2.0), abs=1e-12)


def test_nce_label_function_beats_random() -> None:
    rng = np.random.default_rng(12)
    n, c = 120, 4
    y = np.arange(n) % c
    assert nce((3 * y + 2) % 7, y) == pytest.approx(0.0, abs=1e-12)
    assert nce(rng.integers(0, 7, size=n), y) < -0.5
    assert nce(np.zeros(n, dtype=int), y) == pytest.approx(-math.log(c), abs=1e-12)


# ---------------------------------------------------------------- H-score
@pytest.mark.parametrize(("n", "d", "c", "seed"), [(40, 5, 3, 0), (80, 10, 4, 1)])
def test_h_score_matches_loop(n: int, d: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d)) + 2.0
    y = np.arange(n) % c
    assert h_score(f, y) == pytest.approx(_h_score_loop(f, y), rel=1e-6, abs=1e-10)


@pytest.mark.parametrize(("n", "d"), [(50, 8), (12, 30)])  # more and fewer rows than columns
def test_h_score_shrinkage_matches_manual_ledoit_wolf(n: int, d: int) -> None:
    rng = np.random.default_rng(4)
    c = 3
    f = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 1.0
    y = np.arange(n) % c
    fc = f - f.mean(axis=0)
    a = LedoitWolf().fit(f).shrinkage_
    emp = sum(np.outer(row, row) for row in fc) / n
    shrunk = (1 - a) * emp + a * np.trace(emp) / d * np.eye(d)
    means = {k: fc[y == k].mean(axis=0) for k in range(c)}
    cov_g = sum(np.outer(means[k], means[k]) for k in y) / (n - 1)  # numpy.cov, as TLlib
    expected = float(np.trace(np.linalg.inv(shrunk) @ ((1 - a) * cov_g)))
    assert 0.0 < a < 1.0
    assert h_score(f, y, shrinkage=True) == pytest.approx(expected, rel=1e-6)


def test_h_score_shrinkage_matches_paper_formula_with_numpy_cov() -> None:
    """tr(cov_a(f)^+ (1 - a) cov(E[f|y])) with sklearn's LedoitWolf and numpy.cov, N < D."""
    rng = np.random.default_rng(8)
    n, d, c = 20, 32, 4
    f = rng.normal(size=(n, d)) + rng.normal(size=(c, d))[np.arange(n) % c]
    y = np.arange(n) % c
    fc = f - f.mean(axis=0)
    lw = LedoitWolf(assume_centered=False).fit(fc)
    g = np.stack([fc[y == k].mean(axis=0) for k in y])
    expected = float(np.trace(np.linalg.pinv(lw.covariance_, rcond=1e-15)
                              @ ((1 - lw.shrinkage_) * np.cov(g, rowvar=False))))
    assert h_score(f, y, shrinkage=True) == pytest.approx(expected, rel=1e-9)


def test_h_score_separable_beats_noise() -> None:
    rng = np.random.default_rng(13)
    n, d, c = 200, 16, 4
    y = np.arange(n) % c
    good = 3.0 * rng.normal(size=(c, d))[y] + 0.01 * rng.normal(size=(n, d))
    noise = rng.normal(size=(n, d))
    assert h_score(good, y) > h_score(noise, y) + 1.0
    assert h_score(good, y, shrinkage=True) > h_score(noise, y, shrinkage=True) + 1.0


# ------------------------------------------------------------- score_all
def test_score_all_matches_individual_scores() -> None:
    rng = np.random.default_rng(5)
    n = 60
    f = rng.normal(size=(n, 6))
    probs = _random_probs(rng, n, 5)
    y = np.arange(n) % 3
    out = score_all(f, probs, y)
    assert set(out) == {"logme", "leep", "nce", "hscore"} == set(SCORES)
    assert out["logme"] == logme(f, y)
    assert out["leep"] == leep(probs, y)
    assert out["nce"] == nce(probs.argmax(1), y)
    assert out["hscore"] == h_score(f, y, shrinkage=True)


def test_score_all_without_source_head_gives_nan() -> None:
    rng = np.random.default_rng(6)
    f = rng.normal(size=(30, 4))
    y = np.arange(30) % 2
    out = score_all(f, None, y)
    assert math.isnan(out["leep"]) and math.isnan(out["nce"])
    assert math.isfinite(out["logme"]) and math.isfinite(out["hscore"])


# -------------------------------------------------------- rank_agreement
def test_rank_agreement_matches_scipy() -> None:
    s = [0.3, -1.2, 2.5, 0.9, 1.1, 0.0]
    a = [0.61, 0.52, 0.80, 0.70, 0.66, 0.58]
    out = rank_agreement(s, a)
    assert out["kendall_tau"] == pytest.approx(sps.kendalltau(s, a)[0], abs=1e-12)
    assert out["weighted_tau"] == pytest.approx(sps.weightedtau(s, a)[0], abs=1e-12)
    assert out["pearson_r"] == pytest.approx(sps.pearsonr(s, a)[0], abs=1e-12)


def test_rank_agreement_perfect_and_reversed() -> None:
    s = [1.0, 2.0, 3.0, 4.0, 5.0]
    acc = [0.5, 0.6, 0.7, 0.8, 0.9]
    assert rank_agreement(s, acc) == pytest.approx(
        {"kendall_tau": 1.0, "weighted_tau": 1.0, "pearson_r": 1.0}
    )
    assert rank_agreement(s, acc[::-1]) == pytest.approx(
        {"kendall_tau": -1.0, "weighted_tau": -1.0, "pearson_r": -1.0}
    )


def test_rank_agreement_drops_non_finite_pairs() -> None:
    out = rank_agreement([1.0, float("nan"), 2.0, 3.0], [0.1, 0.9, 0.3, 0.2])
    assert out["kendall_tau"] == pytest.approx(sps.kendalltau([1, 2, 3], [0.1, 0.3, 0.2])[0])


@pytest.mark.parametrize(
    ("s", "a"),
    [
        ([], []),
        ([1.0], [0.5]),
        ([1.0, float("nan")], [0.5, 0.6]),
        ([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]),
        ([1.0, 2.0, 3.0], [0.4, 0.4, 0.4]),
    ],
)
def test_rank_agreement_nan_cases_without_warnings(s: list[float], a: list[float]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = rank_agreement(s, a)
    assert set(out) == {"kendall_tau", "weighted_tau", "pearson_r"}
    assert all(math.isnan(v) for v in out.values())


# ------------------------------------------------------------- validation
def test_validation_errors_name_the_argument() -> None:
    rng = np.random.default_rng(7)
    f = rng.normal(size=(10, 3))
    y = np.arange(10) % 2
    probs = _random_probs(rng, 10, 4)
    with pytest.raises(ValueError, match="labels"):
        logme(f, y[:9])
    with pytest.raises(ValueError, match="features"):
        h_score(f[:, 0], y)
    with pytest.raises(ValueError, match="labels out of range"):
        logme(f, np.r_[y[:9], -1])
    with pytest.raises(ValueError, match="labels must be integers"):
        h_score(f, y + 0.5)
    with pytest.raises(ValueError, match="labels must contain at least 2 classes"):
        logme(f, np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match="source_probs rows must sum to 1"):
        leep(probs * 1.01, y)
    with pytest.raises(ValueError, match="source_probs must be non-negative"):
        leep(np.tile([1.5, -0.5], (10, 1)), y)
    with pytest.raises(ValueError, match="source_probs"):
        leep(probs[:8], y)
    with pytest.raises(ValueError, match="source_labels"):
        nce(np.zeros(8, dtype=int), y)
    with pytest.raises(ValueError, match="source_labels out of range"):
        nce(np.r_[np.zeros(9, dtype=int), -2], y)
    with pytest.raises(ValueError, match="source_probs"):
        score_all(f, probs[:, :1] * 0.5, y)
    with pytest.raises(ValueError, match="accuracies"):
        rank_agreement([1.0, 2.0], [0.1, 0.2, 0.3])


def test_probability_rows_within_tolerance_are_accepted() -> None:
    probs = np.array([[0.5, 0.5 + 5e-5], [0.3, 0.7], [1.0, 0.0], [0.0, 1.0]])
    assert math.isfinite(leep(probs, np.array([0, 1, 0, 1])))


# ------------------------------------------------- when a score can rank at all
@pytest.mark.parametrize("shrinkage", [False, True])
def test_one_label_per_class_makes_every_score_blind_to_the_labels(shrinkage: bool) -> None:
    """With one example per class, shuffling the labels over the examples changes no score:
    each is a function of the inputs alone. With three per class it does change them."""
    rng = np.random.default_rng(20)
    c, d = 6, 16
    for per_class, blind in ((1, True), (3, False)):
        y = np.repeat(np.arange(c), per_class)
        f = rng.normal(size=(c, d))[y] + 0.3 * rng.normal(size=(y.size, d))
        probs = _random_probs(rng, y.size, 5)
        shuffled = rng.permutation(y)
        while per_class > 1 and np.array_equal(shuffled, y):
            shuffled = rng.permutation(y)
        pairs = [(logme(f, y), logme(f, shuffled)),
                 (h_score(f, y, shrinkage), h_score(f, shuffled, shrinkage)),
                 (leep(probs, y), leep(probs, shuffled)),
                 (nce(probs.argmax(1), y), nce(probs.argmax(1), shuffled))]
        if blind:
            for a, b in pairs:
                assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
        else:  # LogME and H-score see the grouping (LEEP / NCE may tie on 5 source classes)
            assert abs(pairs[0][0] - pairs[0][1]) > 1e-3
            assert abs(pairs[1][0] - pairs[1][1]) > 1e-3


def test_plain_h_score_is_c_minus_1_for_any_features_when_n_le_d_plus_1() -> None:
    rng = np.random.default_rng(21)
    c, d = 4, 15
    for n in (8, 12, 16):  # N <= D + 1: degenerate
        y = np.arange(n) % c
        assert h_score(rng.normal(size=(n, d)), y) == pytest.approx(c - 1, rel=1e-9)
    y = np.arange(40) % c  # N > D + 1: noise scores below a separable source
    good = 3.0 * rng.normal(size=(c, d))[y] + 0.1 * rng.normal(size=(40, d))
    assert h_score(rng.normal(size=(40, d)), y) < h_score(good, y) - 0.5


def test_logme_ranks_with_fewer_examples_than_dimensions() -> None:
    """LogME stays label-dependent at N < D (2 per class, D = 64): class-structured features
    beat isotropic noise and beat the same features with shuffled labels."""
    rng = np.random.default_rng(22)
    c, d = 5, 64
    y = np.repeat(np.arange(c), 2)
    good = rng.normal(size=(c, d))[y] + 0.3 * rng.normal(size=(y.size, d))
    noise = rng.normal(size=(y.size, d))
    assert logme(good, y) > logme(noise, y)
    assert logme(good, y) > logme(good, np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4]))


@pytest.mark.parametrize(
    ("score", "n", "d", "per_class", "z", "expected"),
    [
        ("logme", 10, 128, 1, 0, False),  # one label per class
        ("logme", 20, 128, 2, 0, True),  # N < D is fine for LogME
        ("hscore", 20, 128, 2, 0, False),  # N <= D + 1
        ("hscore", 129, 128, 13, 0, False),
        ("hscore", 130, 128, 13, 0, True),
        ("leep", 20, 128, 2, 10, True),
        ("leep", 10, 128, 1, 10, False),
        ("nce", 300, 128, 30, 0, False),  # no source head
        ("nce", 300, 128, 30, 26, True),
    ],
)
def test_trusted_rule(score: str, n: int, d: int, per_class: int, z: int,
                      expected: bool) -> None:
    ok, why = trusted(score, n, d, per_class, z)
    assert ok is expected
    assert (why == "") is expected


def test_trusted_rejects_unknown_score() -> None:
    with pytest.raises(ValueError, match="unknown score"):
        trusted("transrate", 100, 10, 10, 5)
