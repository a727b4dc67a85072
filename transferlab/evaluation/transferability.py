"""Transferability scores: how well a source model should transfer, before any target training.

LogME (You et al., ICML 2021), LEEP (Nguyen et al., ICML 2020), NCE (Tran et al., ICCV 2019)
and H-score (Bao et al., ICIP 2019; Ledoit-Wolf variant of Ibrahim et al., 2022), plus the
rank agreement between a score and measured target accuracies. Pure functions on arrays.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _sps
from sklearn.covariance import ledoit_wolf_shrinkage

__all__ = ["SCORES", "h_score", "leep", "logme", "nce", "rank_agreement", "score_all",
           "trusted"]

_NAN = float("nan")
_PROB_ATOL = 1e-4  # tolerance on source_probs row sums
_LOGME_MAX_ITER = 11  # as in thuml/LogME
_LOGME_TOL = 1e-3  # relative change of alpha / beta that stops the fixed point
_LOGME_EPS = 1e-5  # added to the denominators of the alpha / beta updates (thuml/LogME)


def _check_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"{name} must be two-dimensional (N, D), got shape {f.shape}")
    if f.shape[0] < 2 or f.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 rows and 1 column, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} contains non-finite values")
    return f


def _check_int_vector(values: np.ndarray, name: str, n: int, other: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"shape mismatch: {name} has {arr.shape[0]} entries, {other} has {n}")
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.int64)
    else:
        try:
            as_float = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be integers, got dtype {arr.dtype}") from None
        if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
            raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
        arr = as_float.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} out of range: must be in [0, C), got minimum {arr.min()}")
    return arr


def _check_labels(labels: np.ndarray, n: int, other: str) -> np.ndarray:
    y = _check_int_vector(labels, "labels", n, other)
    n_classes = np.unique(y).size
    if n_classes < 2:
        raise ValueError(f"labels must contain at least 2 classes, got {n_classes}")
    return y


def _check_probs(source_probs: np.ndarray) -> np.ndarray:
    p = np.asarray(source_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        raise ValueError(f"source_probs must be two-dimensional (N, Z), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("source_probs contains non-finite values")
    if np.any(p < 0.0):
        raise ValueError("source_probs must be non-negative")
    sums = p.sum(axis=1)
    worst = float(np.max(np.abs(sums - 1.0)))
    if worst > _PROB_ATOL:
        raise ValueError(
            f"source_probs rows must sum to 1 within {_PROB_ATOL:g}, worst deviation {worst:.3g}"
        )
    return p


def _logme_evidence(sigma: np.ndarray, x2: np.ndarray, res_x2: np.ndarray, n: int,
                    d: int) -> np.ndarray:
    """Maximised log evidence / N of every target column at once.

    sigma: (k,) squared singular values of F; x2: (k, C) squared projections (U^T y)**2;
    res_x2: (C,) the part of y @ y outside the column space of F. Each column runs its own
    fixed point and stops at its own step, exactly as the one-column loop of thuml/LogME.
    """
    n_cols = x2.shape[1]
    alpha, beta = np.ones(n_cols), np.ones(n_cols)
    m2, res2 = np.zeros(n_cols), np.zeros(n_cols)
    active = np.ones(n_cols, dtype=bool)
    s = sigma[:, None]
    for _ in range(_LOGME_MAX_ITER):
        t = alpha / beta
        w = s + t
        new_m2 = np.sum(s * x2 / w**2, axis=0)
        new_res2 = np.sum(x2 * (t / w) ** 2, axis=0) + res_x2
        gamma = np.sum(s / w, axis=0)
        new_alpha = gamma / (new_m2 + _LOGME_EPS)
        new_beta = (n - gamma) / (new_res2 + _LOGME_EPS)
        alpha = np.where(active, new_alpha, alpha)
        beta = np.where(active, new_beta, beta)
        m2 = np.where(active, new_m2, m2)
        res2 = np.where(active, new_res2, res2)
        active &= np.abs(new_alpha / new_beta - t) / t > _LOGME_TOL
        if not active.any():
            break
    # log|A| for A = alpha I + beta F^T F: D - k directions have eigenvalue alpha.
    log_det = np.sum(np.log(alpha + beta * s), axis=0) + (d - sigma.size) * np.log(alpha)
    evidence = (
        0.5 * d * np.log(alpha)
        + 0.5 * n * np.log(beta)
        - 0.5 * log_det
        - 0.5 * beta * res2
        - 0.5 * alpha * m2
        - 0.5 * n * math.log(2.0 * math.pi)
    )
    return evidence / n


def _spectrum(f: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sigma, U^T targets): the nonzero squared singular values of F = U s V^T and the targets
    projected on its left singular vectors, from the eigenproblem of the smaller Gram matrix
    (F F^T or F^T F; thuml/LogME takes F^T F when N > D), much cheaper than the SVD of F."""
    n, d = f.shape
    if n <= d:
        sigma, u = np.linalg.eigh(f @ f.T)
    else:
        sigma, v = np.linalg.eigh(f.T @ f)
    # eigh of a Gram matrix is exact to about sigma_max * size * eps: below that is rounding
    keep = sigma > sigma.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    sigma = sigma[keep]
    if n <= d:
        return sigma, u[:, keep].T @ targets
    return sigma, (v[:, keep].T @ (f.T @ targets)) / np.sqrt(sigma)[:, None]


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME: mean per-class maximum log evidence of Bayesian linear regression, divided by N.

    You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
    ICML 2021. Each class is a one-vs-rest 0/1 target; alpha and beta are maximised by the
    fixed-point iteration on the spectrum of F (as in thuml/LogME; at most 11 steps, stop at a
    1e-3 relative change of alpha / beta). log|A| counts the D - rank directions of eigenvalue
    alpha (the N < D fix of thuml/LogME issue #23). Classes absent from ``labels`` are skipped.

    Args:
        features: (N, D) target features from the source model.
        labels: (N,) integer target labels in [0, C), at least 2 classes.

    Returns:
        The LogME score (higher is better).
    """
    f = _check_features(features)
    n, d = f.shape
    y = _check_labels(labels, n, "features")
    if not np.any(f):
        raise ValueError("features must not be all zero")
    classes = np.unique(y)
    targets = (y[:, None] == classes[None, :]).astype(np.float64)  # (N, C) one-vs-rest
    sigma, proj = _spectrum(f, targets)  # (k,), (k, C)
    x2 = proj**2
    res_x2 = np.maximum(targets.sum(axis=0) - x2.sum(axis=0), 0.0)  # 0/1 targets: y @ y = sum
    return float(np.mean(_logme_evidence(sigma, x2, res_x2, n, d)))


def logme_regression(features: np.ndarray, targets: np.ndarray) -> float:
    """LogME of numeric targets: the mean over target columns of the maximum log evidence / N
    of Bayesian linear regression of the column on the features (You et al. 2021, as
    thuml/LogME's ``regression=True``: the targets as given, no one-vs-rest coding).

    Args:
        features: (N, D) target features from the source model.
        targets: (N,) or (N, K) finite numeric targets.

    Returns:
        The LogME score (higher is better). Shifting or scaling the targets changes every
        source's score by the same amount, so the ranking of sources does not depend on units.
    """
    f = _check_features(features)
    n, d = f.shape
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2 or len(y) != n:
        raise ValueError(f"targets must be (N,) or (N, K) with N = {n} rows of features, got "
                         f"{np.shape(targets)}")
    if not np.isfinite(y).all():
        raise ValueError("targets must be finite")
    if not np.any(f):
        raise ValueError("features must not be all zero")
    sigma, proj = _spectrum(f, y)
    x2 = proj**2
    res_x2 = np.maximum((y**2).sum(axis=0) - x2.sum(axis=0), 0.0)
    return float(np.mean(_logme_evidence(sigma, x2, res_x2, n, d)))


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: log expected empirical prediction of the source head on target data.

    Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
    Representations", ICML 2020. P(y, z) = (1/N) sum_i theta_i(z) [y_i = y],
    P(y | z) = P(y, z) / P(z), score = (1/N) sum_i log sum_z P(y_i | z) theta_i(z).

    Args:
        source_probs: (N, Z) source-model softmax outputs on the target inputs.
        labels: (N,) integer target labels in [0, C), at least 2 classes.

    Returns:
        The LEEP score (<= 0, higher is better).
    """
    theta = _check_probs(source_probs)
    n = theta.shape[0]
    y = _check_labels(labels, n, "source_probs")
    onehot = np.zeros((n, int(y.max()) + 1))
    onehot[np.arange(n), y] = 1.0
    joint = onehot.T @ theta / n  # (C, Z)
    marginal = joint.sum(axis=0)  # P(z)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    eep = np.sum(cond[y] * theta, axis=1)
    return float(np.mean(np.log(eep)))


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """NCE: negative conditional entropy -H(Y | Z) of target labels given source labels.

    Tran et al., "Transferability and Hardness of Supervised Classification Tasks",
    ICCV 2019. The joint of (Y, Z) is the empirical distribution over the N examples.

    Args:
        source_labels: (N,) integer source-model hard predictions (argmax) on target inputs.
        labels: (N,) integer target labels in [0, C), at least 2 classes.

    Returns:
        The NCE score (<= 0, higher is better; 0 when Y is a function of Z).
    """
    z_arr = np.asarray(source_labels)
    if z_arr.ndim != 1 or z_arr.size == 0:
        raise ValueError(f"source_labels must be a non-empty 1-D array, got shape {z_arr.shape}")
    n = z_arr.shape[0]
    y = _check_labels(labels, n, "source_labels")
    z = _check_int_vector(z_arr, "source_labels", n, "labels")
    joint = np.zeros((int(y.max()) + 1, int(z.max()) + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= n
    marginal = joint.sum(axis=0, keepdims=True)  # P(z)
    mask = joint > 0
    cond = joint[mask] / np.broadcast_to(marginal, joint.shape)[mask]
    return float(np.sum(joint[mask] * np.log(cond)))


def h_score(features: np.ndarray, labels: np.ndarray, shrinkage: bool = False) -> float:
    """H-score: tr(cov(f)^+ cov(E[f | y])) on centered features.

    Bao et al., "An Information-Theoretic Approach to Transferability in Task Transfer
    Learning", ICIP 2019 (pseudo-inverse with rcond 1e-15 as in TLlib). With ``shrinkage``,
    cov(f) is the Ledoit-Wolf estimate with coefficient a and the score is
    tr(cov_a(f)^+ (1 - a) cov(E[f | y])) (Ibrahim et al., "Newer is not always better", 2022),
    as TLlib's ``regularized_h_score``: the Ledoit-Wolf covariance has the 1/N normalisation,
    cov(E[f | y]) the sample covariance's 1/(N - 1) (numpy.cov).

    Args:
        features: (N, D) target features from the source model.
        labels: (N,) integer target labels in [0, C), at least 2 classes.
        shrinkage: Use the Ledoit-Wolf shrunk feature covariance.

    Returns:
        The H-score (higher is better).
    """
    f = _check_features(features)
    n, d = f.shape
    y = _check_labels(labels, n, "features")
    fc = f - f.mean(axis=0, keepdims=True)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    # On the spectrum of fc = U s V^T the trace needs only the diagonal of V^T cov(E[f|y]) V,
    # and E[f | c] = fc^T w_c (w_c: the class indicator / n_c) gives V^T E[f | c] = s U^T w_c.
    weights = (inverse[:, None] == np.arange(classes.size)[None, :]) / counts[None, :]
    sigma, proj = _spectrum(fc, weights)  # sigma = s**2 (k,), proj = U^T w (k, C)
    if sigma.size == 0:
        return 0.0  # constant features carry no information about the labels
    keep = sigma > sigma.max() * 1e-15  # np.linalg.pinv's rcond on the covariance, as TLlib
    sigma, proj = sigma[keep], proj[keep]
    between = sigma * (proj**2 @ counts)  # diag of V^T (sum_c n_c E[f|c] E[f|c]^T) V
    if not shrinkage:
        # cov(f) = V diag(sigma / (n-1)) V^T and cov(E[f|y]) has the same 1 / (n-1)
        return float(np.sum(between / sigma))
    # Ledoit-Wolf: cov_a = (1 - a) S + a tr(S) / D I with S = fc^T fc / n; cov(E[f|y]) gets
    # (1 - a) and 1 / (n - 1); directions outside V carry no between-class variance
    a = float(ledoit_wolf_shrinkage(fc, assume_centered=True))
    mu = float(np.sum(fc**2)) / (n * d)
    return float(np.sum((1.0 - a) * between / (n - 1) / ((1.0 - a) * sigma / n + a * mu)))


SCORES: dict[str, Callable[..., float]] = {
    "logme": logme,
    "leep": leep,
    "nce": nce,
    "hscore": h_score,
}


def score_all(
    features: np.ndarray, source_probs: np.ndarray | None, labels: np.ndarray
) -> dict[str, float]:
    """All four scores for one source model on one target set.

    Args:
        features: (N, D) target features from the source model.
        source_probs: (N, Z) source softmax outputs, or None for a model without a source
            head (LEEP and NCE are then nan). NCE uses ``source_probs.argmax(1)``.
        labels: (N,) integer target labels in [0, C), at least 2 classes.

    Returns:
        {"logme", "leep", "nce", "hscore"} as floats. ``hscore`` is the shrinkage (Ledoit-Wolf)
        H-score of Ibrahim et al. (2022): with fewer examples than feature dimensions the plain
        H-score saturates at C - 1 for every source and cannot rank them.
    """
    out = {"logme": logme(features, labels), "leep": _NAN, "nce": _NAN}
    if source_probs is not None:
        probs = _check_probs(source_probs)
        out["leep"] = leep(probs, labels)
        out["nce"] = nce(probs.argmax(axis=1), labels)
    out["hscore"] = h_score(features, labels, shrinkage=True)
    return out


def score_regression(features: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The scores of one source on a regression target: LogME (:func:`logme_regression`);
    LEEP, NCE and H-score are defined for class labels only and are nan."""
    return {"logme": logme_regression(features, targets), "leep": _NAN, "nce": _NAN,
            "hscore": _NAN}


def trusted(score: str, n_examples: int, feature_dim: int, min_per_class: int,
            source_classes: int, regression: bool = False) -> tuple[bool, str]:
    """Whether a score computed on ``n_examples`` labelled examples can rank sources at all.

    Every score needs at least 2 examples in every class: with one, no two examples share a
    label, so the score cannot see whether a source maps a class's examples together. It is
    then invariant to any permutation of the labels, a function of the inputs alone, and
    rewards sources that merely spread the C inputs apart (an untrained network does).

    H-score also needs N > D + 1: with N <= D + 1 the N centered feature vectors of any source
    (rank N - 1) span the labels' class indicators, so the plain H-score is C - 1 for every
    source and the shrinkage H-score is set by the Ledoit-Wolf coefficient, not by the labels.
    LogME has no such limit: it is the marginal likelihood of a Bayesian linear model, defined
    and label-dependent at any N >= 2 per class (thuml/LogME's fixed-point code omitted D - N
    eigenvalues of A when N < D, issue #23; ours counts them, as its ``_fit_icml`` does).

    LEEP and NCE need a source head (``source_classes > 0``).

    On a regression target (``regression``) only LogME is defined; with continuous targets no
    two examples need share a value, so it needs only N >= 3 (two points fit any line).

    Args:
        score: one of :data:`SCORES`.
        n_examples: N, the labelled target examples the score was computed on.
        feature_dim: D, the dimension of the backbone features.
        min_per_class: the fewest examples of any target class among the N.
        source_classes: Z, the classes of the source head (0: no head).

    Returns:
        (trusted, reason): the reason names the failed condition, "" when trusted.
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    if regression:
        if score != "logme":
            return False, "defined for class labels; the target is a regression"
        return (True, "") if n_examples >= 3 else (False, f"N = {n_examples} < 3 targets")
    if score in ("leep", "nce") and source_classes < 1:
        return False, "no source head"
    if min_per_class < 2:
        return False, f"{min_per_class} example(s) in some class: no two share a label"
    if score == "hscore" and n_examples <= feature_dim + 1:
        return False, (f"N = {n_examples} <= D + 1 = {feature_dim + 1}: the features fit any "
                       "labelling")
    return True, ""


def rank_agreement(
    scores: Sequence[float] | np.ndarray, accuracies: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """Agreement between transferability scores and measured target accuracies.

    Kendall's tau (Kendall, 1938), weighted tau (Vigna, 2015; as in You et al., 2021) and
    Pearson's r from scipy.stats, over the pairs where both values are finite.

    Args:
        scores: One transferability score per source model.
        accuracies: The matching target accuracy (or other metric) per source model.

    Returns:
        {"kendall_tau", "weighted_tau", "pearson_r"}; all nan with fewer than 2 finite pairs
        or when either side is constant.
    """
    s = np.asarray(scores, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {s.shape}")
    if a.shape != s.shape:
        raise ValueError(f"shape mismatch: accuracies has shape {a.shape}, scores {s.shape}")
    nan_out = {"kendall_tau": _NAN, "weighted_tau": _NAN, "pearson_r": _NAN}
    keep = np.isfinite(s) & np.isfinite(a)
    s, a = s[keep], a[keep]
    if s.size < 2 or np.all(s == s[0]) or np.all(a == a[0]):
        return nan_out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _sps.ConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {
            "kendall_tau": float(_sps.kendalltau(s, a)[0]),
            "weighted_tau": float(_sps.weightedtau(s, a)[0]),
            "pearson_r": float(_sps.pearsonr(s, a)[0]),
        }
    return out
