"""The answer of a run at a glance: which models win, what the learning curve says, which SNP
pairs and genes interact (planted truth marked where a truth file exists), and where every output
is. :func:`collect` reads the stage outputs of a project folder into plain data; :func:`format_text`
prints it in at most 100 columns (the end of `epiflow demo`); :mod:`pipelines.html_report` renders
the same data as the static report ``reports/index.html``.

Everything is read from files the stages wrote; a part whose stage has not run is left out (and
named as not run), never guessed.
"""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

WIDTH = 100
ALPHA = 0.05


@dataclass
class Findings:
    """What :func:`collect` found in a project folder (paths relative to it)."""

    study: str = "epiflow"
    models: pd.DataFrame | None = None        # model, type, auc_mean, auc_sd, n_folds, p, reference, n_parameters
    reference: str | None = None              # best additive model
    learning_curve: dict | None = None        # verdict numbers (see _learning_curve)
    snp_pairs: dict | None = None             # top distinct SNP pairs of the 2D scan, planted marks
    genes: dict = field(default_factory=dict)  # interpret model -> top genes and gene pairs
    outputs: list = field(default_factory=list)  # (path, what) of the outputs present
    not_run: list = field(default_factory=list)  # (part, command that produces it)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _models(root: Path, params: dict) -> tuple[pd.DataFrame | None, str | None]:
    from pipelines import report
    from pipelines.errors import EpiflowError

    models = params.get("models") or {}
    additive = tuple((params.get("report") or {}).get("additive_types", report.ADDITIVE_TYPES))
    fingerprint = None
    if (root / "work/splits.npz").is_file():
        try:
            from pipelines.splits import load_splits

            fingerprint = load_splits(root / "work/splits.npz").fingerprint
        except EpiflowError:
            fingerprint = None
    try:
        df = report.table_from_stage_outputs(models, root / "work/train", root / "metrics/train", fingerprint)
    except EpiflowError:
        return None, None
    if df.empty:
        return None, None
    df = report.add_p_vs_best_additive(df, additive)
    df = df.sort_values(["auc_mean", "model"], ascending=[False, True]).reset_index(drop=True)
    ref = df.loc[df["reference"], "model"]
    return df, (str(ref.iloc[0]) if len(ref) else None)


def _learning_curve(root: Path) -> dict | None:
    s = _read_json(root / "work/learning_curve/summary.json")
    if not isinstance(s, dict) or not s.get("tests") or not s.get("per_model"):
        return None
    sparse = s.get("sparse_model")
    last = max(s["tests"], key=lambda t: t.get("fraction", 0))
    rows = {name: max(r, key=lambda x: x.get("fraction", 0)) for name, r in s["per_model"].items() if r}
    best = last.get("best_additive")
    return {"sparse": sparse, "best_additive": best, "n_train": last.get("n_train_mean"),
            "n_folds": last.get("n_folds"), "diff": last.get("mean_diff"), "p": last.get("p_value"),
            "auc_sparse": rows.get(sparse, {}).get("auc_mean"), "auc_additive": rows.get(best, {}).get("auc_mean"),
            "crossover": s.get("crossover_n_train")}


def _planted_pairs(truth_path: Path) -> list[tuple[str, str]]:
    t = _read_json(truth_path)
    if not isinstance(t, dict) or not isinstance(t.get("pairs"), list):
        return []
    return [(str(a), str(b)) for a, b in t["pairs"]]


def _snp_pairs(root: Path, params: dict, n: int = 5) -> dict | None:
    """The best ``n`` distinct locus pairs of the 2D scan (LD copies within the recall window of a
    better pair merged, as the recall metrics count them), planted pairs marked."""
    from models.simulate.pheno import clump_pairs, pair_hits

    d = root / "work/ngg_2d"
    if not (d / "top_pairs.tsv").is_file():
        return None
    top = pd.read_csv(d / "top_pairs.tsv", sep="\t", dtype={"snp1": str, "snp2": str})
    ngg = params.get("ngg") or {}
    window = int(ngg.get("recall_window", 5))
    pheno = Path(ngg.get("pheno", "work/ngg_pheno"))
    pheno = pheno if pheno.is_absolute() else root / pheno
    truth_file = pheno / "truth.json" if pheno.is_dir() else None
    planted = _planted_pairs(truth_file) if truth_file is not None and truth_file.is_file() else []
    summary = _read_json(d / "summary.json") or {}
    axis = None
    if (d / "snp_best.parquet").is_file():
        try:
            axis = pd.read_parquet(d / "snp_best.parquet", columns=["snp", "chrom"])
        except (OSError, ValueError):
            axis = None
    rows, n_found, first = [], None, {}
    value = "p" if "p" in top else ("score" if "score" in top else None)
    if axis is not None:
        pos = pd.Series(np.arange(len(axis)), index=axis["snp"].astype(str).to_numpy())
        known = top["snp1"].isin(pos.index) & top["snp2"].isin(pos.index)
        top = top[known].reset_index(drop=True)
        found = np.column_stack([pos.loc[top["snp1"]].to_numpy(), pos.loc[top["snp2"]].to_numpy()]) \
            if len(top) else np.zeros((0, 2), np.int64)
        chrom = axis["chrom"].astype(str).to_numpy()
        keep = clump_pairs(found, window=window, chrom=chrom) if len(found) else np.zeros(0, np.int64)
        pl = [(pos.get(a), pos.get(b)) for a, b in planted]
        pl_idx = np.array([[a, b] for a, b in pl if a is not None and b is not None], dtype=np.int64).reshape(-1, 2)
        for k in keep[:n]:
            mark = ""
            if pl_idx.size:
                exact = any({top.snp1[k], top.snp2[k]} == {a, b} for a, b in planted)
                near = pair_hits(pl_idx, found[k:k + 1], window=window, chrom=chrom)[0]
                mark = "planted" if exact else ("planted locus" if near else "no")
            rows.append({"rank": int(top["rank"][k]) if "rank" in top else int(k) + 1, "snp1": top.snp1[k],
                         "snp2": top.snp2[k], "value": float(top[value][k]) if value else float("nan"),
                         "planted": mark})
        if pl_idx.size:
            hits = [pair_hits(found[:r + 1], pl_idx, window=window, chrom=chrom) for r in range(len(found))] \
                if len(found) else []
            found_all = hits[-1] if hits else np.zeros(len(pl_idx), bool)
            n_found = int(found_all.sum())
            # the rank at which the last recovered planted pair first appears
            first = next((r + 1 for r, h in enumerate(hits) if h.sum() == n_found), None) if n_found else None
    else:
        for k in range(min(n, len(top))):
            rows.append({"rank": int(k) + 1, "snp1": top.snp1[k], "snp2": top.snp2[k],
                         "value": float(top[value][k]) if value else float("nan"), "planted": ""})
    return {"rows": rows, "value": value or "", "n_pairs": summary.get("n_pairs"), "window": window,
            "method": summary.get("method", ""), "n_planted": len(planted), "n_found": n_found,
            "found_within": first, "n_reported": int(len(top)),
            "truth": str(truth_file.relative_to(root)) if planted and truth_file is not None
            and truth_file.is_relative_to(root) else (str(truth_file) if planted else None)}


def _genes(root: Path, models_auc: dict, n_genes: int = 8, n_pairs: int = 3) -> dict:
    out = {}
    base = root / "work/interpret"
    if not base.is_dir():
        return out
    for d in sorted(p for p in base.iterdir() if (p / "genes.tsv").is_file()):
        genes = pd.read_csv(d / "genes.tsv", sep="\t")
        g = genes.sort_values("rank").head(n_genes) if "rank" in genes else genes.head(n_genes)
        is_planted = (g["planted"].astype(str).str.lower().isin(["true", "1"]).tolist() if "planted" in g
                      else [False] * len(g))
        pairs = []
        if (d / "pairs.tsv").is_file():
            pt = pd.read_csv(d / "pairs.tsv", sep="\t")
            if len(pt) and "p" in pt and (pt["p"] >= 1.0).all():
                pairs = None      # an additive model: every score is float rounding, no pair nominated
            else:
                for r in pt.head(n_pairs).itertuples():
                    pairs.append({"a": r.gene_a, "b": r.gene_b, "p": float(r.p),
                                  "burden_p": float(getattr(r, "burden_p", np.nan)),
                                  "planted": str(getattr(r, "planted", "False")).lower() in ("true", "1")})
        met = _read_json(root / "metrics/interpret" / f"{d.name}.json") or {}
        truth = met.get("truth") if isinstance(met.get("truth"), dict) else None
        out[d.name] = {"auc": met.get("auc_mean", models_auc.get(d.name)), "n_folds": met.get("n_folds"),
                       "genes": [(str(x), bool(p)) for x, p in zip(g["gene"], is_planted)], "pairs": pairs,
                       "truth": "planted" in genes and truth is not None,
                       "precision_at_k": (truth or {}).get("precision_at_k"), "k": (truth or {}).get("k")}
    return out


def _repro(target: str) -> str:
    """A command that runs the stage ``target`` from a plain shell (DVC needs the venv on PATH)."""
    return f". .venv/bin/activate && dvc repro {target}"


# (path, what), listed when the path exists
OUTPUTS = (
    ("reports/index.html", "this summary, Table 1 and every figure in one file (open in any browser)"),
    ("reports", "Table 1 (table.md, table.tsv), fold_auc.png, roc.png, report.md"),
    ("work/train", "per model: folds.tsv (fold AUCs), out-of-fold predictions; metrics/train/"),
    ("work/learning_curve", "learning-curve table, figure and fold AUCs"),
    ("work/sweep", "sparsity-sweep table and figure"),
    ("work/ngg_1d", "1D scan: top_snps.tsv, snps.parquet, manhattan.png"),
    ("work/ngg_2d", "2D scan: top_pairs.tsv, map_overview.png, manhattan.png, pair_boxplots.png"),
    ("work/heritability", "variance explained by top SNPs and pairs: heritability*.png"),
    ("work/interpret", "per model: genes.tsv, pairs.tsv, pathways.tsv and their figures"),
    ("plots", "inputs of `dvc plots show` (its HTML loads Vega from the internet)"),
    ("metrics", "the numbers DVC tracks (`dvc metrics show`)"),
    ("mlruns", "MLflow store (a run per model with its fold runs) and Optuna studies"),
)


def collect(root, params: dict, models: pd.DataFrame | None = None) -> Findings:
    """Read the outputs of the project folder ``root`` (validated params.yaml as ``params``).
    ``models``: Table 1 as `epiflow report` built it (with ``reference`` and ``p_vs_best_additive``
    columns) instead of reading the train stages' outputs again."""
    root = Path(root)
    f = Findings(study=str(params.get("study") or "epiflow"))
    if models is not None and len(models):
        f.models = models.sort_values(["auc_mean", "model"], ascending=[False, True]).reset_index(drop=True)
        ref = f.models.loc[f.models["reference"].astype(bool), "model"] if "reference" in f.models else []
        f.reference = str(ref.iloc[0]) if len(ref) else None
    else:
        f.models, f.reference = _models(root, params)
    if f.models is None:
        f.not_run.append(("model comparison", "make repro"))
    f.learning_curve = _learning_curve(root)
    if f.learning_curve is None:
        f.not_run.append(("learning curve", _repro("learning_curve")))
    f.snp_pairs = _snp_pairs(root, params)
    if f.snp_pairs is None:
        f.not_run.append(("SNP-pair scan", _repro("ngg_2d")))
    aucs = {} if f.models is None else dict(zip(f.models["model"], f.models["auc_mean"]))
    f.genes = _genes(root, aucs)
    if not f.genes:
        f.not_run.append(("which genes interact", _repro("interpret")))
    f.outputs = [(p, what) for p, what in OUTPUTS if (root / p).exists()]
    return f


# ---------------------------------------------------------------------------------------------
# text


def fmt_p(p) -> str:
    if p is None or not np.isfinite(p):
        return "-"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _cut(s: str, n: int) -> str:
    s = str(s)
    return s if len(s) <= n else s[: n - 1] + "~"


def _table(head: list[str], rows: list[list[str]], indent: int = 2) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: (" " * indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths))).rstrip()
    return [line(head)] + [line(r) for r in rows]


def _wrap(text: str, indent: int = 2, width: int = WIDTH) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=" " * indent, subsequent_indent=" " * (indent + 2),
                         break_on_hyphens=False)


def model_verdict(f: Findings) -> str:
    df, ref = f.models, f.reference
    if df is None:
        return ""
    if ref is None:
        return "No additive model in the table: no p-values against a reference."
    r = df[df["model"] == ref].iloc[0]
    better = df[(~df["reference"]) & (df["auc_mean"] > r.auc_mean) & (df["p_vs_best_additive"] < ALPHA)]
    if len(better):
        b = better.iloc[0]
        return (f"{b.model} beats the best additive model {ref} ({b.auc_mean:.3f} vs {r.auc_mean:.3f}, "
                f"p {fmt_p(b.p_vs_best_additive)}; uncorrected for the {len(df) - 1} comparisons).")
    top = df[~df["reference"]].head(1)
    tail = ""
    if len(top):
        t = top.iloc[0]
        tail = f"; closest: {t.model} {t.auc_mean:.3f} (p {fmt_p(t.p_vs_best_additive)})"
    return (f"No model is significantly better than the best additive model {ref} "
            f"(AUC {r.auc_mean:.3f}) at p < {ALPHA}{tail}.")


def learning_verdict(lc: dict) -> str:
    s, a = lc["sparse"], lc["best_additive"]
    diff, p = lc.get("diff"), lc.get("p")
    n = f"{lc['n_train']:,.0f}" if lc.get("n_train") else "the largest number of"
    if diff is None or p is None:
        return f"{s} vs the best additive model: no test at the largest training size."
    stats = f"p {fmt_p(p)}, {lc['n_folds']} folds"
    head = f"At {n} training samples {s} ({lc['auc_sparse']:.3f})"
    if diff > 0 and p < ALPHA:
        text = f"{head} beats {a} ({lc['auc_additive']:.3f}) by {diff:+.3f} AUC ({stats})."
    elif diff > 0:
        text = f"{head} leads {a} ({lc['auc_additive']:.3f}) by {diff:+.3f} AUC, not significantly ({stats})."
    elif p < ALPHA:
        text = f"{head} is worse than {a} ({lc['auc_additive']:.3f}) by {diff:+.3f} AUC ({stats})."
    else:
        text = f"{head} trails {a} ({lc['auc_additive']:.3f}) by {diff:+.3f} AUC, not significantly ({stats})."
    if lc.get("crossover") is not None:
        text += f" It overtakes the additive models at about {lc['crossover']:,.0f} training samples and stays ahead."
    else:
        text += " It does not overtake the additive models at any size tested."
    return text


def format_text(f: Findings, width: int = WIDTH) -> str:
    """The summary in at most ``width`` columns (identifiers too long for a column are cut with ~)."""
    out = ["=" * width, _cut(f"{f.study}: results at a glance", width), "=" * width]
    if f.models is not None:
        df = f.models
        folds = int(df["n_folds"].max())
        out.append(f"Do networks beat additive models? {len(df)} models, {folds} CV folds each "
                   f"(p: corrected t-test vs {f.reference or '-'})")
        rows = [[_cut(r.model + (" (ref)" if r.reference else ""), 24), _cut(str(r.type), 16),
                 f"{r.auc_mean:.3f} +- {r.auc_sd:.3f}", "ref" if r.reference else fmt_p(r.p_vs_best_additive),
                 f"{int(r.n_parameters):,}"] for r in df.itertuples()]
        out += _table(["model", "type", "AUC mean +- sd", "p vs best additive", "parameters"], rows)
        out += _wrap("-> " + model_verdict(f), width=width)
    if f.learning_curve:
        lc = f.learning_curve
        out += ["", f"Learning curve ({lc['sparse']} vs the best additive model at each size):"]
        out += _wrap("-> " + learning_verdict(lc), width=width)
    if f.snp_pairs:
        sp = f.snp_pairs
        npairs = f"{sp['n_pairs']:,} pairs" if sp.get("n_pairs") else "all pairs"
        out += ["", f"Top interacting SNP pairs ({sp['method'] or 'pair'} scan of {npairs}; "
                    f"LD copies within {sp['window']} SNPs merged):"]
        head = ["rank", "SNP 1", "SNP 2", sp["value"] or "value"] + (["planted?"] if sp["n_planted"] else [])
        rows = [[str(r["rank"]), _cut(r["snp1"], 30), _cut(r["snp2"], 30), fmt_p(r["value"]) if sp["value"] == "p"
                 else f"{r['value']:.3g}"] + ([r["planted"]] if sp["n_planted"] else []) for r in sp["rows"]]
        out += _table(head, rows)
        if sp["n_planted"]:
            within = f" within the top {sp['found_within']} pairs" if sp.get("found_within") else ""
            out += _wrap(f"-> planted pairs recovered (locus level): {sp['n_found']} of {sp['n_planted']}{within} "
                         f"of {sp['n_reported']:,} reported (truth: {sp['truth']})", width=width)
    if f.genes:
        out += ["", "Which genes the networks use and pair (epiflow interpret; * planted gene):"]
        for name, g in f.genes.items():
            auc = f", AUC {g['auc']:.3f}" if isinstance(g.get("auc"), (int, float)) else ""
            genes = ", ".join(_cut(x, 14) + ("*" if p else "") for x, p in g["genes"])
            out += _wrap(f"{name}{auc}: {genes}", width=width)
            if g["pairs"] is None:
                out += _wrap("pairs: none (an additive model cannot make genes interact)", indent=4, width=width)
            elif g["pairs"]:
                txt = "; ".join(f"{_cut(p['a'], 12)} x {_cut(p['b'], 12)}" + (" (planted)" if p["planted"] else "")
                                + f" {fmt_p(p['burden_p'])}" for p in g["pairs"])
                out += _wrap("top pairs, held-out burden p: " + txt, indent=4, width=width)
    if f.not_run:
        out += ["", "Not run yet: " + "; ".join(f"{what} (`{cmd}`)" for what, cmd in f.not_run)]
        out[-1:] = _wrap(out[-1].strip(), indent=0, width=width)
    if f.outputs:
        out += ["", "Where everything is:"]
        w = max(len(p) for p, _ in f.outputs) + 1
        for p, what in f.outputs:
            shown = p + ("/" if not Path(p).suffix else "")
            out += _wrap(f"{shown.ljust(w)} {what}", width=width)
    out.append("=" * width)
    return "\n".join(_cut(line, width) if len(line) > width else line for line in out)


def demo_summary(root, params: dict, width: int = WIDTH) -> str:
    """The text `epiflow demo` prints at its end."""
    return format_text(collect(root, params), width)
