"""The NGG part of the pipeline as workflows: ``pheno``, ``1d``, ``2d`` and ``heritability`` steps.

Each step takes the validated ``ngg:`` settings (:func:`load_config`) and a folder to fill, and
returns (summary, metrics, figures); :mod:`pipelines.stages.ngg` runs them as DVC stages (atomic
output folders, metrics files, MLflow). Genotypes (``ngg.input``) are any source
:meth:`~pipelines.workflows.genotypes.GenotypeSet.load` reads (SNP dosage folder, PLINK fileset,
VCF); the phenotype (``ngg.pheno``) any :meth:`~pipelines.workflows.genotypes.Phenotype.load`
reads (file, case/control sample sheet, or an ``ngg pheno`` folder with its planted truth). The
scans are :func:`pipelines.workflows.scan.run_scan`.
"""
from __future__ import annotations

import copy
import io
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from models.ngg.heritability import heritability_table, summarize_table
from models.scans.scan1d import scan_1d
from models.scans.scan2d import Scan2D, Scan2DOptions
from models.simulate.pheno import PAIR_MODELS, clump_pairs, pair_hits, simulate_phenotype, snp_recall
from pipelines.errors import EpiflowError, InputError
from pipelines.params import load_params, section
from pipelines.plots.heritability import plot_heritability
from pipelines.plots.scans import pair_boxplots, snp_alleles
from pipelines.workflows.genotypes import GenotypeSet, Phenotype, SnpFilter, align
from pipelines.workflows.scan import NGGSettings, ScanResult, ScanSpec, device_or_error, run_scan, write_scan

__all__ = ["DEFAULTS", "STEPS", "OUT", "NGGData", "load_config", "load_data", "run_step"]

STEPS = ("pheno", "1d", "2d", "heritability")
OUT = {"pheno": "work/ngg_pheno", "1d": "work/ngg_1d", "2d": "work/ngg_2d", "heritability": "work/heritability"}

# defaults of the ngg: section (params.yaml documents every key)
DEFAULTS = {
    "input": "work/snp_dosage",
    "pheno": "work/ngg_pheno",
    "pheno_col": "y",
    "pheno_format": "auto",
    "trait": "auto",
    "maf": 0.05,
    "geno": 0.1,
    "method_2d": "exact",
    "device": "auto",
    "top_1d": 100,
    "top_2d": 1000,
    "recall_window": 5,
    "ngg": {"B": 100, "d": 30, "lam": None, "lam_scale": 2.0, "R": 10, "iters": 200, "seed": 0},
    "pyramid": {"side": 1024, "tile": 256},
    "simulate": {"n_snps": 5, "n_pairs": 5, "h2_add": 0.1, "h2_int": 0.25, "pair_model": "product",
                 "min_maf": 0.1, "min_gap": 50, "seed": 1},
    "heritability": {"n_snps": 20, "n_pairs": 20, "random_draws": 10, "max_components": None, "holdout": 0.5,
                     "seed": 0},
}


def load_config(params_path="params.yaml") -> tuple[dict, str]:
    """The validated ``ngg:`` section merged over :data:`DEFAULTS`, and the MLflow experiment name."""
    params = load_params(params_path)
    raw = section(params, "ngg", params_path)
    cfg = copy.deepcopy(DEFAULTS)

    def bad(key, msg):
        raise EpiflowError(f"{params_path}: ngg.{key}: {msg}")

    for k, v in raw.items():
        if k not in DEFAULTS:
            bad(k, f"unknown key (known: {', '.join(DEFAULTS)})")
        if isinstance(DEFAULTS[k], dict):
            if v is None:
                continue
            if not isinstance(v, dict):
                bad(k, "must be a mapping")
            for kk, vv in v.items():
                if kk not in DEFAULTS[k]:
                    bad(f"{k}.{kk}", f"unknown key (known: {', '.join(DEFAULTS[k])})")
                cfg[k][kk] = vv
        else:
            cfg[k] = v

    _validate(cfg, bad)
    study = params.get("study") or "epiflow"
    return cfg, str(study)




def _validate(cfg: dict, bad) -> None:
    """Type and range checks of the merged ``ngg:`` section (in place); ``bad(key, msg)`` raises."""

    def num(key, v, lo=None, hi=None, integer=False, none=False, lo_open=False):
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and int(v) != v):
            bad(key, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            bad(key, f"must be {'>' if lo_open else '>='} {lo}, got {v!r}")
        if hi is not None and v > hi:
            bad(key, f"must be <= {hi}, got {v!r}")
        return int(v) if integer else float(v)

    def choice(key, v, options):
        if v not in options:
            bad(key, f"must be one of {', '.join(options)}, got {v!r}")
        return v

    for key in ("input", "pheno"):
        if not isinstance(cfg[key], str) or not cfg[key]:
            bad(key, "must be a path")
    cfg["pheno_col"] = str(cfg["pheno_col"])
    choice("pheno_format", cfg["pheno_format"], ("auto", "plink", "gemma", "tsv"))
    choice("trait", cfg["trait"], ("auto", "qt", "binary"))
    choice("method_2d", cfg["method_2d"], ("exact", "ngg"))
    choice("device", cfg["device"], ("auto", "cpu", "cuda"))
    cfg["maf"] = num("maf", cfg["maf"], 0.0, 0.5)
    cfg["geno"] = num("geno", cfg["geno"], 0.0, 1.0)
    cfg["top_1d"] = num("top_1d", cfg["top_1d"], 1, integer=True)
    cfg["top_2d"] = num("top_2d", cfg["top_2d"], 1, integer=True)
    cfg["recall_window"] = num("recall_window", cfg["recall_window"], 0, integer=True)
    g = cfg["ngg"]
    for k in ("B", "d", "R", "iters"):
        g[k] = num(f"ngg.{k}", g[k], 1, integer=True)
    g["seed"] = num("ngg.seed", g["seed"], 0, integer=True)
    g["lam"] = num("ngg.lam", g["lam"], 0.0, none=True, lo_open=True)
    g["lam_scale"] = num("ngg.lam_scale", g["lam_scale"], 0.0, lo_open=True)
    py = cfg["pyramid"]
    py["side"] = num("pyramid.side", py["side"], 1, integer=True)
    py["tile"] = num("pyramid.tile", py["tile"], 1, integer=True)
    s = cfg["simulate"]
    s["n_snps"] = num("simulate.n_snps", s["n_snps"], 0, integer=True)
    s["n_pairs"] = num("simulate.n_pairs", s["n_pairs"], 0, integer=True)
    s["h2_add"] = num("simulate.h2_add", s["h2_add"], 0.0, 1.0)
    s["h2_int"] = num("simulate.h2_int", s["h2_int"], 0.0, 1.0)
    if s["h2_add"] + s["h2_int"] >= 1:
        bad("simulate", "h2_add + h2_int must be < 1")
    choice("simulate.pair_model", s["pair_model"], PAIR_MODELS)
    s["min_maf"] = num("simulate.min_maf", s["min_maf"], 0.0, 0.5)
    s["min_gap"] = num("simulate.min_gap", s["min_gap"], 0, integer=True)
    s["seed"] = num("simulate.seed", s["seed"], 0, integer=True)
    h = cfg["heritability"]
    h["n_snps"] = num("heritability.n_snps", h["n_snps"], 1, integer=True)
    h["n_pairs"] = num("heritability.n_pairs", h["n_pairs"], 1, integer=True)
    h["random_draws"] = num("heritability.random_draws", h["random_draws"], 1, integer=True)
    h["max_components"] = num("heritability.max_components", h["max_components"], 1, integer=True, none=True)
    h["holdout"] = num("heritability.holdout", h["holdout"], 0.0, 0.9)
    h["seed"] = num("heritability.seed", h["seed"], 0, integer=True)


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True, eq=False)
class NGGData:
    """Filtered genotypes of the phenotyped samples, their phenotype and the planted truth."""

    genotypes: GenotypeSet          # SNP-major, used samples and SNPs (unique SNP ids)
    phenotype: Phenotype | None     # aligned to the genotypes, trait resolved (None: genotypes only)
    filters: dict
    maf: np.ndarray
    source: str
    kind: str
    n_samples_genotyped: int
    seconds_load: float

    @property
    def G(self) -> np.ndarray:
        return self.genotypes.dosage

    @property
    def snps(self) -> pd.DataFrame:
        return self.genotypes.snps

    @property
    def sample_ids(self) -> np.ndarray:
        return self.genotypes.samples["iid"].to_numpy()

    @property
    def n_samples(self) -> int:
        return self.genotypes.n

    @property
    def y(self) -> np.ndarray:
        return self.phenotype.y

    @property
    def trait(self) -> str:
        return self.phenotype.trait

    @property
    def truth(self) -> dict | None:
        return None if self.phenotype is None else self.phenotype.truth

    @property
    def join(self) -> dict:
        return self.phenotype.join

    @property
    def pheno_col(self) -> str:
        return self.phenotype.column

    @property
    def pheno_path(self) -> str:
        return self.phenotype.path


def load_data(cfg: dict, need_pheno: bool = True) -> NGGData:
    """Genotypes (filtered on the phenotyped samples), phenotype and truth, as the scans take them."""
    t0 = time.perf_counter()
    gs = GenotypeSet.load(cfg["input"])
    n_genotyped = gs.n
    ph = None
    if need_pheno:
        ph = Phenotype.load(cfg["pheno"], gs, cfg["pheno_col"], cfg["pheno_format"])
        ph = ph.with_trait(cfg["trait"], require_variation=True)
        ph = replace(ph, y=np.asarray(ph.y, dtype=np.float64))
        gs, ph, _ = align(gs, ph)
    res = SnpFilter(maf_min=cfg["maf"], max_missing=cfg["geno"]).apply(gs.snp_stats(), gs.snps)
    rep = {"n_snps_input": int(gs.p), "dropped_call_rate": int((~res.ok_call_rate).sum()),
           "dropped_maf": int((res.ok_call_rate & ~res.ok_maf).sum()), "n_snps_used": res.n_used,
           "maf_min": cfg["maf"], "geno_max": cfg["geno"]}
    if res.n_used < 2:
        raise EpiflowError(f"{cfg['input']}: only {res.n_used} SNPs pass ngg.maf >= {cfg['maf']} and "
                           f"ngg.geno <= {cfg['geno']}; lower ngg.maf or raise ngg.geno")
    data = NGGData(gs.subset(snps=res.keep), ph, rep, res.maf[res.keep], gs.source, gs.kind, n_genotyped,
                   time.perf_counter() - t0)
    print(f"ngg: {gs.source}: {rep['n_snps_input']} SNPs, {rep['dropped_call_rate']} dropped for call rate, "
          f"{rep['dropped_maf']} below MAF {cfg['maf']}, {rep['n_snps_used']} used; {data.n_samples} samples",
          flush=True)
    return data


def _positions(snps: pd.DataFrame, ids, what: str, where) -> np.ndarray:
    pos = pd.Series(np.arange(len(snps)), index=snps["snp"].to_numpy())
    ids = [str(x) for x in ids]
    missing = [x for x in ids if x not in pos.index]
    if missing:
        raise InputError(where, f"{what} {missing[0]!r} is not among the filtered SNPs of the input "
                                f"({len(missing)} of {len(ids)} missing); rerun the upstream stage")
    return pos.loc[ids].to_numpy(dtype=np.int64)


def _truth_indices(data: NGGData) -> tuple[np.ndarray, np.ndarray] | None:
    t = data.truth
    if not t:
        return None
    snps = _positions(data.snps, t["snps"], "planted SNP", data.pheno_path) if t["snps"] else np.zeros(0, np.int64)
    pairs = (np.sort(_positions(data.snps, [x for pr in t["pairs"] for x in pr], "planted SNP",
                                data.pheno_path).reshape(-1, 2), axis=1) if t["pairs"] else np.zeros((0, 2), np.int64))
    return snps, pairs


# ---------------------------------------------------------------------------------------------
# steps


def _spec(cfg: dict, mode: str, method: str, top: int, device: str) -> ScanSpec:
    g = cfg["ngg"]
    return ScanSpec(mode=mode, method=method, top=top, device=device, pyramid_side=cfg["pyramid"]["side"],
                    checkpoint_every=60.0, restart=True,
                    ngg=NGGSettings(B=g["B"], d=g["d"], R=g["R"], lam_scale=g["lam_scale"], lam=g["lam"],
                                    iters=g["iters"], seed=g["seed"]))


def _scan(cfg: dict, data: NGGData, spec: ScanSpec, out: Path) -> ScanResult:
    """One scan of the step's data, its tables and figures written to ``out``."""
    result = run_scan(data.genotypes, data.phenotype, spec, checkpoint_dir=out,
                      log=lambda msg: print(msg, flush=True))
    write_scan(result, out, pyramid_tile=cfg["pyramid"]["tile"])
    return result


def _as_written(df: pd.DataFrame, dtype: dict) -> pd.DataFrame:
    """A table with the values its TSV holds (10 significant digits), so metrics and recall equal
    what a reader of the written table computes."""
    text = df.to_csv(sep="\t", index=False, float_format="%.10g", na_rep="NA")
    return pd.read_csv(io.StringIO(text), sep="\t", dtype=dtype)


def _device(cfg) -> str:
    return device_or_error(cfg["device"], "ngg.device: ")


def step_pheno(cfg: dict, tmp: Path) -> tuple[dict, dict, dict]:
    s = cfg["simulate"]
    data = load_data(cfg, need_pheno=False)
    t0 = time.perf_counter()
    # on a small panel the gap between planted loci shrinks (halving) until they fit
    gap, sim = s["min_gap"], None
    while sim is None:
        try:
            sim = simulate_phenotype(data.G.T, n_snps=s["n_snps"], n_pairs=s["n_pairs"], h2_add=s["h2_add"],
                                     h2_int=s["h2_int"], seed=s["seed"], min_maf=s["min_maf"], min_gap=gap,
                                     pair_model=s["pair_model"])
        except ValueError as exc:
            if "far enough apart" not in str(exc) or gap <= 1:
                raise EpiflowError(f"ngg.simulate: {exc}") from None
            gap //= 2
    if gap != s["min_gap"]:
        print(f"ngg pheno: min_gap {s['min_gap']} does not fit {data.filters['n_snps_used']} SNPs; used {gap}")
    ids = data.snps["snp"].to_numpy()
    pd.DataFrame({"sample_id": data.sample_ids, "y": sim.y}).to_csv(tmp / "pheno.tsv", sep="\t", index=False,
                                                                        float_format="%.10g")
    # the generator's recorded name (its code now lives in models/simulate/pheno.py); kept so that
    # truth files, and the DVC hashes of the outputs holding them, stay stable
    truth = {"model": "y = additive SNPs + SNP-pair terms + noise (models.ngg.simulate_pheno)",
             "pair_model": sim.pair_model, "seed": sim.seed, "h2_add": sim.h2_add, "h2_int": sim.h2_int,
             "realized": sim.realized, "snps": [str(ids[k]) for k in sim.snps],
             "snp_effects": [float(b) for b in sim.snp_effects],
             "pairs": [[str(ids[a]), str(ids[b])] for a, b in sim.pairs],
             "pair_effects": [float(v) for v in sim.pair_effects],
             "min_gap": gap, "genotypes": {"input": cfg["input"], "filters": data.filters}}
    (tmp / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    summary = {"input": cfg["input"], "n_samples": data.n_samples, "filters": data.filters,
               "n_planted_snps": int(sim.snps.size), "n_planted_pairs": int(sim.pairs.shape[0]),
               "realized": sim.realized}
    metrics = {"n_samples": data.n_samples, "n_snps": data.filters["n_snps_used"],
               "n_planted_snps": int(sim.snps.size), "n_planted_pairs": int(sim.pairs.shape[0]), "min_gap": gap,
               "h2_add_realized": sim.realized["h2_add"], "h2_int_realized": sim.realized["h2_int"],
               "seconds": {"load": data.seconds_load, "simulate": time.perf_counter() - t0}}
    print(f"ngg pheno: {sim.snps.size} SNPs (h2 {s['h2_add']}) and {sim.pairs.shape[0]} {sim.pair_model} pairs "
          f"(h2 {s['h2_int']}) planted over {data.filters['n_snps_used']} SNPs x {data.n_samples} samples")
    return summary, metrics, {}


def _recall_snps(found_ids, data, truth, k_list, window) -> dict:
    if truth is None or truth[0].size == 0:
        return {}
    found = _positions(data.snps, found_ids, "reported SNP", "scan output")
    chrom = data.snps["chrom"].to_numpy()
    out = {}
    for k in k_list:
        out[f"top{k}"] = snp_recall(found, truth[0], window=0, top=k, chrom=chrom)
        out[f"top{k}_locus"] = snp_recall(found, truth[0], window=window, top=k, chrom=chrom)
    return out


def step_1d(cfg: dict, tmp: Path) -> tuple[dict, dict, dict]:
    data = load_data(cfg)
    device = _device(cfg)
    truth = _truth_indices(data)
    k_list = sorted({min(10, cfg["top_1d"]), cfg["top_1d"]})
    res_exact = _scan(cfg, data, _spec(cfg, "1d", "exact", cfg["top_1d"], device), tmp)
    (tmp / "ngg").mkdir()
    res_ngg = _scan(cfg, data, _spec(cfg, "1d", "ngg", cfg["top_1d"], device), tmp / "ngg")
    top_e = _as_written(res_exact.top, {"snp": str, "chrom": str})
    top_n = _as_written(res_ngg.top, {"snp": str, "chrom": str})
    res_exact, res_ngg = res_exact.numbers, res_ngg.numbers
    rec_e = _recall_snps(top_e["snp"], data, truth, k_list, cfg["recall_window"])
    rec_n = _recall_snps(top_n["snp"], data, truth, k_list, cfg["recall_window"])
    summary = _common_summary(cfg, data, device)
    summary.update({"exact": {"n_tests": res_exact["n_tests"], "best": res_exact["best"]},
                    "ngg": {"params": res_ngg["ngg_params"], "n_reported": int(len(top_n))}})
    metrics = {"n_samples": data.n_samples, "n_snps": data.filters["n_snps_used"],
               "n_tests": res_exact["n_tests"], "trait": data.trait,
               "exact": {"top_snp": str(top_e["snp"].iloc[0]) if len(top_e) else None,
                         "top_p": float(top_e["p"].iloc[0]) if len(top_e) else None,
                         "n_bonferroni": int((top_e["p"] < 0.05 / max(1, res_exact["n_tests"])).sum())},
               "ngg": {"top_snp": str(top_n["snp"].iloc[0]) if len(top_n) else None,
                       "top_score": float(top_n["score"].iloc[0]) if len(top_n) else None,
                       "n_nonzero": int(len(top_n))},
               "seconds": {"load": data.seconds_load, "exact": res_exact["seconds_scan"],
                           "ngg": res_ngg["seconds_scan"]}}
    if truth is not None:
        metrics["exact"]["recall_snps"] = rec_e
        metrics["ngg"]["recall_snps"] = rec_n
    figs = {"manhattan_1d.png": tmp / "manhattan.png", "manhattan_1d_ngg.png": tmp / "ngg" / "manhattan.png"}
    return summary, metrics, figs


def _common_summary(cfg, data, device) -> dict:
    return {"input": cfg["input"], "pheno": cfg["pheno"], "pheno_col": data.pheno_col, "trait": data.trait,
            "n_samples": data.n_samples, "join": data.join, "filters": data.filters, "device": device,
            "truth": bool(data.truth)}


def _recall_pairs(top: pd.DataFrame, data, truth, k_list, window) -> tuple[dict, list]:
    if truth is None or truth[1].shape[0] == 0:
        return {}, []
    planted = truth[1]
    chrom = data.snps["chrom"].to_numpy()
    if len(top):
        found = np.column_stack([_positions(data.snps, top["snp1"], "reported SNP", "top_pairs.tsv"),
                                 _positions(data.snps, top["snp2"], "reported SNP", "top_pairs.tsv")])
    else:
        found = np.zeros((0, 2), np.int64)
    out = {}
    # clumped: LD copies of one locus pair (both SNPs within `window` columns of a better pair) count once
    distinct = found[clump_pairs(found, window=window, chrom=chrom)] if len(found) else found
    for k in k_list:
        out[f"top{k}"] = float(pair_hits(found, planted, window=0, top=k, chrom=chrom).mean())
        out[f"top{k}_locus"] = float(pair_hits(found, planted, window=window, top=k, chrom=chrom).mean())
        out[f"top{k}_clumped"] = float(pair_hits(distinct, planted, window=window, top=k, chrom=chrom).mean())
    ranks = []  # rank (1-based) of the first reported pair hitting each planted pair at the locus level
    ids = data.snps["snp"].to_numpy()
    for a, b in planted:
        hit = [pair_hits(found[r:r + 1], np.array([[a, b]]), window=window, chrom=chrom)[0] for r in range(len(found))]
        r = int(np.argmax(hit)) + 1 if any(hit) else None
        ranks.append({"snp1": str(ids[a]), "snp2": str(ids[b]), "rank": r})
    return out, ranks


def step_2d(cfg: dict, tmp: Path) -> tuple[dict, dict, dict]:
    data = load_data(cfg)
    device = _device(cfg)
    truth = _truth_indices(data)
    method = cfg["method_2d"]
    result = _scan(cfg, data, _spec(cfg, "2d", method, cfg["top_2d"], device), tmp)
    res = result.numbers
    top = _as_written(result.top, {"snp1": str, "snp2": str, "chrom1": str, "chrom2": str})
    if method == "ngg" and len(top):  # the exact scan draws its own; NGG gets the box plots here
        G, pos = data.G, pd.Series(np.arange(len(data.snps)), index=data.snps["snp"].to_numpy())
        k = min(6, len(top))
        pair_boxplots(tmp / "pair_boxplots.png", [G[pos[top.snp1[q]]] for q in range(k)],
                      [G[pos[top.snp2[q]]] for q in range(k)], data.y,
                      titles=[f"{top.snp1[q]} x {top.snp2[q]}  score={top.score[q]:.3g}" for q in range(k)],
                      alleles=[snp_alleles(data.snps, pos[top.snp1[q]], pos[top.snp2[q]]) for q in range(k)])
    k_list = sorted({min(10, cfg["top_2d"]), min(100, cfg["top_2d"]), cfg["top_2d"]})
    rec, ranks = _recall_pairs(top, data, truth, k_list, cfg["recall_window"])
    p = data.filters["n_snps_used"]
    summary = _common_summary(cfg, data, device)
    summary.update({"method": method, "n_pairs": p * (p - 1) // 2, "planted_pair_ranks": ranks})
    t = top.iloc[0] if len(top) else None
    metrics = {"n_samples": data.n_samples, "n_snps": p, "n_pairs": p * (p - 1) // 2, "method": method,
               "trait": data.trait, "n_reported": int(len(top)),
               "top_pair": f"{t.snp1} x {t.snp2}" if t is not None else None,
               "seconds": {"load": data.seconds_load, "scan": res["seconds_scan"]}}
    if method == "exact":
        metrics.update({"n_tested": res["n_tested"], "pairs_per_second": res["pairs_per_second"],
                        "top_stat": float(t["stat"]) if t is not None else None,
                        "top_p": float(t["p"]) if t is not None else None,
                        "n_bonferroni": int((top["p"] < res["sig_p"]).sum()), "bonferroni_p": res["sig_p"]})
    else:
        metrics["top_score"] = float(t["score"]) if t is not None else None
    if truth is not None:
        metrics["recall_pairs"] = rec
        found = [r["rank"] for r in ranks]
        metrics["planted_pairs_found"] = int(sum(r is not None for r in found))
    figs = {"manhattan_2d.png": tmp / "manhattan.png", "map_overview.png": tmp / "map_overview.png",
            "pair_boxplots.png": tmp / "pair_boxplots.png"}
    return summary, metrics, {k: v for k, v in figs.items() if v.exists()}


def _holdout_selection(data, rows, n_snps, n_pairs, device) -> tuple[np.ndarray, np.ndarray]:
    """Top SNPs (exact 1D) and pairs (exact 2D) selected on ``rows`` only."""
    G = np.ascontiguousarray(data.G[:, rows])
    y = data.y[rows]
    r = scan_1d(G, y, None, device=device, snp_major=True)
    pv = np.where(np.isfinite(r.p), r.p, np.inf)
    snps = np.lexsort((np.arange(len(pv)), pv))[:n_snps]
    try:
        scan = Scan2D(G, y, data.snps["chrom"].to_numpy(),
                      Scan2DOptions(top_k=n_pairs, trait=data.trait, pyramid_side=64), device=device)
    except ValueError as exc:
        raise EpiflowError(f"heritability hold-out scan: {exc}") from None
    scan.run()
    top = scan.results()["top"]
    return snps, np.column_stack([top["i"], top["j"]])


def _best(summary_tab: pd.DataFrame, value: str) -> dict:
    """Per feature set: ``value`` with all components (``snps``, ...), its maximum over the number
    of components (``*_best``, ``*_best_components``), and the gains of adding pairs (all components)."""
    out = {}
    names = {"1d": "snps", "1d+top_pairs": "snps_top_pairs", "1d+random_pairs": "snps_random_pairs"}
    for fs, name in names.items():
        sub = summary_tab[summary_tab["feature_set"] == fs]
        if sub.empty:
            continue
        k = int(sub[value].to_numpy().argmax())
        out[name] = float(sub[value].iloc[-1])
        out[f"{name}_components"] = int(sub["n_components"].iloc[-1])
        out[f"{name}_best"] = float(sub[value].iloc[k])
        out[f"{name}_best_components"] = int(sub["n_components"].iloc[k])
        if f"{value}_sd" in sub and fs == "1d+random_pairs":
            out[f"{name}_sd"] = float(sub[f"{value}_sd"].iloc[-1])
    if "snps" in out:
        for name in ("snps_top_pairs", "snps_random_pairs"):
            if name in out:
                out[f"gain_{name.removeprefix('snps_')}"] = out[name] - out["snps"]
    return out


def step_heritability(cfg: dict, tmp: Path) -> tuple[dict, dict, dict]:
    h = cfg["heritability"]
    data = load_data(cfg)
    device = _device(cfg)
    p = data.filters["n_snps_used"]
    f1, f2 = Path(OUT["1d"]) / "top_snps.tsv", Path(OUT["2d"]) / "top_pairs.tsv"
    for f, st in ((f1, "ngg_1d"), (f2, "ngg_2d")):
        if not f.is_file():
            raise InputError(f, f"not found; run the {st} stage first")
    t1 = pd.read_csv(f1, sep="\t", dtype={"snp": str})
    t2 = pd.read_csv(f2, sep="\t", dtype={"snp1": str, "snp2": str})
    snps = _positions(data.snps, t1["snp"][: h["n_snps"]], "SNP", f1)
    pairs = np.column_stack([_positions(data.snps, t2["snp1"][: h["n_pairs"]], "SNP", f2),
                             _positions(data.snps, t2["snp2"][: h["n_pairs"]], "SNP", f2)])
    X = data.G.T  # (n, p) view
    pool = np.arange(p)
    t0 = time.perf_counter()
    tab = heritability_table(X, data.y, snps, pairs, n_random=h["random_draws"],
                             max_components=h["max_components"], seed=h["seed"], pair_pool=pool)
    tab.insert(0, "selection", "all_samples")
    tables = [tab]
    t_in = time.perf_counter() - t0
    metrics = {"n_samples": data.n_samples, "n_snps_selected": int(len(snps)), "n_pairs_selected": int(len(pairs)),
               "random_draws": h["random_draws"]}
    sm_in = summarize_table(tab.drop(columns="selection"))
    metrics["in_sample"] = _best(sm_in, "adj_r2")
    planted = data.truth["realized"] if data.truth and "realized" in data.truth else None
    plot_heritability(tab.drop(columns="selection"), tmp / "heritability.png", planted=planted,
                      title=f"in-sample PCR: top {len(snps)} SNPs, {len(pairs)} pairs (n={data.n_samples})")
    figs = {"heritability.png": tmp / "heritability.png"}
    seconds = {"load": data.seconds_load, "in_sample": t_in}
    if h["holdout"] > 0:
        t0 = time.perf_counter()
        rng = np.random.default_rng(h["seed"])
        n = data.n_samples
        if data.trait == "binary":  # stratified
            perm = np.concatenate([rng.permutation(np.flatnonzero(data.y == c)) for c in (0.0, 1.0)])
            test = np.zeros(n, bool)
            for c in (0.0, 1.0):
                members = perm[data.y[perm] == c]
                test[members[: int(round(h["holdout"] * len(members)))]] = True
        else:
            test = np.zeros(n, bool)
            test[rng.permutation(n)[: int(round(h["holdout"] * n))]] = True
        disc, val = np.flatnonzero(~test), np.flatnonzero(test)
        print(f"heritability hold-out: selecting on {len(disc)} samples, evaluating on {len(val)}", flush=True)
        s_d, p_d = _holdout_selection(data, disc, h["n_snps"], h["n_pairs"], device)
        tab_h = heritability_table(X, data.y, s_d, p_d, n_random=h["random_draws"],
                                   max_components=h["max_components"], seed=h["seed"], rows=val, pair_pool=pool)
        tab_h.insert(0, "selection", "holdout")
        tables.append(tab_h)
        metrics["holdout"] = _best(summarize_table(tab_h.drop(columns="selection")), "adj_r2")
        metrics["holdout"].update({"n_discovery": int(len(disc)), "n_evaluation": int(len(val))})
        plot_heritability(tab_h.drop(columns="selection"), tmp / "heritability_holdout.png", planted=planted,
                          title=f"held-out PCR: selected on {len(disc)}, evaluated on {len(val)} samples")
        figs["heritability_holdout.png"] = tmp / "heritability_holdout.png"
        seconds["holdout"] = time.perf_counter() - t0
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(tmp / "pcr_curves.tsv", sep="\t", index=False, float_format="%.8g")
    if data.truth:
        metrics["h2_realized"] = {k: data.truth["realized"][k] for k in ("h2_add", "h2_int")}
    metrics["seconds"] = seconds
    summary = _common_summary(cfg, data, device)
    summary.update({"selected_snps": [str(x) for x in t1["snp"][: h["n_snps"]]],
                    "selected_pairs": [[str(a), str(b)] for a, b in zip(t2["snp1"][: h["n_pairs"]],
                                                                         t2["snp2"][: h["n_pairs"]])],
                    "settings": h})
    return summary, metrics, figs


STEP_FUNCS = {"pheno": step_pheno, "1d": step_1d, "2d": step_2d, "heritability": step_heritability}


def run_step(step: str, cfg: dict, out: Path) -> tuple[dict, dict, dict]:
    """Run one step into the folder ``out``: (summary, metrics, {figure name: path})."""
    return STEP_FUNCS[step](cfg, Path(out))


def ngg_repetition(plan, block: int, repetition: int) -> np.ndarray:
    """One repetition of the 2D NGG on one block of columns: the unit of work an executor can run
    anywhere and in any order. ``plan`` comes from models.ngg.tiled.prepare_tiled (genotypes,
    phenotype and settings; ``len(plan.blocks)`` blocks, block 0 = the SNP columns). Returns the
    block's effects as a float32 (|U|, |W|) array (see models.ngg.tiled.block_repetition): summed
    over R repetitions they give the mean effects, their nonzero counts the support. It depends only
    on (seed, block, repetition), so a rerun of a lost unit gives the same array."""
    from models.ngg.tiled import block_repetition

    return block_repetition(plan, int(block), int(repetition)).cpu().numpy()
