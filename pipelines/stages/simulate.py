"""`epiflow simulate`: write the embedded simulated cohort (VCF + index, samples, GMT, truth).

Parameters come from the ``simulate:`` section of params.yaml; ``--n-samples``, ``--n-genes``,
``--case-fraction`` and ``--seed`` override it.
"""
from __future__ import annotations

import time
from pathlib import Path

from pipelines.argtypes import count, renamed
from pipelines.atomic import MARKER, atomic_dir, check_output_dir, precheck_output_dir
from pipelines.params import load_params, section


def add_arguments(p):
    p.add_argument("--out", default="data", help="output folder (default: data)")
    p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    p.add_argument("--n-samples", type=count(1), default=None, help="number of individuals (overrides params)")
    p.add_argument("--n-genes", type=count(1), default=None, help="number of genes (overrides params)")
    p.add_argument("--case-fraction", type=float, default=None, metavar="FRACTION",
                   help="fraction of cases, liability threshold model (overrides params)")
    p.add_argument("--seed", type=count(0), default=None, help="random seed (overrides params)")
    p.add_argument("--quiet", dest="no_progress", action="store_true", help="no progress bar")
    renamed(p, "--no-progress", "--quiet", flag_value=True)      # the spelling of earlier releases


def run(args) -> int:
    from models.simulate.cohort import simulate_cohort

    params = dict(section(load_params(args.params), "simulate", args.params))
    for key in ("n_samples", "n_genes", "case_fraction", "seed"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    out = Path(args.out)
    _precheck_out(out)
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        s = simulate_cohort(tmp, progress=not args.no_progress, **params)
    s["out_dir"] = str(out)
    took = time.perf_counter() - t0
    files = ", ".join(f"{name} ({_size(b)})" for name, b in s["files"].items())
    h2 = s["h2_liability"]
    print(f"simulate: wrote {files} to {s['out_dir']} in {took:.1f} s: {s['n_samples']} samples "
          f"({s['n_cases']} cases, {s['n_controls']} controls, case fraction {s['case_fraction']:.3f}), "
          f"{s['n_records']} VCF records ({s['n_multiallelic_records']} multi-allelic) in "
          f"{s['n_genes_in_vcf']} genes; liability h2 additive {h2['additive']:.2f}, epistatic "
          f"{h2['epistatic']:.2f}; planted effects in truth.json.")
    return 0


FILES = ("genesets.gmt", "samples.tsv", "cohort.vcf.gz", "cohort.vcf.gz.tbi", "truth.json")


def _precheck_out(out: Path) -> None:
    """The output folder follows the rules of every epiflow output (:mod:`pipelines.atomic`): a
    new or empty folder, a previous epiflow output, or a previous cohort of ``epiflow simulate``
    without the marker (restored by DVC: its files and nothing else, truth.json among them); a
    folder holding anything else (a user's own samples.tsv) is refused before any work."""
    check_output_dir(out)
    if out.is_dir():
        names = {p.name for p in out.iterdir()}
        if "truth.json" in names and names <= set(FILES) | {MARKER}:
            return
    precheck_output_dir(out)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
