"""``epiflow ngg STEP``: the NGG part of the pipeline as DVC stages.

    epiflow ngg pheno           # ngg_pheno:    planted SNP / SNP-pair phenotype over the cohort's genotypes
    epiflow ngg 1d              # ngg_1d:       exact per-SNP regression and NGG 1D scores
    epiflow ngg 2d              # ngg_2d:       exhaustive exact pair scan (or NGG 2D), map pyramid
    epiflow ngg heritability    # heritability: PCR adjusted R^2 of top SNPs, + top pairs, + random pairs

Every setting comes from the ``ngg:`` section of params.yaml (each key is documented there).
Genotypes (``ngg.input``) are a SNP dosage directory (``epiflow encode --snp-dosage`` /
``encode.snp_dosage``, or ``epiflow ingest-bed``) or a PLINK 1 fileset (prefix or .bed path). The
phenotype (``ngg.pheno``) is a file (PLINK, GEMMA or a TSV with a header, column ``ngg.pheno_col``;
a sample sheet's ``case``/``control`` column is read as 1/0) or a directory written by
``epiflow ngg pheno`` (``pheno.tsv`` plus ``truth.json``). When the planted truth is known, the
stages report recall of the planted SNPs and pairs.

Outputs (each written atomically; a failed step leaves the previous outputs untouched):
``work/ngg_pheno``, ``work/ngg_1d``, ``work/ngg_2d``, ``work/heritability`` (tables, pyramid,
``summary.json`` without timings, so reruns give identical bytes), ``metrics/ngg_<step>.json``
(numbers, timings, MLflow run id) and figures copied to ``plots/ngg/``. Each step is one MLflow
run in the study's experiment with the ``ngg`` params, the metrics, and the tables and figures as
artifacts, tagged with the git commit and the DVC hashes of its inputs.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_dir, atomic_path, write_json
from pipelines.errors import EpiflowError, InputError
from pipelines.params import load_params, section

STEPS = ("pheno", "1d", "2d", "heritability")
STAGE = {"pheno": "ngg_pheno", "1d": "ngg_1d", "2d": "ngg_2d", "heritability": "heritability"}
OUT = {"pheno": "work/ngg_pheno", "1d": "work/ngg_1d", "2d": "work/ngg_2d", "heritability": "work/heritability"}
METRICS = {s: f"metrics/ngg_{s}.json" for s in STEPS}
PLOTS = "plots/ngg"

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


def add_arguments(p) -> None:
    p.add_argument("step", choices=STEPS, help="which stage to run")
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")


# ---------------------------------------------------------------------------------------------
# params


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
    from models.simulate.pheno import PAIR_MODELS

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
    study = params.get("study") or "epiflow"
    return cfg, str(study)


# ---------------------------------------------------------------------------------------------
# inputs


def load_genotypes(path) -> dict:
    """SNP-major int8 genotypes of a dosage directory or a PLINK fileset.

    Returns G ((p, n) int8, -1 missing), snps (snp, chrom, bp, a1, a2; a1 the counted allele) and
    samples (fid, iid) in matrix order.
    """
    p = Path(path)
    if p.is_dir():
        from pipelines.stages.ingest_bed import load_dosage

        dm = load_dosage(p)
        if dm.X.dtype != np.int8:
            raise InputError(p, f"dosages are {dm.X.dtype}, the scans need int8 with -1 for missing calls "
                                "(ingest-bed --impute none, or encode with dosage_missing: mask)")
        s = dm.snps
        ids = s["id"].astype(str).to_numpy()
        derived = np.array([f"{c}:{q}:{r}:{a}" for c, q, r, a in zip(s["chrom"], s["pos"], s["ref"], s["alt"])],
                           dtype=object)
        ids = np.where(np.isin(ids, ["", ".", "nan"]), derived, ids).astype(object)
        ids = _unique_ids(ids)
        snps = pd.DataFrame({"snp": ids, "chrom": s["chrom"].astype(str).to_numpy(),
                             "bp": s["pos"].to_numpy(dtype=np.int64), "a1": s["alt"].astype(str).to_numpy(),
                             "a2": s["ref"].astype(str).to_numpy()})
        samples = pd.DataFrame({"fid": dm.samples, "iid": dm.samples})
        return {"G": np.ascontiguousarray(dm.X.T), "snps": snps, "samples": samples, "source": str(p),
                "kind": "dosage"}
    from pipelines.io.plink import plink_paths, read_bed

    try:
        plink_paths(p)
    except (InputError, FileNotFoundError, OSError):
        raise InputError(p, "neither a SNP dosage directory nor a PLINK fileset (.bed/.bim/.fam)") from None
    g = read_bed(p)
    snps = g.snps[["snp", "chrom", "bp", "a1", "a2"]].reset_index(drop=True)
    snps["snp"] = _unique_ids(snps["snp"].astype(str).to_numpy(dtype=object))
    return {"G": np.ascontiguousarray(g.dosage.T), "snps": snps,
            "samples": g.samples[["fid", "iid"]].astype(str).reset_index(drop=True), "source": str(p),
            "kind": "plink"}


def _unique_ids(ids: np.ndarray) -> np.ndarray:
    s = pd.Series(ids)
    dup = s.duplicated(keep=False)
    if dup.any():
        s[dup] = s[dup] + ":" + s[dup].groupby(s[dup]).cumcount().astype(str)
    return s.to_numpy(dtype=object)


def _case_control_sheet(path: Path, col: str):
    """(ids, values) when ``col`` of a tab-separated sheet holds case/control words, else None."""
    from pipelines.io.pheno import ID_COLUMNS

    try:
        with open(path) as fh:
            head = fh.readline().rstrip("\n").split("\t")
    except (OSError, UnicodeDecodeError):
        return None
    names = [h.strip().lower() for h in head]
    if col.lower() not in names:
        return None
    idc = next((head[names.index(c)] for c in ID_COLUMNS if c in names), None)
    if idc is None:
        return None
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    v = df[head[names.index(col.lower())]].str.strip().str.lower()
    if not v.isin(["case", "control", "", "na", "unknown", "."]).all() or not v.isin(["case", "control"]).any():
        return None
    y = np.where(v == "case", 1.0, np.where(v == "control", 0.0, np.nan))
    return df[idc].astype(str).to_numpy(), y


def load_phenotype(spec, col: str, fmt: str, samples: pd.DataFrame) -> dict:
    """Phenotype values joined to the genotype samples; a ``ngg pheno`` directory also gives the truth."""
    from pipelines.io.pheno import Table, join, read_table

    p = Path(spec)
    truth = None
    if p.is_dir():
        if (p / "truth.json").is_file():
            truth = json.loads((p / "truth.json").read_text())
        p = p / "pheno.tsv"
        if not p.is_file():
            raise InputError(spec, "phenotype directory without pheno.tsv (run `epiflow ngg pheno`)")
    if not p.is_file():
        raise InputError(p, "phenotype file not found")
    words = _case_control_sheet(p, col)
    if words is not None:
        table = Table(str(p), "tsv", words[0], None, pd.DataFrame({col: words[1]}))
        name = col
    else:
        table = read_table(p, fmt, samples=samples, columns=[col])
        name = table.columns[0]
    jn = join(samples, table, [name])
    return {"index": jn.geno_index, "y": jn.values[:, 0], "truth": truth, "join": jn.report.as_dict(),
            "column": name, "path": str(p)}


def snp_filter(G: np.ndarray, maf_min: float, geno_max: float) -> tuple[np.ndarray, dict, np.ndarray]:
    """Keep mask of SNPs (rows of G) passing call rate >= 1 - geno and MAF >= maf (and polymorphic)."""
    called = G >= 0
    cnt = called.sum(axis=1)
    alt = np.where(called, G, 0).sum(axis=1, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = alt / (2.0 * np.maximum(cnt, 1))
    maf = np.minimum(freq, 1 - freq)
    miss = 1.0 - cnt / max(G.shape[1], 1)
    ok_geno = miss <= geno_max + 1e-12
    ok_maf = (cnt > 0) & (maf > 0) & (maf >= maf_min)
    keep = ok_geno & ok_maf
    rep = {"n_snps_input": int(G.shape[0]), "dropped_call_rate": int((~ok_geno).sum()),
           "dropped_maf": int((ok_geno & ~ok_maf).sum()), "n_snps_used": int(keep.sum()),
           "maf_min": maf_min, "geno_max": geno_max}
    return keep, rep, maf


def load_data(cfg: dict, need_pheno: bool = True) -> dict:
    """Genotypes (filtered on the phenotyped samples), phenotype and truth, as the scans take them."""
    t0 = time.perf_counter()
    g = load_genotypes(cfg["input"])
    G, samples = g["G"], g["samples"]
    out = {"source": g["source"], "kind": g["kind"], "n_samples_genotyped": int(G.shape[1])}
    idx = np.arange(G.shape[1])
    if need_pheno:
        ph = load_phenotype(cfg["pheno"], cfg["pheno_col"], cfg["pheno_format"], samples)
        idx, y = ph["index"], ph["y"]
        trait = cfg["trait"]
        from pipelines.io.pheno import as_case_control, trait_kind

        if trait == "auto":
            trait = "binary" if trait_kind(y) == "binary" else "qt"
        if trait == "binary":
            try:
                y = as_case_control(y)
            except ValueError:
                raise InputError(ph["path"], "trait binary needs two levels coded 1/2 or 0/1 (or case/control)") from None
            if y.min() == y.max():
                raise InputError(ph["path"], "case/control phenotype has only one class among the genotyped samples")
        elif np.nanstd(y) == 0:
            raise InputError(ph["path"], f"phenotype {ph['column']!r} is constant")
        out.update(y=np.asarray(y, dtype=np.float64), trait=trait, truth=ph["truth"], join=ph["join"],
                   pheno_col=ph["column"], pheno_path=ph["path"])
        G = G[:, idx]
    keep, rep, maf = snp_filter(G, cfg["maf"], cfg["geno"])
    if keep.sum() < 2:
        raise EpiflowError(f"{cfg['input']}: only {int(keep.sum())} SNPs pass ngg.maf >= {cfg['maf']} and "
                           f"ngg.geno <= {cfg['geno']}; lower ngg.maf or raise ngg.geno")
    out.update(G=np.ascontiguousarray(G[keep]), snps=g["snps"][keep].reset_index(drop=True),
               sample_ids=samples["iid"].to_numpy()[idx], filters=rep, maf=maf[keep],
               n_samples=int(len(idx)), covar=None, seconds_load=time.perf_counter() - t0)
    print(f"ngg: {g['source']}: {rep['n_snps_input']} SNPs, {rep['dropped_call_rate']} dropped for call rate, "
          f"{rep['dropped_maf']} below MAF {cfg['maf']}, {rep['n_snps_used']} used; {len(idx)} samples", flush=True)
    return out


def _positions(snps: pd.DataFrame, ids, what: str, where) -> np.ndarray:
    pos = pd.Series(np.arange(len(snps)), index=snps["snp"].to_numpy())
    ids = [str(x) for x in ids]
    missing = [x for x in ids if x not in pos.index]
    if missing:
        raise InputError(where, f"{what} {missing[0]!r} is not among the filtered SNPs of the input "
                                f"({len(missing)} of {len(ids)} missing); rerun the upstream stage")
    return pos.loc[ids].to_numpy(dtype=np.int64)


def _truth_indices(data: dict) -> tuple[np.ndarray, np.ndarray] | None:
    t = data.get("truth")
    if not t:
        return None
    snps = _positions(data["snps"], t["snps"], "planted SNP", data["pheno_path"]) if t["snps"] else np.zeros(0, np.int64)
    pairs = (np.sort(_positions(data["snps"], [x for pr in t["pairs"] for x in pr], "planted SNP",
                                data["pheno_path"]).reshape(-1, 2), axis=1) if t["pairs"] else np.zeros((0, 2), np.int64))
    return snps, pairs


# ---------------------------------------------------------------------------------------------
# steps


def _scan_args(cfg: dict, mode: str, method: str, top: int) -> SimpleNamespace:
    g = cfg["ngg"]
    return SimpleNamespace(mode=mode, method=method, top=top, no_plots=False, tile=None,
                           pyramid_side=cfg["pyramid"]["side"], pyramid_tile=cfg["pyramid"]["tile"],
                           block_pairs=None, threads=0, workers="auto", checkpoint_every=60.0, restart=True,
                           covar=None, seed=g["seed"], ngg_B=g["B"], ngg_d=g["d"], ngg_R=g["R"],
                           ngg_lam_scale=g["lam_scale"], ngg_lam=g["lam"], ngg_iters=g["iters"])


def _device(cfg) -> str:
    from models.backend import BackendUnavailable, resolve_device

    try:
        return resolve_device(cfg["device"])
    except BackendUnavailable as exc:
        raise EpiflowError(f"ngg.device: {exc}") from None


def step_pheno(cfg: dict, tmp: Path) -> tuple[dict, dict, dict]:
    from models.simulate.pheno import simulate_phenotype

    s = cfg["simulate"]
    data = load_data(cfg, need_pheno=False)
    t0 = time.perf_counter()
    # on a small panel the gap between planted loci shrinks (halving) until they fit
    gap, sim = s["min_gap"], None
    while sim is None:
        try:
            sim = simulate_phenotype(data["G"].T, n_snps=s["n_snps"], n_pairs=s["n_pairs"], h2_add=s["h2_add"],
                                     h2_int=s["h2_int"], seed=s["seed"], min_maf=s["min_maf"], min_gap=gap,
                                     pair_model=s["pair_model"])
        except ValueError as exc:
            if "far enough apart" not in str(exc) or gap <= 1:
                raise EpiflowError(f"ngg.simulate: {exc}") from None
            gap //= 2
    if gap != s["min_gap"]:
        print(f"ngg pheno: min_gap {s['min_gap']} does not fit {data['filters']['n_snps_used']} SNPs; used {gap}")
    ids = data["snps"]["snp"].to_numpy()
    pd.DataFrame({"sample_id": data["sample_ids"], "y": sim.y}).to_csv(tmp / "pheno.tsv", sep="\t", index=False,
                                                                        float_format="%.10g")
    truth = {"model": "y = additive SNPs + SNP-pair terms + noise (models.simulate.pheno)",
             "pair_model": sim.pair_model, "seed": sim.seed, "h2_add": sim.h2_add, "h2_int": sim.h2_int,
             "realized": sim.realized, "snps": [str(ids[k]) for k in sim.snps],
             "snp_effects": [float(b) for b in sim.snp_effects],
             "pairs": [[str(ids[a]), str(ids[b])] for a, b in sim.pairs],
             "pair_effects": [float(v) for v in sim.pair_effects],
             "min_gap": gap, "genotypes": {"input": cfg["input"], "filters": data["filters"]}}
    (tmp / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    summary = {"input": cfg["input"], "n_samples": data["n_samples"], "filters": data["filters"],
               "n_planted_snps": int(sim.snps.size), "n_planted_pairs": int(sim.pairs.shape[0]),
               "realized": sim.realized}
    metrics = {"n_samples": data["n_samples"], "n_snps": data["filters"]["n_snps_used"],
               "n_planted_snps": int(sim.snps.size), "n_planted_pairs": int(sim.pairs.shape[0]), "min_gap": gap,
               "h2_add_realized": sim.realized["h2_add"], "h2_int_realized": sim.realized["h2_int"],
               "seconds": {"load": data["seconds_load"], "simulate": time.perf_counter() - t0}}
    print(f"ngg pheno: {sim.snps.size} SNPs (h2 {s['h2_add']}) and {sim.pairs.shape[0]} {sim.pair_model} pairs "
          f"(h2 {s['h2_int']}) planted over {data['filters']['n_snps_used']} SNPs x {data['n_samples']} samples")
    return summary, metrics, {}


def _recall_snps(found_ids, data, truth, k_list, window) -> dict:
    from models.simulate.pheno import snp_recall

    if truth is None or truth[0].size == 0:
        return {}
    found = _positions(data["snps"], found_ids, "reported SNP", "scan output")
    chrom = data["snps"]["chrom"].to_numpy()
    out = {}
    for k in k_list:
        out[f"top{k}"] = snp_recall(found, truth[0], window=0, top=k, chrom=chrom)
        out[f"top{k}_locus"] = snp_recall(found, truth[0], window=window, top=k, chrom=chrom)
    return out


def step_1d(cfg: dict, tmp: Path) -> tuple[dict, dict, dict]:
    from pipelines.stages.scan import scan_loaded

    data = load_data(cfg)
    device = _device(cfg)
    truth = _truth_indices(data)
    k_list = sorted({min(10, cfg["top_1d"]), cfg["top_1d"]})
    res_exact = scan_loaded(_scan_args(cfg, "1d", "exact", cfg["top_1d"]), data, tmp, device)
    (tmp / "ngg").mkdir()
    res_ngg = scan_loaded(_scan_args(cfg, "1d", "ngg", cfg["top_1d"]), data, tmp / "ngg", device)
    top_e = pd.read_csv(tmp / "top_snps.tsv", sep="\t", dtype={"snp": str, "chrom": str})
    top_n = pd.read_csv(tmp / "ngg" / "top_snps.tsv", sep="\t", dtype={"snp": str, "chrom": str})
    rec_e = _recall_snps(top_e["snp"], data, truth, k_list, cfg["recall_window"])
    rec_n = _recall_snps(top_n["snp"], data, truth, k_list, cfg["recall_window"])
    summary = _common_summary(cfg, data, device)
    summary.update({"exact": {"n_tests": res_exact["n_tests"], "best": res_exact["best"]},
                    "ngg": {"params": res_ngg["ngg_params"], "n_reported": int(len(top_n))}})
    metrics = {"n_samples": data["n_samples"], "n_snps": data["filters"]["n_snps_used"],
               "n_tests": res_exact["n_tests"], "trait": data["trait"],
               "exact": {"top_snp": str(top_e["snp"].iloc[0]) if len(top_e) else None,
                         "top_p": float(top_e["p"].iloc[0]) if len(top_e) else None,
                         "n_bonferroni": int((top_e["p"] < 0.05 / max(1, res_exact["n_tests"])).sum())},
               "ngg": {"top_snp": str(top_n["snp"].iloc[0]) if len(top_n) else None,
                       "top_score": float(top_n["score"].iloc[0]) if len(top_n) else None,
                       "n_nonzero": int(len(top_n))},
               "seconds": {"load": data["seconds_load"], "exact": res_exact["seconds_scan"],
                           "ngg": res_ngg["seconds_scan"]}}
    if truth is not None:
        metrics["exact"]["recall_snps"] = rec_e
        metrics["ngg"]["recall_snps"] = rec_n
    figs = {"manhattan_1d.png": tmp / "manhattan.png", "manhattan_1d_ngg.png": tmp / "ngg" / "manhattan.png"}
    return summary, metrics, figs


def _common_summary(cfg, data, device) -> dict:
    return {"input": cfg["input"], "pheno": cfg["pheno"], "pheno_col": data["pheno_col"], "trait": data["trait"],
            "n_samples": data["n_samples"], "join": data["join"], "filters": data["filters"], "device": device,
            "truth": bool(data.get("truth"))}


def _recall_pairs(top: pd.DataFrame, data, truth, k_list, window) -> tuple[dict, list]:
    from models.simulate.pheno import clump_pairs, pair_hits

    if truth is None or truth[1].shape[0] == 0:
        return {}, []
    planted = truth[1]
    chrom = data["snps"]["chrom"].to_numpy()
    if len(top):
        found = np.column_stack([_positions(data["snps"], top["snp1"], "reported SNP", "top_pairs.tsv"),
                                 _positions(data["snps"], top["snp2"], "reported SNP", "top_pairs.tsv")])
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
    ids = data["snps"]["snp"].to_numpy()
    for a, b in planted:
        hit = [pair_hits(found[r:r + 1], np.array([[a, b]]), window=window, chrom=chrom)[0] for r in range(len(found))]
        r = int(np.argmax(hit)) + 1 if any(hit) else None
        ranks.append({"snp1": str(ids[a]), "snp2": str(ids[b]), "rank": r})
    return out, ranks


def step_2d(cfg: dict, tmp: Path) -> tuple[dict, dict, dict]:
    from pipelines.plots.scans import pair_boxplots
    from pipelines.stages.scan import scan_loaded

    data = load_data(cfg)
    device = _device(cfg)
    truth = _truth_indices(data)
    method = cfg["method_2d"]
    res = scan_loaded(_scan_args(cfg, "2d", method, cfg["top_2d"]), data, tmp, device)
    top = pd.read_csv(tmp / "top_pairs.tsv", sep="\t", dtype={"snp1": str, "snp2": str, "chrom1": str, "chrom2": str})
    if method == "ngg" and len(top):  # the exact scan draws its own; NGG gets the box plots here
        G, pos = data["G"], pd.Series(np.arange(len(data["snps"])), index=data["snps"]["snp"].to_numpy())
        k = min(6, len(top))
        pair_boxplots(tmp / "pair_boxplots.png", [G[pos[top.snp1[q]]] for q in range(k)],
                      [G[pos[top.snp2[q]]] for q in range(k)], data["y"],
                      titles=[f"{top.snp1[q]} x {top.snp2[q]}  score={top.score[q]:.3g}" for q in range(k)])
    k_list = sorted({min(10, cfg["top_2d"]), min(100, cfg["top_2d"]), cfg["top_2d"]})
    rec, ranks = _recall_pairs(top, data, truth, k_list, cfg["recall_window"])
    p = data["filters"]["n_snps_used"]
    summary = _common_summary(cfg, data, device)
    summary.update({"method": method, "n_pairs": p * (p - 1) // 2, "planted_pair_ranks": ranks})
    t = top.iloc[0] if len(top) else None
    metrics = {"n_samples": data["n_samples"], "n_snps": p, "n_pairs": p * (p - 1) // 2, "method": method,
               "trait": data["trait"], "n_reported": int(len(top)),
               "top_pair": f"{t.snp1} x {t.snp2}" if t is not None else None,
               "seconds": {"load": data["seconds_load"], "scan": res["seconds_scan"]}}
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
    from models.scans.scan1d import scan_1d
    from models.scans.scan2d import Scan2D, Scan2DOptions

    G = np.ascontiguousarray(data["G"][:, rows])
    y = data["y"][rows]
    r = scan_1d(G, y, None, device=device, snp_major=True)
    pv = np.where(np.isfinite(r.p), r.p, np.inf)
    snps = np.lexsort((np.arange(len(pv)), pv))[:n_snps]
    try:
        scan = Scan2D(G, y, data["snps"]["chrom"].to_numpy(),
                      Scan2DOptions(top_k=n_pairs, trait=data["trait"], pyramid_side=64), device=device)
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
    from models.ngg.heritability import heritability_table, plot_heritability, summarize_table

    h = cfg["heritability"]
    data = load_data(cfg)
    device = _device(cfg)
    p = data["filters"]["n_snps_used"]
    f1, f2 = Path(OUT["1d"]) / "top_snps.tsv", Path(OUT["2d"]) / "top_pairs.tsv"
    for f, st in ((f1, "ngg_1d"), (f2, "ngg_2d")):
        if not f.is_file():
            raise InputError(f, f"not found; run the {st} stage first")
    t1 = pd.read_csv(f1, sep="\t", dtype={"snp": str})
    t2 = pd.read_csv(f2, sep="\t", dtype={"snp1": str, "snp2": str})
    snps = _positions(data["snps"], t1["snp"][: h["n_snps"]], "SNP", f1)
    pairs = np.column_stack([_positions(data["snps"], t2["snp1"][: h["n_pairs"]], "SNP", f2),
                             _positions(data["snps"], t2["snp2"][: h["n_pairs"]], "SNP", f2)])
    X = data["G"].T  # (n, p) view
    pool = np.arange(p)
    t0 = time.perf_counter()
    tab = heritability_table(X, data["y"], snps, pairs, n_random=h["random_draws"],
                             max_components=h["max_components"], seed=h["seed"], pair_pool=pool)
    tab.insert(0, "selection", "all_samples")
    tables = [tab]
    t_in = time.perf_counter() - t0
    metrics = {"n_samples": data["n_samples"], "n_snps_selected": int(len(snps)), "n_pairs_selected": int(len(pairs)),
               "random_draws": h["random_draws"]}
    sm_in = summarize_table(tab.drop(columns="selection"))
    metrics["in_sample"] = _best(sm_in, "adj_r2")
    plot_heritability(tab.drop(columns="selection"), tmp / "heritability.png",
                      title=f"in-sample PCR: top {len(snps)} SNPs, {len(pairs)} pairs (n={data['n_samples']})")
    figs = {"heritability.png": tmp / "heritability.png"}
    seconds = {"load": data["seconds_load"], "in_sample": t_in}
    if h["holdout"] > 0:
        t0 = time.perf_counter()
        rng = np.random.default_rng(h["seed"])
        n = data["n_samples"]
        if data["trait"] == "binary":  # stratified
            perm = np.concatenate([rng.permutation(np.flatnonzero(data["y"] == c)) for c in (0.0, 1.0)])
            test = np.zeros(n, bool)
            for c in (0.0, 1.0):
                members = perm[data["y"][perm] == c]
                test[members[: int(round(h["holdout"] * len(members)))]] = True
        else:
            test = np.zeros(n, bool)
            test[rng.permutation(n)[: int(round(h["holdout"] * n))]] = True
        disc, val = np.flatnonzero(~test), np.flatnonzero(test)
        print(f"heritability hold-out: selecting on {len(disc)} samples, evaluating on {len(val)}", flush=True)
        s_d, p_d = _holdout_selection(data, disc, h["n_snps"], h["n_pairs"], device)
        tab_h = heritability_table(X, data["y"], s_d, p_d, n_random=h["random_draws"],
                                   max_components=h["max_components"], seed=h["seed"], rows=val, pair_pool=pool)
        tab_h.insert(0, "selection", "holdout")
        tables.append(tab_h)
        metrics["holdout"] = _best(summarize_table(tab_h.drop(columns="selection")), "adj_r2")
        metrics["holdout"].update({"n_discovery": int(len(disc)), "n_evaluation": int(len(val))})
        plot_heritability(tab_h.drop(columns="selection"), tmp / "heritability_holdout.png",
                          title=f"held-out PCR: selected on {len(disc)}, evaluated on {len(val)} samples")
        figs["heritability_holdout.png"] = tmp / "heritability_holdout.png"
        seconds["holdout"] = time.perf_counter() - t0
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(tmp / "pcr_curves.tsv", sep="\t", index=False, float_format="%.8g")
    if data.get("truth"):
        metrics["h2_realized"] = {k: data["truth"]["realized"][k] for k in ("h2_add", "h2_int")}
    metrics["seconds"] = seconds
    summary = _common_summary(cfg, data, device)
    summary.update({"selected_snps": [str(x) for x in t1["snp"][: h["n_snps"]]],
                    "selected_pairs": [[str(a), str(b)] for a, b in zip(t2["snp1"][: h["n_pairs"]],
                                                                         t2["snp2"][: h["n_pairs"]])],
                    "settings": h})
    return summary, metrics, figs


STEP_FUNCS = {"pheno": step_pheno, "1d": step_1d, "2d": step_2d, "heritability": step_heritability}
DEPS = {"pheno": ("input",), "1d": ("input", "pheno"), "2d": ("input", "pheno"), "heritability": ("input", "pheno")}


# ---------------------------------------------------------------------------------------------
# running, MLflow


def _log_mlflow(step: str, cfg: dict, experiment: str, tmp: Path, metrics: dict) -> str:
    import mlflow
    import yaml

    from pipelines import tracking
    from pipelines.stages.scan import flat_metrics

    tracking.setup(experiment)
    root = tracking.store_root().resolve()
    inputs, extra = [], {"stage": STAGE[step]}
    paths = [cfg[k] for k in DEPS[step]] + ([OUT["1d"], OUT["2d"]] if step == "heritability" else [])
    for x in paths:
        f = Path(x).resolve()
        if f.exists() and (f == root or root in f.parents):
            inputs.append(f)
        else:
            extra[f"input.{Path(x).name}"] = str(x)
    tags = tracking.run_tags(inputs, params_text=yaml.safe_dump(cfg, sort_keys=True), extra=extra)
    with tracking.parent_run(STAGE[step], tags, tracking.flatten_params(cfg)) as run:
        mlflow.log_metrics({k.replace("/", "_"): float(v) for k, v in flat_metrics(metrics).items()})
        for f in sorted(tmp.iterdir()):
            if f.name.startswith("."):
                continue
            if f.is_dir():
                mlflow.log_artifacts(str(f), artifact_path=f.name)
            else:
                mlflow.log_artifact(str(f))
        return run.info.run_id


def run(args) -> int:
    cfg, experiment = load_config(args.params)
    step = args.step
    out = Path(OUT[step])
    t0, c0 = time.perf_counter(), _cpu_seconds()
    with atomic_dir(out) as tmp:
        summary, metrics, figs = STEP_FUNCS[step](cfg, tmp)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=_json) + "\n")
        metrics["seconds"]["total"] = time.perf_counter() - t0
        metrics["seconds"]["cpu"] = _cpu_seconds() - c0   # all threads and worker processes
        if not args.no_mlflow:
            metrics["mlflow_run_id"] = _log_mlflow(step, cfg, experiment, tmp, metrics)
        figs = {k: out / v.relative_to(tmp) for k, v in figs.items()}
    for name, src in figs.items():
        with atomic_path(Path(PLOTS) / name, suffix=".png") as dst:
            shutil.copyfile(src, dst)
    write_json(METRICS[step], metrics)
    print(f"ngg {step}: wrote {out}/ and {METRICS[step]} ({metrics['seconds']['total']:.1f} s)")
    return 0


def _cpu_seconds() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _json(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
