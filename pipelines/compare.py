"""Side-by-side comparison of models scored on the same cross-validation folds.

Two ways in:

- **by model name** (:func:`load_stage_scores`, :func:`load_mlflow_model_scores`): the fold AUCs
  that `epiflow train` wrote to ``work/train/<name>/folds.tsv``, or the latest train run of each
  model in an MLflow experiment (folds from its child runs);
- **by run selection** (:func:`select_runs`): any parent runs of one or more experiments, picked
  with an MLflow filter string, ``key=value`` tags and/or run ids.

Models scored on the same folds (same (repeat, fold) set, same n_train/n_test per fold) get
paired Nadeau-Bengio corrected resampled t-tests (:func:`pairwise_tests`); models that do not
share folds can only be listed side by side (a paired test over different splits is invalid).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from models.jsonio import read_json
from pipelines import tracking
from pipelines.atomic import MARKER, atomic_path, mark_output_dir, read_metrics, write_text
from pipelines.errors import EpiflowError

FOLD_COLUMNS = ["repeat", "fold", "auc", "n_train", "n_test"]


@dataclass
class Scores:
    """One model (or one MLflow run): its fold AUCs and summary numbers."""

    label: str
    folds: pd.DataFrame | None          # FOLD_COLUMNS, one row per (repeat, fold); None if unknown
    model_type: str | None = None
    n_parameters: int | None = None
    train_time_s: float | None = None
    auc_mean: float | None = None       # from the run's metrics when no folds are available
    auc_sd: float | None = None
    run_id: str | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def has_folds(self) -> bool:
        return self.folds is not None and len(self.folds) > 0

    def summary(self) -> dict:
        if self.has_folds:
            a = self.folds["auc"].to_numpy(np.float64)
            mean, sd, n = float(a.mean()), (float(a.std(ddof=1)) if a.size > 1 else 0.0), int(a.size)
        else:
            mean, sd, n = self.auc_mean, self.auc_sd, None
        return {"model": self.label, "type": self.model_type, "n_folds": n, "auc_mean": mean,
                "auc_sd": sd, "n_parameters": self.n_parameters, "train_time_s": self.train_time_s,
                "run_id": self.run_id}


def _clean_folds(df: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in FOLD_COLUMNS if c not in df.columns]
    if missing:
        raise EpiflowError(f"{where}: missing column(s) {', '.join(missing)} (need {', '.join(FOLD_COLUMNS)})")
    out = df[FOLD_COLUMNS].copy()
    try:
        for c in ("repeat", "fold", "n_train", "n_test"):
            out[c] = pd.to_numeric(out[c], errors="raise").astype(np.int64)
        out["auc"] = pd.to_numeric(out["auc"], errors="raise").astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise EpiflowError(f"{where}: non-numeric fold values ({exc})") from None
    if not np.isfinite(out["auc"]).all():
        raise EpiflowError(f"{where}: fold AUCs must be finite")
    if out.duplicated(["repeat", "fold"]).any():
        r, k = out.loc[out.duplicated(["repeat", "fold"]), ["repeat", "fold"]].iloc[0]
        raise EpiflowError(f"{where}: repeat {r} fold {k} appears more than once")
    return out.sort_values(["repeat", "fold"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# by model name: stage outputs


def known_stage_models(train_dir="work/train") -> list[str]:
    d = Path(train_dir)  # hidden folders are outputs still being written
    return sorted(p.parent.name for p in d.glob("*/folds.tsv") if not p.parent.name.startswith(".")) if d.is_dir() else []


def load_stage_scores(name: str, train_dir="work/train", metrics_dir="metrics/train") -> Scores:
    """Fold AUCs of ``epiflow train --model name`` (folds.tsv), with parameters and time from
    its metrics JSON and the model type from run.json where present."""
    path = Path(train_dir) / name / "folds.tsv"
    if not path.is_file():
        known = known_stage_models(train_dir)
        raise EpiflowError(f"unknown model '{name}': no {path}; known models: "
                           f"{', '.join(known) if known else f'none (run `epiflow train` first)'}")
    try:
        df = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EpiflowError(f"{path}: not a fold table ({str(exc).splitlines()[0]})") from None
    s = Scores(label=name, folds=_clean_folds(df, str(path)), source=str(path))
    run = Path(train_dir) / name / "run.json"
    if run.is_file():
        info = read_json(run, "run.json of `epiflow train`")
        s.model_type = info.get("type") if isinstance(info, dict) else None
    met = Path(metrics_dir) / f"{name}.json"
    if met.is_file():
        m = read_metrics(met)     # the train time and run id are in metrics/timings/train/
        if not isinstance(m, dict):
            raise EpiflowError(f"{met}: not the metrics of `epiflow train` (a JSON object); rerun it")
        s.n_parameters = int(m["n_parameters"]) if m.get("n_parameters") is not None else None
        s.train_time_s = float(m["train_time_s"]) if m.get("train_time_s") is not None else None
        s.run_id = m.get("mlflow_run_id") or None
    return s


# ---------------------------------------------------------------------------------------------
# MLflow


def connect(start: Path | None = None) -> None:
    """Point MLflow at the project store (or MLFLOW_TRACKING_URI) without creating anything: a
    project without a store is a one-line error."""
    tracking.connect_existing("compare: reading MLflow runs", start)


def experiment_ids(names: list[str]) -> list[str]:
    import mlflow

    ids = []
    for name in names:
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            known = sorted(e.name for e in mlflow.search_experiments())
            raise EpiflowError(f"no MLflow experiment '{name}' in {mlflow.get_tracking_uri()}; known: "
                               f"{', '.join(known) if known else 'none'}")
        ids.append(exp.experiment_id)
    return ids


def _runs(exp_ids: list[str], filter_string: str = "") -> pd.DataFrame:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        df = mlflow.search_runs(experiment_ids=exp_ids, filter_string=filter_string,
                                order_by=["attributes.start_time DESC"])
    except MlflowException as exc:
        msg = " ".join(str(exc.message if hasattr(exc, "message") else exc).split())
        raise EpiflowError(f"bad MLflow filter {filter_string!r}: {msg}") from None
    if "tags.mlflow.parentRunId" not in df.columns:
        df["tags.mlflow.parentRunId"] = None
    return df


def _col(row: pd.Series, name: str):
    v = row.get(name)
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return v


def _tag(row: pd.Series, key: str):
    """A tag by its short name: ``key`` or the project's ``epiflow.key``."""
    v = _col(row, f"tags.{key}")
    return v if v is not None else _col(row, f"tags.epiflow.{key}")


def run_label(row: pd.Series) -> str:
    """The run's ``model`` tag; for a nested run (an Optuna trial) or an untagged one, its name."""
    name = _col(row, "tags.mlflow.runName")
    if _col(row, "tags.mlflow.parentRunId") is not None and name:
        return str(name)
    return str(_tag(row, "model") or name or str(row["run_id"])[:8])


# metrics taken as a run's AUC when it has no fold children, in order of preference; Optuna trial
# runs of a zoo model carry the inner-CV mean as ``inner_auc``
AUC_METRICS = ("auc_mean", "inner_auc")


def _folds_from_children(children: pd.DataFrame, where: str) -> pd.DataFrame | None:
    need = ["params.repeat", "params.fold", "metrics.auc", "metrics.n_train", "metrics.n_test"]
    if children.empty or any(c not in children.columns for c in need):
        return None
    ch = children.dropna(subset=need)
    if ch.empty:
        return None
    # a fold logged twice (a retried child): keep the latest (runs come newest first)
    ch = ch.drop_duplicates(["params.repeat", "params.fold"], keep="first")
    df = pd.DataFrame({"repeat": ch["params.repeat"], "fold": ch["params.fold"], "auc": ch["metrics.auc"],
                       "n_train": ch["metrics.n_train"], "n_test": ch["metrics.n_test"]})
    return _clean_folds(df, where)


def _folds_from_artifact(run_id: str) -> pd.DataFrame | None:
    """The folds.tsv artifact `epiflow train` logs on its parent run (used when the child runs
    are missing)."""
    import tempfile

    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="folds.tsv", dst_path=tmp)
            df = pd.read_csv(path, sep="\t")
    except Exception:
        return None
    try:
        return _clean_folds(df, f"run {run_id} folds.tsv")
    except EpiflowError:
        return None


def scores_from_run(row: pd.Series, all_runs: pd.DataFrame, label: str | None = None) -> Scores:
    run_id = str(row["run_id"])
    children = all_runs[all_runs["tags.mlflow.parentRunId"] == run_id]
    folds = _folds_from_children(children, f"child runs of {run_id}")
    if folds is None and _col(row, "metrics.auc_mean") is not None:
        folds = _folds_from_artifact(run_id)
    auc_metric = next((m for m in AUC_METRICS if _col(row, f"metrics.{m}") is not None), None)
    n_par = _col(row, "metrics.n_parameters")
    t = _col(row, "metrics.train_time_s")
    # the data version of the splits file the run read (tag epiflow.dvc.<path to splits>)
    splits = {c[len("tags.epiflow.dvc."):]: _col(row, c) for c in row.index
              if c.startswith("tags.epiflow.dvc.") and "splits" in Path(c).name and _col(row, c) is not None}
    return Scores(label=label or run_label(row), folds=folds, model_type=_tag(row, "model_type"),
                  n_parameters=int(n_par) if n_par is not None else None,
                  train_time_s=float(t) if t is not None else None,
                  auc_mean=_col(row, f"metrics.{auc_metric}") if auc_metric else None,
                  auc_sd=_col(row, "metrics.auc_sd") if auc_metric == "auc_mean" else None,
                  run_id=run_id, source=f"run {run_id}",
                  extra={"experiment_id": row.get("experiment_id"), "run_name": _col(row, "tags.mlflow.runName"),
                         "auc_metric": auc_metric,
                         "splits_version": splits})


def load_mlflow_model_scores(names: list[str], experiment: str) -> list[Scores]:
    """The latest top-level train run of each named model in ``experiment``, folds from its
    child runs."""
    exp_ids = experiment_ids([experiment])
    runs = _runs(exp_ids)
    if runs.empty:
        raise EpiflowError(f"MLflow experiment '{experiment}' has no runs")
    top = runs[runs["tags.mlflow.parentRunId"].isna()]
    if "tags.epiflow.stage" in top.columns:
        top = top[top["tags.epiflow.stage"] == "train"]
    model_col = "tags.epiflow.model"
    known = sorted(top[model_col].dropna().unique()) if model_col in top.columns else []
    out = []
    for name in names:
        hits = top[top[model_col] == name] if model_col in top.columns else top.iloc[:0]
        if hits.empty:
            raise EpiflowError(f"unknown model '{name}' in MLflow experiment '{experiment}'; known models: "
                               f"{', '.join(known) if known else 'none'}")
        done = hits[hits["status"] == "FINISHED"]  # a run still training has only some of its folds
        if done.empty:
            raise EpiflowError(f"no finished MLflow train run of '{name}' yet (latest {hits.iloc[0]['run_id'][:8]} "
                               f"is {str(hits.iloc[0]['status']).lower()})")
        hits = done
        s = scores_from_run(hits.iloc[0], runs, label=name)
        if not s.has_folds:
            raise EpiflowError(f"latest MLflow run {s.run_id} of '{name}' has no fold AUCs "
                               f"(no child runs with repeat, fold, auc, n_train, n_test)")
        out.append(s)
    return out


_TAG_REF = re.compile(r"\btags\.([A-Za-z_][A-Za-z0-9_]*)\b(?![.`\w])")


def expand_filter(filter_string: str, tag_keys: set[str]) -> str:
    """Let ``tags.model_type`` stand for the project's ``tags.`epiflow.model_type```: a bare tag
    name that no run carries but ``epiflow.<name>`` does is rewritten (quoted text untouched)."""
    parts = re.split(r"('(?:[^']|'')*'|\"(?:[^\"])*\")", filter_string)
    for i in range(0, len(parts), 2):  # even parts are outside string literals
        parts[i] = _TAG_REF.sub(
            lambda m: (f"tags.`epiflow.{m.group(1)}`" if m.group(1) not in tag_keys
                       and f"epiflow.{m.group(1)}" in tag_keys else m.group(0)), parts[i])
    return "".join(parts)


def parse_tags(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise EpiflowError(f"--tag expects key=value, got {p!r}")
        out[key.strip()] = value.strip()
    return out


def select_runs(experiments: list[str] | None = None, filter_string: str = "", tags: dict | None = None,
                run_ids: list[str] | None = None, *, nested: bool = False,
                all_runs: bool = False) -> tuple[list[Scores], list[str]]:
    """Pick MLflow runs and load their scores. Returns (scores, notes).

    Runs come from ``experiments`` (or, with only ``run_ids``, the runs' own experiments), narrowed
    by ``filter_string`` (MLflow search syntax), ``tags`` (key=value; a short key also matches
    ``epiflow.<key>``) and ``run_ids``. Without explicit run ids, only top-level runs (``nested``
    adds child runs other than single folds) that carry an AUC (fold children or ``auc_mean``)
    are kept, and only the latest run per label (``all_runs`` keeps every one).
    """
    notes: list[str] = []
    run_ids = list(run_ids or [])
    exp_ids = experiment_ids(experiments) if experiments else _experiments_of_runs(run_ids)
    where = ", ".join(experiments or exp_ids)
    everything = _runs(exp_ids)
    if everything.empty:
        raise EpiflowError(f"no runs in experiment(s) {where}")
    tag_keys = {c[len("tags."):] for c in everything.columns if c.startswith("tags.")}
    if filter_string:
        expanded = expand_filter(filter_string, tag_keys)
        chosen = _runs(exp_ids, expanded)
        if expanded != filter_string:
            notes.append(f"filter: {expanded}")
    else:
        chosen = everything
    chosen = _with_tags(chosen, tags or {})
    chosen = (_pick_ids(chosen, everything, run_ids, where) if run_ids
              else _top_level(chosen, nested, notes))
    scores = [scores_from_run(row, everything) for _, row in chosen.iterrows()]
    if not run_ids:
        scores = _with_auc_latest(scores, all_runs, notes)
    inner = [s.label for s in scores if not s.has_folds and s.extra.get("auc_metric") == "inner_auc"]
    if inner:
        notes.append(f"AUC of {', '.join(inner[:3])}{' ...' if len(inner) > 3 else ''} is the inner-CV mean "
                     f"of an Optuna trial (inner_auc), not comparable with outer-CV fold AUCs")
    # labels must be unique to name comparisons
    counts = pd.Series([s.label for s in scores]).value_counts()
    for s in scores:
        if counts.get(s.label, 0) > 1:
            s.label = f"{s.label}@{s.run_id[:8]}"
    return scores, notes


def _experiments_of_runs(run_ids: list[str]) -> list[str]:
    """The experiments holding the given runs (ids or prefixes of at least 6 characters)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    exp_ids, every = [], None
    for rid in run_ids:
        try:
            eid = mlflow.get_run(rid).info.experiment_id
        except MlflowException:  # an id prefix: look it up across experiments
            if every is None:
                every = mlflow.search_runs(search_all_experiments=True)
            hit = every[every["run_id"].astype(str).str.startswith(rid)] if len(rid) >= 6 and len(every) else []
            if len(hit) != 1:
                raise EpiflowError(f"{'no' if len(hit) == 0 else 'more than one'} MLflow run '{rid}' "
                                   f"in {mlflow.get_tracking_uri()}") from None
            eid = str(hit.iloc[0]["experiment_id"])
        if eid not in exp_ids:
            exp_ids.append(eid)
    if not exp_ids:
        raise EpiflowError("name an experiment (--experiment) or runs (--runs) to compare")
    return exp_ids


def _with_tags(chosen: pd.DataFrame, tags: dict) -> pd.DataFrame:
    """Runs carrying every key=value (a short key also matches ``epiflow.<key>``)."""
    for key, value in tags.items():
        cols = [c for c in (f"tags.{key}", f"tags.epiflow.{key}") if c in chosen.columns]
        mask = np.zeros(len(chosen), bool)
        for c in cols:
            mask |= (chosen[c].astype("string") == value).fillna(False).to_numpy(bool)
        chosen = chosen[mask]
    return chosen


def _pick_ids(chosen: pd.DataFrame, everything: pd.DataFrame, run_ids: list[str], where: str) -> pd.DataFrame:
    ids = chosen["run_id"].astype(str)
    picked = []
    for rid in run_ids:
        hit = chosen[(ids == rid) | ids.str.startswith(rid)] if len(rid) >= 6 else chosen[ids == rid]
        if hit.empty:
            why = "does not match the filter/tags" if rid in set(everything["run_id"]) else "not found"
            raise EpiflowError(f"run '{rid}' {why} in experiment(s) {where}")
        picked.append(hit.iloc[0])
    return pd.DataFrame(picked)


def _top_level(chosen: pd.DataFrame, nested: bool, notes: list) -> pd.DataFrame:
    """Top-level runs (``nested``: child runs too), never single folds, none still running."""
    is_child = chosen["tags.mlflow.parentRunId"].notna()
    is_fold = chosen["params.fold"].notna() if "params.fold" in chosen.columns else np.zeros(len(chosen), bool)
    chosen = chosen[~is_fold & (~is_child if not nested else True)]
    running = chosen["status"] == "RUNNING"
    if running.any():
        notes.append(f"left out {int(running.sum())} run(s) still running")
        chosen = chosen[~running]
    return chosen


def _with_auc_latest(scores: list, all_runs: bool, notes: list) -> list:
    """Runs with an AUC; the latest per label unless ``all_runs``."""
    kept = [s for s in scores if s.has_folds or s.auc_mean is not None]
    if len(kept) < len(scores):
        notes.append(f"skipped {len(scores) - len(kept)} run(s) with no AUC (e.g. report or compare runs)")
    if all_runs:
        return kept
    seen, latest = set(), []
    for s in kept:  # newest first
        if s.label not in seen:
            seen.add(s.label)
            latest.append(s)
    if len(latest) < len(kept):
        notes.append(f"kept the latest run of each label ({len(kept) - len(latest)} older run(s) "
                     f"left out; --all-runs keeps them)")
    return latest


# ---------------------------------------------------------------------------------------------
# alignment and tests


def fold_mismatch(a: Scores, b: Scores) -> str | None:
    """Why ``a`` and ``b`` cannot be paired fold by fold (None if they can)."""
    if not a.has_folds or not b.has_folds:
        which = a.label if not a.has_folds else b.label
        return f"{which} has no fold AUCs"
    ka = set(zip(a.folds["repeat"], a.folds["fold"]))
    kb = set(zip(b.folds["repeat"], b.folds["fold"]))
    if ka != kb:
        only_a, only_b = sorted(ka - kb), sorted(kb - ka)
        show = lambda s: ", ".join(f"r{r}f{k}" for r, k in s[:3]) + (" ..." if len(s) > 3 else "")
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} fold(s) only in {a.label} ({show(only_a)})")
        if only_b:
            parts.append(f"{len(only_b)} fold(s) only in {b.label} ({show(only_b)})")
        return f"{a.label} ({len(ka)} folds) and {b.label} ({len(kb)} folds) differ: " + "; ".join(parts)
    va, vb = a.extra.get("splits_version") or {}, b.extra.get("splits_version") or {}
    for path in sorted(set(va) & set(vb)):
        if va[path] != vb[path]:
            return (f"{a.label} and {b.label} read different versions of {path} "
                    f"({str(va[path])[:8]} vs {str(vb[path])[:8]})")
    m = a.folds.merge(b.folds, on=["repeat", "fold"], suffixes=("_a", "_b"))
    bad = m[(m["n_train_a"] != m["n_train_b"]) | (m["n_test_a"] != m["n_test_b"])]
    if len(bad):
        r = bad.iloc[0]
        return (f"{a.label} and {b.label} were not scored on the same splits: repeat {r['repeat']} fold "
                f"{r['fold']} has n_train/n_test {r['n_train_a']}/{r['n_test_a']} vs {r['n_train_b']}/{r['n_test_b']}"
                f" ({len(bad)} fold(s) differ)")
    return None


def check_shared_folds(scores: list[Scores]) -> str | None:
    """None if every model shares the first one's folds, else the first reason they do not."""
    for s in scores[1:]:
        why = fold_mismatch(scores[0], s)
        if why:
            return why
    if scores and not scores[0].has_folds:
        return f"{scores[0].label} has no fold AUCs"
    return None


def paired(a: Scores, b: Scores) -> pd.DataFrame:
    """Fold-aligned AUCs: repeat, fold, auc_a, auc_b, diff (= a - b), n_train, n_test."""
    m = a.folds.merge(b.folds, on=["repeat", "fold"], suffixes=("_a", "_b"), validate="one_to_one")
    return pd.DataFrame({"repeat": m["repeat"], "fold": m["fold"], "auc_a": m["auc_a"], "auc_b": m["auc_b"],
                         "diff": m["auc_a"] - m["auc_b"], "n_train": m["n_train_a"], "n_test": m["n_test_a"]})


def pairwise_tests(scores: list[Scores], reference: str | None = None) -> pd.DataFrame:
    """Corrected resampled t-test of the reference against every other model (all must share
    folds). Row per comparison: reference, other, difference (reference - other), t, df,
    p (corrected), p_uncorrected, n_folds, test/train ratio, 95 % corrected CI of the difference."""
    from scipy import stats as sps

    from models.stats import corrected_resampled_ttest

    ref = pick_reference(scores, reference)
    rows = []
    for s in scores:
        if s is ref:
            continue
        why = fold_mismatch(ref, s)
        if why:
            raise EpiflowError(f"cannot pair folds: {why}")
        p = paired(ref, s)
        n_train, n_test = float(p["n_train"].mean()), float(p["n_test"].mean())
        try:
            res = corrected_resampled_ttest(p["auc_a"], p["auc_b"], n_train=n_train, n_test=n_test)
        except ValueError as exc:  # fewer than 2 folds, empty folds
            raise EpiflowError(f"cannot test {ref.label} against {s.label}: {exc}") from None
        half = (float(sps.t.ppf(0.975, res.df)) * res.sd_diff * np.sqrt(1.0 / res.n_folds + res.test_train_ratio)
                if res.n_folds > 1 else np.nan)
        rows.append({"reference": ref.label, "other": s.label, "comparison": f"{ref.label} - {s.label}",
                     "mean_diff": res.mean_diff, "sd_diff": res.sd_diff, "t": res.t, "df": res.df,
                     "p_corrected": res.p_value, "p_uncorrected": res.p_value_naive, "n_folds": res.n_folds,
                     "n_train": n_train, "n_test": n_test, "test_train_ratio": res.test_train_ratio,
                     "ci_low": res.mean_diff - half, "ci_high": res.mean_diff + half})
    return pd.DataFrame(rows)


def pick_reference(scores: list[Scores], reference: str | None) -> Scores:
    if reference is None:
        return scores[0]
    for s in scores:
        if s.label == reference or (s.run_id and len(reference) >= 6 and s.run_id.startswith(reference)):
            return s
    raise EpiflowError(f"--reference '{reference}' is not among the compared models: "
                       f"{', '.join(s.label for s in scores)}")


# ---------------------------------------------------------------------------------------------
# presentation


def summary_table(scores: list[Scores]) -> pd.DataFrame:
    return pd.DataFrame([s.summary() for s in scores])


def _fmt(v, spec: str, empty: str = "-") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return empty
    return format(v, spec)


def _p(v: float) -> str:
    return f"{v:.2e}" if v < 1e-3 else f"{v:.3f}"


def _text_table(head: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    cell = lambda c, i: c.rjust(widths[i]) if i in right else c.ljust(widths[i])
    line = lambda cells: "  ".join(cell(c, i) for i, c in enumerate(cells)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _table_rows(table: pd.DataFrame, with_run: bool) -> tuple[list[str], list[list[str]]]:
    head = ["model", "type", "folds", "AUC mean +- sd", "parameters", "time (s)"] + (["run"] if with_run else [])
    rows = []
    for r in table.itertuples():
        auc = (f"{r.auc_mean:.3f} +- {r.auc_sd:.3f}" if r.auc_mean is not None and not pd.isna(r.auc_mean)
               else "-")
        if r.auc_mean is not None and not pd.isna(r.auc_mean) and (r.auc_sd is None or pd.isna(r.auc_sd)):
            auc = f"{r.auc_mean:.3f}"
        rows.append([str(r.model), str(r.type or "-"), _fmt(r.n_folds, "d"), auc, _fmt(r.n_parameters, ",d"),
                     _fmt(r.train_time_s, ".0f")] + ([str(r.run_id or "-")[:8]] if with_run else []))
    return head, rows


def _test_rows(tests: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    head = ["difference", "mean diff", "95% CI (corrected)", "t", "df", "p corrected", "p uncorrected"]
    rows = [[r.comparison, f"{r.mean_diff:+.4f}", f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]", f"{r.t:.2f}",
             str(r.df), _p(r.p_corrected), _p(r.p_uncorrected)] for r in tests.itertuples()]
    return head, rows


def format_report(table: pd.DataFrame, tests: pd.DataFrame | None, notes: list[str], with_run: bool = False) -> str:
    head, rows = _table_rows(table, with_run)
    out = [_text_table(head, rows, right={2, 4, 5})]
    if tests is not None and len(tests):
        r0 = tests.iloc[0]
        out += ["", f"Nadeau-Bengio corrected resampled t-test over {int(r0.n_folds)} shared folds "
                    f"(n_test/n_train = {r0.test_train_ratio:.3f}); the uncorrected paired t-test is shown "
                    f"for contrast and is too liberal:", ""]
        h, rr = _test_rows(tests)
        out.append(_text_table(h, rr, right={1, 3, 4, 5, 6}))
    out += [f"note: {n}" for n in notes] if notes else []
    return "\n".join(out)


def markdown_report(table: pd.DataFrame, tests: pd.DataFrame | None, notes: list[str], with_run: bool = False) -> str:
    def md(head, rows):
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(c.replace("+-", "±") for c in r) + " |" for r in rows])

    head, rows = _table_rows(table, with_run)
    out = [md([h.replace("+-", "±") for h in head], rows)]
    if tests is not None and len(tests):
        out += ["", f"Nadeau-Bengio corrected resampled t-test over {int(tests.iloc[0].n_folds)} shared folds "
                    f"(n_test/n_train = {tests.iloc[0].test_train_ratio:.3f}); the uncorrected p is for contrast.", ""]
        out.append(md(*_test_rows(tests)))
    out += [""] + [f"*{n}*" for n in notes] if notes else []
    return "\n".join(out) + "\n"


def plot(scores: list[Scores], tests: pd.DataFrame | None, path, reference: str | None = None) -> None:
    """Per-model AUC strip plot (one dot per fold, mean +- sd) and, when tests exist, the paired
    fold differences of each comparison with the corrected 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_tests = tests is not None and len(tests) > 0
    n = len(scores)
    fig, axes = plt.subplots(1, 2 if with_tests else 1, figsize=(11 if with_tests else 6, 0.9 + 0.5 * max(n, 2)),
                             squeeze=False)
    ax = axes[0, 0]
    rng = np.random.default_rng(0)
    for i, s in enumerate(scores):
        y = n - 1 - i
        if s.has_folds:
            a = s.folds["auc"].to_numpy()
            ax.scatter(a, y + rng.uniform(-0.18, 0.18, a.size), s=14, alpha=0.6, color=f"C{i % 10}", lw=0)
            mean, sd = a.mean(), (a.std(ddof=1) if a.size > 1 else 0.0)
        else:
            mean, sd = s.auc_mean, s.auc_sd or 0.0
        if mean is not None:
            ax.errorbar(mean, y, xerr=sd, fmt="D", color="black", ms=5, capsize=4, zorder=3)
    ax.set_yticks(range(n), [s.label for s in reversed(scores)])
    ax.axvline(0.5, ls=":", c="grey", lw=1)
    ax.set_xlabel("ROC AUC per CV fold (diamond: mean +- sd)")
    ax.set_title("fold AUCs")
    if with_tests:
        ax = axes[0, 1]
        m = len(tests)
        lookup = {s.label: s for s in scores}
        for i, r in enumerate(tests.itertuples()):
            y = m - 1 - i
            d = paired(lookup[r.reference], lookup[r.other])["diff"].to_numpy()
            ax.scatter(d, y + rng.uniform(-0.18, 0.18, d.size), s=14, alpha=0.6, color="C0", lw=0)
            ax.errorbar(r.mean_diff, y, xerr=[[r.mean_diff - r.ci_low], [r.ci_high - r.mean_diff]], fmt="D",
                        color="black", ms=5, capsize=4, zorder=3)
            ax.annotate(f"p = {_p(r.p_corrected)}", (1.0, y), xycoords=("axes fraction", "data"),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_yticks(range(m), [r.comparison for r in reversed(list(tests.itertuples()))])
        ax.axvline(0, c="grey", lw=1)
        ax.set_xlabel("paired AUC difference per fold (diamond: mean, corrected 95% CI)")
        ax.set_title("paired differences, corrected t-test")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# outputs
OUTPUT_NAMES = (MARKER, "table.tsv", "table.md", "tests.tsv", "compare.png")


def write_outputs(out: Path, scores, table, tests, notes, with_run, reference) -> list[Path]:
    """table.tsv, table.md, tests.tsv (when tested) and compare.png in ``out`` (marked as an
    epiflow output); the paths."""
    mark_output_dir(out)
    files = []
    with atomic_path(out / "table.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6f")
    files.append(out / "table.tsv")
    write_text(out / "table.md", markdown_report(table, tests, notes, with_run=with_run))
    files.append(out / "table.md")
    if tests is not None:
        with atomic_path(out / "tests.tsv") as tmp:
            tests.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        files.append(out / "tests.tsv")
    with atomic_path(out / "compare.png") as tmp:
        plot(scores, tests, tmp, reference)
    files.append(out / "compare.png")
    return files


def log_comparison(scores, tests, files, experiment, *, reference=None, filter_string="", source="") -> str:
    """A `compare` MLflow run with the table and figure as artifacts and the tests as metrics."""
    import mlflow

    tracking.setup(experiment)
    inputs = [s.source for s in scores if Path(s.source).is_file()]  # folds.tsv files, not runs
    tags = tracking.run_tags(inputs, extra={"stage": "compare",
                                            "compared": ",".join(s.label for s in scores)})
    params = {"models": ",".join(s.label for s in scores), "reference": reference or scores[0].label,
              "source": source[:500]}
    if filter_string:
        params["filter"] = filter_string[:500]
    run_ids = [s.run_id for s in scores if s.run_id]
    if run_ids:
        tags["epiflow.compared_runs"] = ",".join(run_ids)[:5000]
    with mlflow.start_run(run_name="compare", tags=tags) as run:
        mlflow.log_params(params)
        for f in files:
            mlflow.log_artifact(str(f))
        if tests is not None:
            for r in tests.itertuples():
                key = f"{r.reference}_vs_{r.other}"
                key = "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)
                mlflow.log_metrics({f"p_corrected.{key}": r.p_corrected, f"mean_diff.{key}": r.mean_diff,
                                    f"p_uncorrected.{key}": r.p_uncorrected})
        return run.info.run_id
