"""`epiflow interpret --model NAME`: which genes and pathways drive a gene network, and which
gene pairs interact in it (:mod:`pipelines.workflows.interpret`).

Writes (atomically) DIR/genes.tsv, pathways.tsv (pathway and dense heads), pairs.tsv,
folds.tsv, summary.md and the figures gene_importance.png, pathways.png, interactions.png; the
metrics JSON (precision and ranks against a planted truth when one is given); and logs the folder
to an MLflow run ``NAME-interpret`` under the model's latest train run.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipelines.argtypes import count
from pipelines.atomic import atomic_dir, precheck_output_dir, write_metrics
from pipelines.errors import EpiflowError, InputError
from pipelines.params import load_params, section

WHAT = "interpret"


def add_arguments(p):
    p.add_argument("--model", required=True, help="a gene-net model name under `models:` in params.yaml")
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--encoded", default="work/encoded", help="output of `epiflow encode` (default: work/encoded)")
    p.add_argument("--splits", default="work/splits.npz", help="output of `epiflow splits` (default: work/splits.npz)")
    p.add_argument("--gmt", default=None, help="gene sets (default: encode.gmt in params.yaml)")
    p.add_argument("--truth", default=None,
                   help="planted truth (truth.json of `epiflow simulate`) to score against (default: interpret.truth)")
    p.add_argument("--out", default=None, help="output folder (default: work/interpret/MODEL)")
    p.add_argument("--metrics", default=None, help="metrics JSON (default: metrics/interpret/MODEL.json)")
    p.add_argument("--repeat", type=count(0), default=None, help="the repeat of the splits whose folds are used "
                                                                 "(default: interpret.repeat)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _planted(truth: dict | None):
    from models.interpret import planted

    return planted(truth) if truth else (set(), set(), set())


def run(args) -> int:
    from pipelines import zoo
    from pipelines.io.encoded import load_encoded
    from pipelines.workflows.cohort import Cohort, load_splits
    from pipelines.workflows.cv import ModelSpec
    from pipelines.workflows.interpret import InterpretSettings, interpret_model
    from models.registry import REGISTRY

    params = load_params(args.params)
    mtype, cfg = zoo.resolve(args.model, section(params, "models", args.params), args.params)
    icfg = dict(section(params, "interpret", args.params))
    train_cfg = dict(section(params, "train", args.params))
    gmt = args.gmt or section(params, "encode").get("gmt")
    needs_gmt = REGISTRY[mtype].needs_pathways and gmt
    truth_path = args.truth or icfg.get("truth")
    truth = None
    if truth_path:
        tp = Path(truth_path)
        if not tp.is_file():
            raise InputError(tp, "truth file not found (give --truth, or empty interpret.truth for a real cohort)")
        try:
            truth = json.loads(tp.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(tp, f"not JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(truth, dict):
            raise InputError(tp, "expected a JSON object as `epiflow simulate` writes it")
    out = Path(args.out or f"work/interpret/{args.model}")
    metrics_path = Path(args.metrics or f"metrics/interpret/{args.model}.json")
    inputs = [args.encoded, args.splits] + ([gmt] if needs_gmt else []) + ([truth_path] if truth_path else [])
    precheck_output_dir(out, inputs)
    cohort = Cohort.load(args.encoded, gmt if needs_gmt else None)
    splits = load_splits(args.splits, cohort)
    settings = InterpretSettings(repeat=args.repeat if args.repeat is not None else int(icfg.get("repeat", 0)),
                                 method=icfg.get("method", "ig"), n_steps=int(icfg.get("n_steps", 16)),
                                 top_genes=int(icfg.get("top_genes", 30)), n_null=int(icfg.get("n_null", 200)),
                                 top_k=int(icfg.get("top_k", 20)), alpha=float(icfg.get("alpha", 0.05)))
    variant_table = load_encoded(args.encoded).variant_table
    res = interpret_model(ModelSpec(args.model, mtype, cfg), cohort, splits, settings=settings,
                          train_cfg=train_cfg, variant_table=variant_table, truth=truth,
                          progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    planted_genes, planted_pairs, planted_paths = _planted(truth)
    figures = _write(out, res, settings, planted_genes, planted_pairs, planted_paths, truth is not None)
    metrics = _metrics(res, settings)
    write_metrics(metrics_path, metrics)
    run_id = ""
    if not args.no_mlflow:
        run_id = _log_mlflow(params.get("study", "epiflow"), args.model, out, metrics, inputs, args.params)
    print(_summary_text(res, settings, planted_genes, planted_pairs, truth is not None))
    print(f"-> {out}/ ({', '.join(figures)}), {metrics_path}" + (f"; MLflow run {run_id}" if run_id else ""))
    return 0


def _metrics(res, settings) -> dict:
    top = res.genes.head(settings.top_k)
    nominated = res.pairs[res.pairs["nominated"]]
    m = {"model": res.model, "type": res.type, "method": settings.method, "repeat": settings.repeat,
         "n_folds": int(len(res.folds)), "auc_mean": float(res.folds["auc"].mean()),
         "completeness_rel_err_max": res.completeness_rel_err, "seconds": res.seconds,
         "top_genes": list(top["gene"]), "n_pairs_scored": int(len(res.pairs)),
         "n_pairs_nominated": int(len(nominated)),
         "top_pairs": [f"{a}x{b}" for a, b in zip(res.pairs["gene_a"].head(5), res.pairs["gene_b"].head(5))]}
    if res.pathways is not None:
        m["top_pathways"] = list(res.pathways["pathway"].head(5))
    if res.truth:
        m["truth"] = res.truth
    return m


def _write(out: Path, res, settings, planted_genes, planted_pairs, planted_paths, has_truth) -> list[str]:
    from pipelines.plots import interpret as P

    label = f"{res.model} ({res.type})"
    with atomic_dir(out) as tmp:
        genes = res.genes.assign(planted=res.genes["gene"].isin(planted_genes)) if has_truth else res.genes
        genes.to_csv(tmp / "genes.tsv", sep="\t", index=False, float_format="%.6g")
        pairs = res.pairs
        if has_truth:
            pairs = pairs.assign(planted=[frozenset((a, b)) in planted_pairs
                                          for a, b in zip(pairs["gene_a"], pairs["gene_b"])])
        pairs.to_csv(tmp / "pairs.tsv", sep="\t", index=False, float_format="%.6g")
        res.folds.drop(columns=["seconds_fit_attr"]).to_csv(tmp / "folds.tsv", sep="\t", index=False,
                                                            float_format="%.6g")
        figures = ["gene_importance.png"]
        P.gene_importance(res.genes, tmp / "gene_importance.png", planted=planted_genes,
                          title=f"{label}: gene importance ({settings.method.upper()}, mean of "
                                f"{len(res.folds)} folds' test samples)")
        if res.pathways is not None:
            p = res.pathways.assign(planted=res.pathways["pathway"].isin(planted_paths)) if has_truth else res.pathways
            p.to_csv(tmp / "pathways.tsv", sep="\t", index=False, float_format="%.6g")
            P.top_pathways(res.pathways, tmp / "pathways.png", planted=planted_paths,
                           title=f"{label}: most important hidden neurons")
            figures.append("pathways.png")
        if len(res.pairs):
            P.interaction_heatmap(res.pairs, list(res.genes["gene"]), tmp / "interactions.png",
                                  planted_pairs=planted_pairs, alpha=settings.alpha,
                                  title=f"{label}: interactions among the top {settings.top_genes} genes")
            figures.append("interactions.png")
        (tmp / "summary.md").write_text(_summary_text(res, settings, planted_genes, planted_pairs, has_truth,
                                                      markdown=True))
    return figures


def _summary_text(res, settings, planted_genes, planted_pairs, has_truth, markdown=False) -> str:
    star = lambda g: "*" if g in planted_genes else ""  # noqa: E731
    # summary.md is a cached output: no wall time in it, so equal inputs give equal bytes
    lines = [f"{'## ' if markdown else ''}interpret {res.model} ({res.type}): {len(res.folds)} folds of repeat "
             f"{settings.repeat}, AUC {res.folds['auc'].mean():.3f}" + ("" if markdown else f", {res.seconds:.0f} s")]
    if settings.method == "ig":
        lines.append(f"IG completeness: max relative error {res.completeness_rel_err:.2e}")
    lines.append("top genes: " + ", ".join(f"{g}{star(g)}" for g in res.genes["gene"].head(10)))
    if res.pathways is not None:
        lines.append("top hidden neurons: " + "; ".join(res.pathways["pathway"].head(5)))
    pr = res.pairs.head(5)
    if len(pr):
        lines.append("top pairs (score, p max over folds, held-out burden p):")
        for r in pr.itertuples():
            tag = " [planted]" if frozenset((r.gene_a, r.gene_b)) in planted_pairs else ""
            lines.append(f"  {r.gene_a} x {r.gene_b}: {r.score:.3g}, p {r.p:.3g}, burden p {r.burden_p:.3g}{tag}")
    if has_truth and res.truth:
        t = res.truth
        lines.append(f"planted truth: precision@{settings.top_k} of additive genes "
                     f"{t.get('precision_at_k', float('nan')):.2f}" + (
                         f"; planted pair ranks {t['pair_ranks']}" if "pair_ranks" in t else ""))
    if has_truth:
        lines.append("(* planted gene)")
    sep = "\n\n" if markdown else "\n"
    return sep.join(lines) + "\n"


def _log_mlflow(study: str, model: str, out: Path, metrics: dict, inputs, params_path) -> str:
    """A run ``MODEL-interpret`` under the model's latest train run (top level if none)."""
    import mlflow

    from pipelines import tracking

    exp_id = tracking.setup(study)
    parent = mlflow.search_runs([exp_id], filter_string=f"tags.`epiflow.stage` = 'train' and "
                                                        f"tags.`epiflow.model` = '{model}'",
                                order_by=["start_time DESC"], max_results=50)
    if "tags.mlflow.parentRunId" in parent:
        parent = parent[parent["tags.mlflow.parentRunId"].isna()]
    tags = tracking.run_tags([p for p in inputs if Path(p).exists()],
                             extra={"model": model, "stage": "interpret"})
    if len(parent):
        tags["mlflow.parentRunId"] = parent["run_id"].iloc[0]
    with mlflow.start_run(run_name=f"{model}-interpret", experiment_id=exp_id, tags=tags) as run:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v})
        truth = metrics.get("truth") or {}
        mlflow.log_metrics({f"truth.{k}": float(v) for k, v in truth.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v})
        for f in sorted(out.iterdir()):
            if not f.name.startswith("."):
                mlflow.log_artifact(str(f))
        return run.info.run_id
