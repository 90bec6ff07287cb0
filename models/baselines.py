"""Additive and forest baselines (scikit-learn) on sparse matrices.

- :func:`fit_predict_sgd`: logistic regression by SGD (L1 or L2) on the sparse variant matrix.
- :func:`fit_predict_rf`: random forest on any feature matrix (variants, per-gene class sums,
  learned gene activations).
- :func:`gene_sums`: per-gene totals over the C functional classes of a (n, C*G) count matrix.
- :func:`fit_predict_rf_activations`: random forest on the gene activations of a gene network
  trained on the same training fold.

Every function returns ``(test probabilities of class 1, info)`` with info holding
``n_parameters`` and ``train_time_s``, the same contract as ``models.genes.fit_predict``.
"""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp


def _check_xy(X_train, y_train, X_test):
    y = np.asarray(y_train).ravel()
    if X_train.shape[0] != y.size:
        raise ValueError(f"X_train has {X_train.shape[0]} rows but y_train has {y.size}")
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(f"X_test has {X_test.shape[1]} columns, X_train {X_train.shape[1]}")
    if np.unique(y).size != 2:
        raise ValueError("y_train must contain both classes (0 and 1)")
    return y.astype(np.int64)


def fit_predict_sgd(X_train, y_train, X_test, *, penalty: str = "l2", alpha: float = 1e-4,
                    max_iter: int = 50, seed: int = 0, class_weight: str | dict | None = "balanced",
                    tol: float | None = 1e-4, scale: bool = True, l1_ratio: float = 0.15):
    """SGD logistic regression (loss='log_loss') on a sparse matrix.

    Columns are scaled by their maximum absolute value on the training fold (MaxAbsScaler keeps
    sparsity, unlike centring). ``class_weight='balanced'`` reweights the minority class
    (controls, in a case-majority cohort). n_parameters = coefficients + intercept.
    """
    from sklearn.linear_model import SGDClassifier
    from sklearn.preprocessing import MaxAbsScaler

    if penalty not in ("l1", "l2", "elasticnet"):
        raise ValueError(f"unknown penalty '{penalty}'; valid: l1, l2, elasticnet")
    X_train = sp.csr_matrix(X_train) if not sp.issparse(X_train) else X_train.tocsr()
    X_test = sp.csr_matrix(X_test) if not sp.issparse(X_test) else X_test.tocsr()
    y = _check_xy(X_train, y_train, X_test)
    t0 = time.perf_counter()
    if scale:
        scaler = MaxAbsScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    clf = SGDClassifier(loss="log_loss", penalty=penalty, alpha=alpha, max_iter=int(max_iter),
                        tol=tol, random_state=int(seed), class_weight=class_weight,
                        l1_ratio=l1_ratio)
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_train, y)
    proba = clf.predict_proba(X_test)[:, 1]
    info = {"n_parameters": int(clf.coef_.size + clf.intercept_.size),
            "n_nonzero": int(np.count_nonzero(clf.coef_)),
            "train_time_s": time.perf_counter() - t0, "epochs": int(clf.n_iter_)}
    return proba, info


def gene_sums(X, n_classes: int) -> sp.csr_matrix:
    """(n, C*G) counts, column c*G + g -> (n, G) per-gene totals over classes (stays sparse)."""
    X = sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()
    f = X.shape[1]
    if f % n_classes:
        raise ValueError(f"{f} columns is not a multiple of n_classes={n_classes}")
    G = f // n_classes
    coo = X.tocoo()
    return sp.csr_matrix((coo.data, (coo.row, coo.col % G)), shape=(X.shape[0], G))


def fit_predict_rf(X_train, y_train, X_test, *, n_estimators: int = 300, max_features="sqrt",
                   min_samples_leaf: int = 1, max_depth: int | None = None,
                   class_weight: str | dict | None = "balanced_subsample", seed: int = 0,
                   n_jobs: int | None = None):
    """Random forest on sparse or dense features. n_parameters = total tree nodes (a forest's
    size in the same spirit as a net's weight count)."""
    from sklearn.ensemble import RandomForestClassifier

    if sp.issparse(X_train):
        X_train, X_test = X_train.tocsr(), sp.csr_matrix(X_test)
    y = _check_xy(X_train, y_train, X_test)
    t0 = time.perf_counter()
    clf = RandomForestClassifier(n_estimators=int(n_estimators), max_features=max_features,
                                 min_samples_leaf=int(min_samples_leaf), max_depth=max_depth,
                                 class_weight=class_weight, random_state=int(seed), n_jobs=n_jobs)
    clf.fit(X_train, y)
    proba = clf.predict_proba(X_test)[:, 1]
    n_nodes = int(sum(est.tree_.node_count for est in clf.estimators_))
    info = {"n_parameters": n_nodes, "train_time_s": time.perf_counter() - t0}
    return proba, info


def fit_predict_rf_activations(X_train, y_train, X_test, *, n_classes: int,
                               model_type: str = "logreg", gene_pathways=None,
                               params: dict | None = None, train: dict | None = None,
                               rf: dict | None = None, seed: int = 0):
    """Random forest on learned gene activations: train a gene network on the training fold,
    read its (n, G) gene neurons for train and test rows, fit a forest on those.
    n_parameters = the net's trainable parameters + the forest's nodes."""
    from models.genes import activations_for, fit_predict

    t0 = time.perf_counter()
    train = {**(train or {}), "seed": (train or {}).get("seed", seed)}
    _, info = fit_predict(model_type, X_train, y_train, X_test, n_classes=n_classes,
                          gene_pathways=gene_pathways, params=params, train=train,
                          return_model=True)
    A_train = activations_for(info, X_train, n_classes)
    A_test = activations_for(info, X_test, n_classes)
    proba, rf_info = fit_predict_rf(A_train, y_train, A_test, seed=seed, **(rf or {}))
    return proba, {"n_parameters": info["n_parameters"] + rf_info["n_parameters"],
                   "train_time_s": time.perf_counter() - t0, "net": model_type}
