"""Which genes and pathways drive a gene network, and which gene pairs interact in it.

:func:`interpret_model` refits the model on every fold of one repeat of the shared splits (the
same fit as ``epiflow train``: same fold seeds, same settings) and, on each fold's test samples:

- **gene importance**: Captum Integrated Gradients (or GradientSHAP) of the logit against the
  "no qualifying variant" baseline (all counts zero), |sum over classes| per gene, averaged over
  samples and normalised to sum 1 per fold; then averaged over folds, with rank stability (the
  fraction of folds that put the gene in their top k);
- **pathway importance** (pathway and dense heads): layer Integrated Gradients of each hidden
  neuron, and the reference |output weight| x mean |activation|;
- **interaction scores** for every pair of the top genes: the second finite difference of the
  logit when the two genes are set to the baseline alone and together, root-mean-square over the
  test samples, with a null of random gene pairs of the same net (p per fold; a pair's p is
  its largest over the folds, i.e. it must stand out in every fold);
- **confirmation**: for each nominated pair, a logistic burden x burden interaction test (the
  two additive burdens and the fold in the model) on the test samples of the folds, whose labels
  the nominating nets never saw, and the exact two-locus regression (y ~ x_i + x_j + x_i x_j)
  of every variant pair of the two genes on those samples.

With a planted truth (``truth.json`` of ``epiflow simulate``): precision@k of the planted
additive genes, ranks of the planted pathway modules and of the planted gene pairs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.registry import REGISTRY
from pipelines.errors import EpiflowError
from pipelines.workflows.cohort import Cohort
from pipelines.workflows.cv import ModelSpec, fold_seed


@dataclass(frozen=True)
class InterpretSettings:
    repeat: int = 0
    method: str = "ig"
    n_steps: int = 16
    top_genes: int = 30
    n_null: int = 200
    top_k: int = 20
    alpha: float = 0.05
    max_confirm: int = 20          # nominated pairs confirmed at the variant level


@dataclass
class InterpretResult:
    model: str
    type: str
    genes: pd.DataFrame            # one row per gene, by importance
    pathways: pd.DataFrame | None  # one row per hidden neuron (pathway), by importance
    pairs: pd.DataFrame            # pairs of the top genes, by interaction score
    folds: pd.DataFrame            # per fold: auc, completeness error, seconds
    completeness_rel_err: float
    seconds: float
    truth: dict = field(default_factory=dict)


def _auc(y, p) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def gene_positions(genes, variant_table: pd.DataFrame | None) -> pd.DataFrame:
    """chrom and position (median position of its variants) of each gene; NA where unknown."""
    out = pd.DataFrame({"gene": list(genes)})
    if variant_table is None or variant_table.empty or "gene" not in variant_table:
        return out.assign(chrom=pd.NA, pos=np.nan)
    vt = variant_table[["chrom", "pos", "gene"]].copy()
    vt["gene"] = vt["gene"].astype(str).str.split(";")
    vt = vt.explode("gene")
    agg = vt.groupby("gene", sort=False).agg(chrom=("chrom", "first"), pos=("pos", "median"))
    return out.join(agg, on="gene")


def _neuron_names(spec: ModelSpec, cohort: Cohort, net_params: dict, n_neurons: int) -> list[str]:
    """Pathway names of the hidden neurons where the head is wired by gene sets."""
    from models.genes import DEFAULT_PARAMS
    from models.genes.nets import build_topology

    mt = REGISTRY[spec.type]
    p = {**DEFAULT_PARAMS, **net_params}
    if mt.sparse and p.get("sparsity_source", "pathways") == "pathways" and cohort.gene_pathways is not None:
        topo, _ = build_topology(spec.type, cohort.n_genes, cohort.gene_pathways, p)
        if topo is not None and topo.n_dst == n_neurons:
            return [cohort.pathway_names[i] if i >= 0 else "(genes in no gene set)" for i in topo.neuron_ids]
    kind = "unit" if not mt.sparse else "neuron"
    return [f"{kind} {i}" for i in range(n_neurons)]


def _stack_mean(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    a = np.vstack(rows)
    return a.mean(axis=0), (a.std(axis=0, ddof=1) if len(rows) > 1 else np.zeros(a.shape[1]))


def interpret_model(spec: ModelSpec, cohort: Cohort, splits, *, settings: InterpretSettings, train_cfg: dict,
                    variant_table: pd.DataFrame | None = None, truth: dict | None = None,
                    progress: bool = False, log=print) -> InterpretResult:
    import torch

    from models.estimators import _split_train

    mt = REGISTRY[spec.type]
    if not mt.gene_net or mt.members:
        raise EpiflowError(f"interpret: model '{spec.name}' ({spec.type}) is not a single gene network; "
                           "attributions need one of the gene-net heads (logreg, linear, biosparse, "
                           "multipathway, genegene_pathway, dense)")
    if not 0 <= settings.repeat < splits.repeats:
        raise EpiflowError(f"interpret: repeat {settings.repeat} but the splits hold {splits.repeats} repeats")
    if cohort.n_genes < 2:
        raise EpiflowError("interpret: the cohort has fewer than 2 genes")
    t_all = time.perf_counter()
    train = dict(train_cfg)
    base_seed = int(train.pop("seed", 0))
    cfg = cohort.fit_config(spec.config)
    net_params, _ = _split_train(cfg, train)
    C, G = cohort.n_classes, cohort.n_genes
    threads = int(train.get("num_threads") or 0)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)     # small batched products: 1 thread beats 2 on a shared machine
    try:
        return _interpret(spec, cohort, settings, train, base_seed, cfg, net_params, C, G, splits,
                          variant_table, truth, progress, t_all)
    finally:
        torch.set_num_threads(before)


def _interpret(spec, cohort, settings, train, base_seed, cfg, net_params, C, G, splits, variant_table, truth,
               progress, t_all) -> InterpretResult:
    from models.estimators import fit_gene_net_model
    from models import interpret as I

    mt = REGISTRY[spec.type]
    folds = [(r, k, tr, te) for r, k, tr, te in splits.iter_folds() if r == settings.repeat]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=2 * len(folds), desc=f"interpret {spec.name}", unit=" step")
    fitted, gene_rows, signed_rows, path_rows, wa_rows, fold_rows, top_sets = [], [], [], [], [], [], []
    for r, k, tr, te in folds:
        t0 = time.perf_counter()
        d = cohort.fold_data(tr, te, ("counts",))
        proba, info = fit_gene_net_model(mt, cfg, d, train, fold_seed(base_seed, r, k))
        net, stats = info["model"], info["standardiser"]
        X_te = d["counts_test"]
        ga, steps = _attributions(I, net, stats, X_te, C, settings, fold_seed(base_seed, r, k))
        tot = ga.gene_abs.sum()
        imp = ga.gene_abs / tot if tot > 0 else ga.gene_abs
        gene_rows.append(imp)
        signed_rows.append(ga.gene_signed / tot if tot > 0 else ga.gene_signed)
        top_sets.append(set(np.argsort(-imp, kind="stable")[: settings.top_k].tolist()))
        pw = I.pathway_importance(net, stats, X_te, C, n_steps=settings.n_steps)
        wa = I.weight_activation_importance(net, stats, X_te, C)
        if pw is not None:
            path_rows.append(pw / pw.sum() if pw.sum() > 0 else pw)
            wa_rows.append(wa / wa.sum() if wa is not None and wa.sum() > 0 else wa)
        fitted.append((r, k, te, net, stats, X_te))
        fold_rows.append({"repeat": r, "fold": k, "auc": _auc(cohort.y[te], proba), "n_test": int(te.size),
                          "completeness_rel_err": float(ga.completeness_rel_err), "n_steps": steps,
                          "seconds_fit_attr": time.perf_counter() - t0})
        if bar is not None:
            bar.update(1)

    # genes: fold-averaged normalised importance, rank stability
    imp, imp_sd = _stack_mean(gene_rows)
    signed, _ = _stack_mean(signed_rows)
    stability = np.array([sum(g in s for s in top_sets) for g in range(G)]) / len(top_sets)
    order = np.argsort(-imp, kind="stable")
    genes = gene_positions(cohort.genes, variant_table)
    genes = genes.assign(importance=imp, importance_sd=imp_sd, signed=signed,
                         top_k_fraction=stability).iloc[order].reset_index(drop=True)
    genes.insert(1, "rank", np.arange(1, G + 1))

    pathways = None
    if path_rows:
        pimp, psd = _stack_mean(path_rows)
        names = _neuron_names(spec, cohort, net_params, pimp.size)
        wa_mean = _stack_mean(wa_rows)[0] if all(w is not None for w in wa_rows) else np.full(pimp.size, np.nan)
        pathways = pd.DataFrame({"pathway": names, "importance": pimp, "importance_sd": psd,
                                 "weight_x_activation": wa_mean})
        pathways = pathways.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
        pathways.insert(1, "rank", np.arange(1, len(pathways) + 1))

    # pairs of the top genes, scored in every fold's net on that fold's test samples
    top = order[: min(settings.top_genes, G)].tolist()
    per_fold = []
    for r, k, te, net, stats, X_te in fitted:
        df = I.interaction_scores(net, stats, X_te, C, top, n_null=settings.n_null,
                                  seed=fold_seed(base_seed, r, k))
        per_fold.append(df.assign(fold=k))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    allp = pd.concat(per_fold, ignore_index=True)
    allp[["a", "b"]] = np.sort(allp[["gene_a", "gene_b"]].to_numpy(), axis=1)
    pairs = (allp.groupby(["a", "b"], sort=False)
             .agg(score=("score", "mean"), score_sd=("score", "std"), p=("p", "max"), folds=("fold", "size"))
             .reset_index())
    pairs = pairs.sort_values(["score", "a", "b"], ascending=[False, True, True], kind="stable").reset_index(drop=True)
    pairs.insert(0, "rank", np.arange(1, len(pairs) + 1))
    pairs.insert(1, "gene_a", [cohort.genes[a] for a in pairs["a"]])
    pairs.insert(2, "gene_b", [cohort.genes[b] for b in pairs["b"]])
    pairs["nominated"] = pairs["p"] < settings.alpha
    pairs = _confirm(pairs, cohort, fitted, variant_table, settings)
    pairs = pairs.drop(columns=["a", "b"])

    res = InterpretResult(model=spec.name, type=spec.type, genes=genes, pathways=pathways, pairs=pairs,
                          folds=pd.DataFrame(fold_rows),
                          completeness_rel_err=float(np.nanmax([f["completeness_rel_err"] for f in fold_rows])
                                                     if settings.method == "ig" else np.nan),
                          seconds=time.perf_counter() - t_all)
    if truth:
        res.truth = I.truth_metrics(list(genes["gene"]), list(zip(pairs["gene_a"], pairs["gene_b"])),
                                    [] if pathways is None else list(pathways["pathway"]), truth,
                                    k=settings.top_k)
    return res


COMPLETENESS_TOL = 0.01     # IG's sum of attributions within 1 % of f(x) - f(baseline)


def _attributions(I, net, stats, X_te, C, settings: InterpretSettings, seed: int):
    """Gene attributions; for IG, the integration is refined (4x the steps, at most twice) until
    the completeness check passes: the logit of a dense net bends sharply near the all-zero
    baseline (rare-variant columns standardise to large values), where 16 steps are too few."""
    steps = settings.n_steps
    ga = I.gene_attributions(net, stats, X_te, C, method=settings.method, n_steps=steps, seed=seed)
    for _ in range(2):
        if settings.method != "ig" or not ga.completeness_rel_err > COMPLETENESS_TOL:
            break
        steps *= 4
        ga = I.gene_attributions(net, stats, X_te, C, method=settings.method, n_steps=steps, seed=seed)
    return ga, steps


def _heldout(fitted, cohort: Cohort):
    """The test samples of the interpreted folds (each label unseen by its fold's net) and their fold."""
    idx = np.concatenate([te for _, _, te, *_ in fitted])
    fold = np.concatenate([np.full(te.size, k) for _, k, te, *_ in fitted])
    return idx, fold


def _confirm(pairs: pd.DataFrame, cohort: Cohort, fitted, variant_table, settings: InterpretSettings) -> pd.DataFrame:
    from models import interpret as I

    idx, fold = _heldout(fitted, cohort)
    y = cohort.y[idx]
    C = cohort.n_classes
    X = cohort.counts[idx]
    dummies = (fold[:, None] == np.unique(fold)[None, 1:]).astype(float)
    var_cols = None
    if variant_table is not None and not variant_table.empty and cohort.variants.shape[1] == len(variant_table):
        genes_of = variant_table["gene"].astype(str).str.split(";")
        var_cols = {}
        for j, gs in enumerate(genes_of):
            for g in gs:
                var_cols.setdefault(g, []).append(j)
    snp_cols = ("snp_a", "snp_b", "snp_beta", "snp_p", "n_snp_pairs", "snp_p_bonferroni")
    cols = {c: [] for c in ("burden_beta", "burden_p", "n_heldout", *snp_cols)}
    for i, row in enumerate(pairs.itertuples()):
        if i >= settings.max_confirm:
            for c in cols:
                cols[c].append(np.nan if c not in ("snp_a", "snp_b") else "")
            continue
        a, b = I.gene_burden(X, C, row.a), I.gene_burden(X, C, row.b)
        t = I.burden_interaction_test(a, b, y, covariates=dummies if dummies.shape[1] else None)
        cols["burden_beta"].append(t["beta_int"])
        cols["burden_p"].append(t["p"])
        cols["n_heldout"].append(t["n"])
        best = _best_variant_pair(cohort, idx, y, var_cols, row.gene_a, row.gene_b, variant_table)
        for c in snp_cols:
            cols[c].append(best[c])
    return pairs.assign(**cols)


def _best_variant_pair(cohort: Cohort, idx, y, var_cols, ga: str, gb: str, vt) -> dict:
    """The exact two-locus regression y ~ 1 + x_i + x_j + x_i x_j (OLS, t test of the product)
    over every variant pair of the two genes on the held-out samples: the strongest pair."""
    from scipy import stats as sps

    none = {"snp_a": "", "snp_b": "", "snp_beta": np.nan, "snp_p": np.nan, "n_snp_pairs": 0,
            "snp_p_bonferroni": np.nan}
    if var_cols is None or ga not in var_cols or gb not in var_cols:
        return none
    ja, jb = var_cols[ga], var_cols[gb]
    V = cohort.variants[idx][:, sorted(set(ja) | set(jb))].toarray().astype(np.float64)
    pos = {j: i for i, j in enumerate(sorted(set(ja) | set(jb)))}
    yv = y.astype(np.float64)
    n = yv.size
    best = dict(none)
    n_pairs = 0
    for i in ja:
        xi = V[:, pos[i]]
        for j in jb:
            if i == j:
                continue
            xj = V[:, pos[j]]
            D = np.column_stack([np.ones(n), xi, xj, xi * xj])
            if np.linalg.matrix_rank(D) < 4 or np.ptp(yv) == 0:
                continue
            n_pairs += 1
            beta, *_ = np.linalg.lstsq(D, yv, rcond=None)
            resid = yv - D @ beta
            s2 = resid @ resid / (n - 4)
            cov = s2 * np.linalg.inv(D.T @ D)
            se = np.sqrt(cov[3, 3])
            if not np.isfinite(se) or se <= 0:
                continue
            p = float(2 * sps.t.sf(abs(beta[3] / se), n - 4))
            if not np.isfinite(best["snp_p"]) or p < best["snp_p"]:
                def vid(c):
                    r = vt.iloc[c]
                    return str(r["id"]) if str(r["id"]) not in (".", "", "nan") else f"{r['chrom']}:{r['pos']}:{r['ref']}>{r['alt']}"
                best = {"snp_a": vid(i), "snp_b": vid(j), "snp_beta": float(beta[3]), "snp_p": p}
    best["n_snp_pairs"] = n_pairs
    # the best of n_pairs tests: Bonferroni over the pairs tested
    best["snp_p_bonferroni"] = min(1.0, best["snp_p"] * n_pairs) if np.isfinite(best["snp_p"]) else np.nan
    return best
