"""The NGG hyperparameter study: what ``epiflow tune --ngg`` optimises.

NGG (models/ngg/ngg.py) has five settings: the piece size B, the sketch size d, the L1 penalty (as a
multiple ``lam_scale`` of the noise level sqrt(B / (d n))), the repetitions R and the FISTA
iterations. How well a setting recovers interacting SNP pairs depends on the cohort (n, LD, allele
frequencies), so the study scores settings on the user's own genotypes:

* ``mode: recall`` (default). Phenotypes with planted additive SNPs and interacting pairs (known
  h2, :func:`models.simulate.pheno.simulate_phenotype`) are simulated over the real genotypes,
  one per seed of ``tune_seeds``. A trial fits NGG to each and scores the planted pairs recovered at
  the locus level among its top K pairs (``score: recall@10``, logged as ``recall_at_10``; or ``mrr``, the mean reciprocal
  rank of the first hit per planted pair), averaged over the tuning phenotypes. The best setting is
  then compared with the defaults on a held-out phenotype simulated with ``holdout_seed`` (other
  planted loci, other noise), which the study never saw.
* ``mode: r2``, for a real phenotype without truth. The samples are split once (``holdout_seed``)
  into a held-out part and a tuning part; each tuning seed splits the tuning part into discovery
  and validation samples. NGG runs on the discovery samples; its top ``r2_snps`` SNPs and
  ``r2_pairs`` pairs (standardised dosages and pair products) are refitted by least squares on the
  discovery samples, and the score is the R^2 of that fit on the validation samples. The re-run
  fits on the whole tuning part and reports R^2 on the held-out samples, tuned vs defaults.

``multi_objective: true`` adds the time per repetition (seconds, minimised) as a second objective,
so the study returns a Pareto front of recovery against cost.

Every trial reports one step per tuning phenotype (or split) with the running mean score, which the
runner logs and prunes on. Pairs grow as p^2 / 2, so the study works on a panel of at most
``max_snps`` SNPs (evenly spaced over the genome among those with MAF >= ``min_maf``, or among the ids
of an ``extract`` list): 300 SNPs (44,850 pairs) keep one NGG fit at the defaults near 10 s on one
CPU core (a trial fits once per tuning phenotype; BLAS runs single-threaded per fit, ``blas_threads``).

Settings come from the ``tune_ngg:`` section of params.yaml (keys of :data:`CONFIG_DEFAULTS`).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.ngg.heritability import pair_features, pcr_curve, snp_features
from models.ngg.ngg import ngg_fit
from models.simulate.pheno import simulate_phenotype
from models.simulate.recovery import found_pairs, recall_metrics
from pipelines.errors import EpiflowError, InputError
from pipelines.io.plink import plink_paths
from pipelines.tune_api import StudySpec
from pipelines.workflows.genotypes import GenotypeSet, Phenotype, SnpFilter, SnpStats, load_dosage, read_id_list

__all__ = ["NGG_DEFAULTS", "CONFIG_DEFAULTS", "NGGStudyData", "ngg_study_spec", "resolve_config", "load_study_data",
           "suggest", "searched_defaults", "metric_name", "recall_eval", "r2_eval", "heldout_r2", "NGGObjective"]

# the estimator's own defaults (models.ngg.ngg.ngg_fit): the baseline the study has to beat
NGG_DEFAULTS = {"B": 1000, "d": 30, "lam_scale": 1.0, "R": 10, "iters": 200}

# search ranges: [low, high] (B and lam_scale on a log scale); a single number fixes the setting
SEARCH_DEFAULTS = {"B": [20, 2000], "d": [10, 60], "lam_scale": [0.25, 4.0], "R": [3, 20], "iters": [50, 300]}
_LOG = {"B": True, "d": False, "lam_scale": True, "R": False, "iters": False}
_INT = {"B", "d", "R", "iters"}

CONFIG_DEFAULTS = {
    "genotypes": None,          # SNP dosage directory or PLINK prefix; None: the pipeline's own (ngg.input, ingest.out, encode.snp_dosage)
    "extract": None,            # optional file of SNP ids (one per line, may be .gz) the panel is drawn from
    "max_snps": 300,            # panel size cap (pairs grow as p^2/2)
    "min_maf": 0.05,
    "mode": "recall",           # recall | r2
    "score": "recall@10",       # recall mode: recall@K or mrr
    "multi_objective": False,   # add seconds per repetition as a minimised second objective
    "n_snps": 5,                # planted additive SNPs per simulated phenotype
    "n_pairs": 5,               # planted interacting pairs
    "h2_add": 0.1,
    "h2_int": 0.2,
    "pair_model": "product",
    "min_gap": None,            # planted loci at least this many panel columns apart (None: min(20, p / (3 loci)), > 2 windows)
    "window": 2,                # locus window (panel columns) for a hit
    "tune_seeds": [1, 2],       # phenotype seeds (recall) or discovery/validation split seeds (r2)
    "holdout_seed": 1001,       # the held-out phenotype (recall) or sample split (r2); never a tuning seed
    "pheno": None,              # r2 mode: phenotype file (PLINK/GEMMA/TSV); None: the .fam column or samples.tsv 'y'
    "pheno_col": 1,
    "pheno_format": "auto",
    "holdout_fraction": 0.25,   # r2 mode: samples held out for the final comparison
    "validation_fraction": 0.3,  # r2 mode: share of the tuning samples scored in each split
    "r2_snps": 10,              # r2 mode: top SNPs and pairs refitted
    "r2_pairs": 20,
    "ngg_seed": 0,              # NGG's own seed (sketches, shuffles)
    "top": 1000,                # pairs NGG reports
    "device": "auto",           # auto | cpu | cuda (CuPy)
    "blas_threads": 1,          # BLAS threads per fit on the CPU (NGG's small GEMMs lose to thread start-up, and
                                # parallel trials share the cores); null: the library default
    "search": SEARCH_DEFAULTS,
}


# ---------------------------------------------------------------------------------------------
# configuration


def resolve_config(section: dict | None) -> dict:
    """The ``tune_ngg:`` section merged over :data:`CONFIG_DEFAULTS`, validated (one-line errors)."""
    section = dict(section or {})
    unknown = sorted(set(section) - set(CONFIG_DEFAULTS))
    if unknown:
        raise EpiflowError(f"tune_ngg: unknown key(s) {', '.join(unknown)} (known: {', '.join(CONFIG_DEFAULTS)})")
    cfg = {**CONFIG_DEFAULTS, **section}
    search = dict(SEARCH_DEFAULTS)
    user_search = section.get("search") or {}
    if not isinstance(user_search, dict):
        raise EpiflowError("tune_ngg.search must be a mapping of B, d, lam_scale, R, iters to [low, high] or a value")
    bad = sorted(set(user_search) - set(SEARCH_DEFAULTS))
    if bad:
        raise EpiflowError(f"tune_ngg.search: unknown setting(s) {', '.join(bad)} (known: {', '.join(SEARCH_DEFAULTS)})")
    search.update(user_search)
    for name, rng in search.items():
        vals = rng if isinstance(rng, (list, tuple)) else [rng]
        if len(vals) not in (1, 2) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            raise EpiflowError(f"tune_ngg.search.{name}: expected [low, high] or one number, got {rng!r}")
        if min(vals) <= 0 or (len(vals) == 2 and vals[0] > vals[1]):
            raise EpiflowError(f"tune_ngg.search.{name}: need 0 < low <= high, got {rng!r}")
    cfg["search"] = search
    if cfg["mode"] not in ("recall", "r2"):
        raise EpiflowError(f"tune_ngg.mode must be 'recall' or 'r2', got {cfg['mode']!r}")
    score = str(cfg["score"]).replace("_at_", "@")
    cfg["score"] = score
    if score != "mrr" and not (score.startswith("recall@") and score[7:].isdigit() and int(score[7:]) > 0):
        raise EpiflowError(f"tune_ngg.score must be recall@K (K > 0) or mrr, got {score!r}")
    seeds = cfg["tune_seeds"]
    if isinstance(seeds, int):
        seeds = [seeds]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise EpiflowError(f"tune_ngg.tune_seeds must be a non-empty list of integers, got {cfg['tune_seeds']!r}")
    if len(set(seeds)) != len(seeds):
        raise EpiflowError(f"tune_ngg.tune_seeds repeats a seed: {seeds}")
    if cfg["holdout_seed"] in seeds:
        raise EpiflowError(f"tune_ngg.holdout_seed {cfg['holdout_seed']} is also a tuning seed: the held-out "
                           "phenotype must differ from the tuning phenotypes")
    cfg["tune_seeds"] = list(seeds)
    if cfg["min_gap"] is not None and (not isinstance(cfg["min_gap"], int) or cfg["min_gap"] < 1):
        raise EpiflowError(f"tune_ngg.min_gap must be a positive integer or null, got {cfg['min_gap']!r}")
    for key in ("max_snps", "n_snps", "n_pairs", "window", "top", "r2_snps", "r2_pairs"):
        if not isinstance(cfg[key], int) or cfg[key] < (0 if key in ("window", "r2_snps", "n_snps") else 1):
            raise EpiflowError(f"tune_ngg.{key} must be a positive integer, got {cfg[key]!r}")
    if cfg["max_snps"] < 4:
        raise EpiflowError("tune_ngg.max_snps must be at least 4")
    for key in ("holdout_fraction", "validation_fraction"):
        if not 0 < float(cfg[key]) < 1:
            raise EpiflowError(f"tune_ngg.{key} must lie in (0, 1), got {cfg[key]!r}")
    return cfg


def searched_defaults(search: dict) -> dict:
    """The estimator's defaults of the settings the study searches (the runner's first, baseline trial;
    settings fixed in ``search`` keep their fixed value in every trial)."""
    return {k: NGG_DEFAULTS[k] for k, rng in search.items()
            if isinstance(rng, (list, tuple)) and len(rng) == 2 and rng[0] != rng[1]}


def suggest(trial, search: dict) -> dict:
    """One NGG configuration from the trial (fixed settings as given, defaults for the rest)."""
    out = dict(NGG_DEFAULTS)
    for name, rng in search.items():
        vals = rng if isinstance(rng, (list, tuple)) else [rng]
        if len(vals) == 1 or vals[0] == vals[1]:
            out[name] = int(vals[0]) if name in _INT else float(vals[0])
        elif name in _INT:
            out[name] = trial.suggest_int(name, int(vals[0]), int(vals[1]), log=_LOG[name])
        else:
            out[name] = trial.suggest_float(name, float(vals[0]), float(vals[1]), log=_LOG[name])
    return out


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class NGGStudyData:
    """The SNP panel the study runs on (and, in r2 mode, the real phenotype)."""

    X: np.ndarray             # (n, p) dosages of the panel (int8 with -1 missing, or float)
    snp_ids: np.ndarray       # (p,) ids
    chrom: np.ndarray         # (p,) chromosome per panel column
    source: str
    n_snps_source: int        # SNPs in the genotype source
    y: np.ndarray | None = None  # (n,) phenotype (r2 mode), NaN = missing


def _read_ids(path) -> set:
    try:
        return read_id_list(path)
    except InputError:
        raise EpiflowError(f"tune_ngg.extract: {path}: file not found") from None


def _default_genotypes(params: dict) -> str:
    """The pipeline's own SNP genotypes: the NGG stages' input (``ngg.input``), the ingest stage's
    dosage folder (``ingest.out``) or encode's SNP dosage matrix (``encode.snp_dosage``), the first
    that exists; else ``ingest.bfile``."""
    def sec(name):
        v = params.get(name)
        return v if isinstance(v, dict) else {}

    cands = [v for v in (sec("ngg").get("input"), sec("ingest").get("out"), sec("encode").get("snp_dosage"),
                         sec("ingest").get("bfile")) if v]
    for c in cands:
        if (Path(c) / "X.npy").is_file():
            return str(c)
        if not Path(c).is_dir():
            try:
                plink_paths(c)
                return str(c)
            except Exception:
                pass
    tried = ", ".join(map(str, cands)) if cands else "no ngg.input / ingest.out / encode.snp_dosage in params.yaml"
    raise EpiflowError("tune_ngg.genotypes is not set and the pipeline has no SNP genotypes yet "
                       f"({tried}); set it to a SNP dosage directory or a PLINK prefix, or build them first "
                       "(dvc repro encode)")


def _panel_columns(X, snp_ids, max_snps: int, min_maf: float, extract=None,
                   stats: SnpStats | None = None) -> np.ndarray:
    """Evenly spaced columns among SNPs with MAF >= min_maf (and in ``extract``), at most max_snps.

    ``stats``: the per-SNP counts of int8 genotypes (:meth:`GenotypeSet.snp_stats`); without them
    X is float dosages (NaN missing, as a mean-imputed dosage folder holds them)."""
    if stats is None:
        X = np.asarray(X)
        called = np.isfinite(X)
        stats = SnpStats(X.shape[0], called.sum(axis=0), np.where(called, X, 0).sum(axis=0, dtype=np.float64))
    flt = SnpFilter(maf_min=max(min_maf, 1e-12), extract=None if extract is None else frozenset(extract))
    ok = flt.apply(stats, pd.DataFrame({"snp": np.asarray(snp_ids).astype(str), "bp": np.zeros(len(snp_ids))})).keep
    eligible = np.flatnonzero(ok)
    if eligible.size < 4:
        raise EpiflowError(f"tune_ngg: only {eligible.size} SNPs pass MAF >= {min_maf}"
                           + (" and the extract list" if extract is not None else "") + "; need at least 4")
    if eligible.size > max_snps:
        eligible = eligible[np.unique(np.round(np.linspace(0, eligible.size - 1, max_snps)).astype(np.int64))]
    return eligible


def load_study_data(cfg: dict, params: dict | None = None, need_pheno: bool = False) -> NGGStudyData:
    """Read the genotypes (dosage directory or PLINK prefix) and cut the SNP panel."""
    src = cfg.get("genotypes") or _default_genotypes(params or {})
    path = Path(src)
    y = stats = None
    if path.is_dir() and (path / "X.npy").is_file() and np.load(path / "X.npy", mmap_mode="r").dtype != np.int8:
        dm = load_dosage(path)  # mean-imputed float dosages: NGG takes them as they are
        X, ids, chrom = dm.X, dm.snps["id"].astype(str).to_numpy(), dm.snps["chrom"].astype(str).to_numpy()
        samples = pd.DataFrame({"fid": list(dm.samples), "iid": list(dm.samples)})
    else:
        try:
            gs = GenotypeSet.load(path, unique_ids=False)
        except InputError as exc:
            if "neither a SNP dosage directory" not in str(exc):
                raise
            raise EpiflowError(f"tune_ngg.genotypes: {src} is neither a SNP dosage directory nor a PLINK "
                               "prefix (.bed/.bim/.fam)") from None
        X, stats = gs.dosage.T, gs.snp_stats()
        ids, chrom, samples = gs.snps["snp"].astype(str).to_numpy(), gs.snps["chrom"].to_numpy(), gs
    if need_pheno:
        y = _study_pheno(path, samples, cfg)
    extract = _read_ids(cfg["extract"]) if cfg.get("extract") else None
    cols = _panel_columns(X, ids, int(cfg["max_snps"]), float(cfg["min_maf"]), extract, stats=stats)
    Xp = np.asarray(X)[:, cols]
    return NGGStudyData(X=np.asfortranarray(Xp), snp_ids=ids[cols], chrom=chrom[cols], source=str(src),
                        n_snps_source=int(np.asarray(X).shape[1]), y=y)


def _study_pheno(path: Path, genotypes, cfg) -> np.ndarray:
    """The phenotype over all genotyped samples (NaN where missing): ``tune_ngg.pheno``, else the
    .fam phenotype of a PLINK fileset or the ``y`` column of an ingested folder's samples.tsv."""
    samples = genotypes.samples if isinstance(genotypes, GenotypeSet) else genotypes
    table_s = None
    if path.is_dir():  # an ingested folder names its samples by the .fam FID/IID in samples.tsv
        tsv = path / "samples.tsv"
        table_s = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False) if tsv.is_file() else None
        if table_s is not None and {"fid", "iid"} <= set(table_s.columns):
            genotypes = samples = table_s[["fid", "iid"]].copy()
        if not cfg.get("pheno"):
            if table_s is not None and "y" in table_s.columns:
                return pd.to_numeric(table_s["y"], errors="coerce").to_numpy(dtype=float)
            raise EpiflowError(f"tune_ngg: mode r2 needs a phenotype: set tune_ngg.pheno, or ingest {path} with --pheno")
    ph = Phenotype.load(cfg.get("pheno") or None, genotypes, cfg["pheno_col"], cfg["pheno_format"])
    y = np.full(len(samples), np.nan)
    y[ph.geno_index] = ph.y
    return y


# ---------------------------------------------------------------------------------------------
# evaluation


def fit(X, y, config: dict, *, cfg: dict):
    """NGG at one configuration; returns the NGGResult."""
    threads = cfg.get("blas_threads")
    if threads:
        from threadpoolctl import threadpool_limits

        ctx = threadpool_limits(int(threads), user_api="blas")
    else:
        ctx = nullcontext()
    with ctx:
        return ngg_fit(X, y, B=int(config["B"]), d=int(config["d"]), lam_scale=float(config["lam_scale"]),
                       R=int(config["R"]), iters=int(config["iters"]), seed=int(cfg["ngg_seed"]),
                       top=int(cfg["top"]), xp=cfg.get("device"), progress=False)


def metric_name(key: str) -> str:
    """MLflow-safe metric names: recall@10 -> recall_at_10."""
    return key.replace("@", "_at_")


def _score(metrics: dict, score: str) -> float:
    return float(metrics["mrr"] if score == "mrr" else metrics[score])


def recall_eval(data: NGGStudyData, sim, config: dict, cfg: dict) -> dict:
    """Fit NGG to one simulated phenotype; locus-level recovery of its planted pairs."""
    t0 = time.perf_counter()
    res = fit(data.X, sim.y, config, cfg=cfg)
    wall = time.perf_counter() - t0
    ks = sorted({10, 100, *([int(cfg["score"][7:])] if cfg["score"].startswith("recall@") else [])})
    m = recall_metrics(found_pairs(res.top_pairs), sim.pairs, int(cfg["window"]), ks=ks, chrom=data.chrom)
    m["score"] = _score(m, cfg["score"])
    m = {metric_name(k): v for k, v in m.items()}
    m["seconds_per_repetition"] = float(res.timings["per_repetition_s"])
    m["wall_s"] = wall
    return m


def heldout_r2(X, y, train, test, snps, pairs) -> float:
    """R^2 on ``test`` rows of a least-squares fit on ``train`` rows of y on the given SNP dosages and
    pair products (standardised over train + test genotypes; y never enters the features)."""
    rows = np.concatenate([train, test])
    Xr = np.asarray(X)[rows]
    F = np.hstack([snp_features(Xr, snps), pair_features(Xr, pairs)])
    ntr = train.size
    ytr, yte = y[train], y[test]
    sst = float(((yte - yte.mean()) ** 2).sum())
    if F.shape[1] == 0 or sst <= 0:
        return float(1.0 - ((yte - ytr.mean()) ** 2).sum() / sst) if sst > 0 else 0.0
    cur = pcr_curve(F[:ntr], ytr, test_F=F[ntr:], test_y=yte)
    return float(cur["r2_test"][-1]) if len(cur["r2_test"]) else 0.0


def r2_eval(data: NGGStudyData, train, test, config: dict, cfg: dict) -> dict:
    """Fit NGG on ``train`` samples, refit its top SNPs and pairs, R^2 on ``test`` samples."""
    t0 = time.perf_counter()
    res = fit(data.X[train], data.y[train], config, cfg=cfg)
    wall = time.perf_counter() - t0
    snps = res.top_snps["snp"][: int(cfg["r2_snps"])]
    pairs = np.column_stack([res.top_pairs["i"], res.top_pairs["j"]])[: int(cfg["r2_pairs"])]
    r2 = heldout_r2(data.X, data.y, train, test, snps, pairs)
    return {"score": r2, "r2": r2, "n_snps": int(len(snps)), "n_pairs": int(len(pairs)),
            "seconds_per_repetition": float(res.timings["per_repetition_s"]), "wall_s": wall}


def _split(rows: np.ndarray, fraction: float, seed: int):
    perm = np.random.default_rng(seed).permutation(rows)
    k = max(1, int(round(fraction * rows.size)))
    return np.sort(perm[k:]), np.sort(perm[:k])  # (kept, taken)


class NGGObjective:
    """``objective(trial, report)`` of the study, plus the held-out comparison (``rerun``)."""

    def __init__(self, data: NGGStudyData, cfg: dict):
        self.data, self.cfg = data, cfg
        self.mode = cfg["mode"]
        if self.mode == "recall":
            loci = int(cfg["n_snps"]) + 2 * int(cfg["n_pairs"])
            gap = cfg["min_gap"] or max(2 * int(cfg["window"]) + 1, min(20, data.X.shape[1] // (3 * max(loci, 1))))
            self.min_gap = int(gap)

            floor = 2 * int(cfg["window"]) + 1  # closer loci would be one locus at the scoring window

            def sim(seed):
                # the default gap shrinks (not below the floor) when the random draw cannot place every locus
                gaps = [self.min_gap] if cfg["min_gap"] else range(self.min_gap, floor - 1, -1)
                for gap in gaps:
                    try:
                        return simulate_phenotype(data.X, n_snps=int(cfg["n_snps"]), n_pairs=int(cfg["n_pairs"]),
                                                  h2_add=float(cfg["h2_add"]), h2_int=float(cfg["h2_int"]),
                                                  seed=int(seed), min_gap=int(gap), pair_model=cfg["pair_model"])
                    except ValueError as exc:
                        err = exc
                raise EpiflowError(f"tune_ngg: cannot plant {loci} loci on {data.X.shape[1]} SNPs ({err}); "
                                   "raise max_snps or plant fewer SNPs/pairs")

            self.tune_phenos = [sim(s) for s in cfg["tune_seeds"]]
            self.holdout_pheno = sim(cfg["holdout_seed"])
        else:
            if data.y is None:
                raise EpiflowError("tune_ngg: mode r2 needs a phenotype")
            usable = np.flatnonzero(np.isfinite(data.y))
            if usable.size < 20:
                raise EpiflowError(f"tune_ngg: mode r2 needs at least 20 samples with a phenotype, got {usable.size}")
            self.tune_rows, self.holdout_rows = _split(usable, float(cfg["holdout_fraction"]), int(cfg["holdout_seed"]))
            self.splits = [_split(self.tune_rows, float(cfg["validation_fraction"]), int(s)) for s in cfg["tune_seeds"]]

    @property
    def steps(self) -> int:
        return len(self.cfg["tune_seeds"])

    def evaluate_step(self, config: dict, step: int) -> dict:
        if self.mode == "recall":
            return recall_eval(self.data, self.tune_phenos[step], config, self.cfg)
        disc, val = self.splits[step]
        return r2_eval(self.data, disc, val, config, self.cfg)

    def __call__(self, trial, report=None):
        config = suggest(trial, self.cfg["search"])
        scores, secs = [], []
        for step in range(self.steps):
            m = self.evaluate_step(config, step)
            scores.append(m["score"])
            secs.append(m["seconds_per_repetition"])
            if report is not None:
                metrics = {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and v is not None}
                metrics["seed"] = float(self.cfg["tune_seeds"][step])
                report(step, float(np.mean(scores)), metrics)
        trial.set_user_attr("seconds_per_repetition", float(np.mean(secs)))
        trial.set_user_attr("scores", [float(s) for s in scores])
        if self.cfg["multi_objective"]:
            return float(np.mean(scores)), float(np.mean(secs))
        return float(np.mean(scores))

    def rerun(self, best_params: dict) -> dict:
        """Best configuration vs the estimator's full defaults (:data:`NGG_DEFAULTS`) on the held-out
        phenotype (or held-out samples). Settings fixed in ``search`` are fixed in the tuned one."""
        best = {**NGG_DEFAULTS, **{k: v for k, v in best_params.items() if k in NGG_DEFAULTS}}
        for name, rng in self.cfg["search"].items():  # settings the study kept fixed
            if name not in best_params and not isinstance(rng, (list, tuple)):
                best[name] = rng
        out = {"holdout_seed": float(self.cfg["holdout_seed"])}
        for label, config in (("tuned", best), ("default", dict(NGG_DEFAULTS))):
            if self.mode == "recall":
                m = recall_eval(self.data, self.holdout_pheno, config, self.cfg)
                for k, v in m.items():
                    if k.startswith("recall_at_") or k.startswith("clumped_recall_at_") or k == "mrr":
                        out[f"{label}_{k}"] = float(v)
            else:
                m = r2_eval(self.data, self.tune_rows, self.holdout_rows, config, self.cfg)
                out[f"{label}_r2_heldout"] = float(m["r2"])
            out[f"{label}_score"] = float(m["score"])
            out[f"{label}_seconds_per_repetition"] = float(m["seconds_per_repetition"])
        return out


def ngg_study_spec(params: dict, device: str | None = None) -> StudySpec:
    """The StudySpec of ``epiflow tune --ngg`` from the ``tune_ngg:`` section of params.yaml.

    ``device`` overrides ``tune_ngg.device``.
    """
    sec = params.get("tune_ngg") or {}
    if not isinstance(sec, dict):
        raise EpiflowError("params.yaml: section 'tune_ngg' must be a mapping")
    cfg = resolve_config(sec)
    if device:
        cfg["device"] = device
    data = load_study_data(cfg, params, need_pheno=cfg["mode"] == "r2")
    obj = NGGObjective(data, cfg)
    score_name = metric_name(cfg["score"]) if cfg["mode"] == "recall" else "r2_validation"
    directions = ["maximize"] + (["minimize"] if cfg["multi_objective"] else [])
    names = [score_name] + (["seconds_per_repetition"] if cfg["multi_objective"] else [])
    n, p = data.X.shape
    tags = {"model_type": "ngg", "ngg.mode": cfg["mode"], "ngg.genotypes": data.source,
            "ngg.n_samples": str(n), "ngg.n_snps": str(p), "ngg.n_pairs": str(p * (p - 1) // 2),
            "ngg.tune_seeds": ",".join(map(str, cfg["tune_seeds"])), "ngg.holdout_seed": str(cfg["holdout_seed"])}
    if cfg["mode"] == "recall":
        tags.update({"ngg.planted": f"{cfg['n_snps']} SNPs h2 {cfg['h2_add']}, {cfg['n_pairs']} pairs h2 {cfg['h2_int']}",
                     "ngg.window": str(cfg["window"])})
    return StudySpec(name="tune-ngg" + ("-r2" if cfg["mode"] == "r2" else "") + ("-mo" if cfg["multi_objective"] else ""),
                     directions=directions, metric_names=names, objective=obj, defaults=searched_defaults(cfg["search"]),
                     rerun=obj.rerun, tags=tags)

