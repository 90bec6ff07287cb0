"""Scale benchmark of `epiflow encode` against `bcftools query -f '[%GT]\\n'` on the same file.

Generates (seeded) an annotated VCF.gz shaped like a real exome cohort: 4,000 samples x 200,000
variants by default, a rare-variant-dominated allele-frequency spectrum, ~2 % multi-allelic sites,
~8 % indels, 1 % missing calls, VEP-style CSQ annotations over 20,000 genes. Then, in the same run,
times `bcftools query -f '[%GT]\\n' FILE > /dev/null` and `epiflow encode` (a child process each,
peak RSS from wait4) and writes JSON to benchmarks/results/.

    python benchmarks/bench_encode.py                      # full size (about 5-10 minutes)
    python benchmarks/bench_encode.py --samples 500 --variants 20000 --keep

Goal (issue 3): encode wall time <= 2x bcftools', peak RSS < 4 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CSQ_FORMAT = "Allele|Consequence|IMPACT|SYMBOL|Gene|BIOTYPE"
SNV_TERMS = [("missense_variant", 30), ("synonymous_variant", 20), ("intron_variant", 20),
             ("3_prime_UTR_variant", 6), ("5_prime_UTR_variant", 3), ("splice_region_variant&intron_variant", 3),
             ("stop_gained", 2), ("upstream_gene_variant", 5), ("downstream_gene_variant", 4),
             ("missense_variant&splice_region_variant", 3), ("intron_variant&non_coding_transcript_variant", 3),
             ("stop_lost", 1)]
INDEL_TERMS = [("frameshift_variant", 40), ("inframe_deletion", 15), ("inframe_insertion", 10),
               ("intron_variant", 30), ("splice_acceptor_variant", 5)]


def _pick(rng, table, size):
    names = [t for t, _ in table]
    w = np.array([x for _, x in table], float)
    return np.array(names)[rng.choice(len(names), size=size, p=w / w.sum())]


def generate(path: Path, sheet: Path, n_samples: int, n_variants: int, seed: int = 1, threads: int = 2) -> dict:
    """Write a bgzipped annotated VCF and its sample sheet; returns a description."""
    rng = np.random.default_rng(seed)
    n_genes = 20000
    genes = np.array([f"G{i:05d}" for i in range(n_genes)])
    pos = (np.sort(rng.choice(3_000_000_000 // 20 - 1, size=n_variants, replace=False)) + 1) * 20
    chrom_len = 250_000_000
    chroms = pos // chrom_len + 1
    local = pos % chrom_len + 1
    # allele frequency: rare-dominated (most variants have a handful of carriers)
    af = np.clip(rng.beta(0.12, 6.0, size=n_variants), 0.5 / n_samples, 0.5)
    multi = rng.random(n_variants) < 0.02
    indel = rng.random(n_variants) < 0.08
    gene_of = np.minimum((np.arange(n_variants) * n_genes) // n_variants, n_genes - 1)
    snv_terms = _pick(rng, SNV_TERMS, n_variants)
    indel_terms = _pick(rng, INDEL_TERMS, n_variants)
    bases = np.array(list("ACGT"))

    header = ["##fileformat=VCFv4.2", '##FILTER=<ID=PASS,Description="All filters passed">',
              '##FILTER=<ID=LowQual,Description="Low quality">']
    header += [f"##contig=<ID=chr{c},length={chrom_len}>" for c in range(1, int(chroms.max()) + 1)]
    header += [f'##INFO=<ID=CSQ,Number=.,Type=String,Description="Consequence annotations from Ensembl VEP. '
               f'Format: {CSQ_FORMAT}">',
               '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
               "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t"
               + "\t".join(f"S{i:05d}" for i in range(n_samples))]
    row = np.frombuffer(("0/0\t" * n_samples).encode(), dtype=np.uint8).copy()
    row[-1] = ord("\n")
    codes = {k: np.frombuffer(k.encode(), np.uint8) for k in ("0/1", "1/1", "./.", "1/2", "0/2")}
    sheet.write_text("sample_id\tstatus\tsex\n" + "".join(
        f"S{i:05d}\t{'case' if rng.random() < 0.87 else 'control'}\t{'MF'[i % 2]}\n" for i in range(n_samples)))
    proc = subprocess.Popen(["bgzip", "-c", "-@", str(threads)], stdin=subprocess.PIPE,
                            stdout=open(path, "wb"))
    w = proc.stdin
    w.write(("\n".join(header) + "\n").encode())
    n_carrier_calls = 0
    for i in range(n_variants):
        g = row.copy()
        p = af[i]
        u = rng.random(n_samples)
        het = np.flatnonzero(u < 2 * p * (1 - p))
        hom = np.flatnonzero((u >= 2 * p * (1 - p)) & (u < 2 * p * (1 - p) + p * p))
        miss = np.flatnonzero(rng.random(n_samples) < 0.01)
        for idx, code in ((het, "0/1"), (hom, "1/1"), (miss, "./.")):
            if len(idx):
                off = (idx * 4)[:, None] + np.arange(3)
                g[off] = codes[code]
        ref = bases[rng.integers(4)]
        gene = genes[gene_of[i]]
        if indel[i]:
            if rng.random() < 0.5:
                ln = int(rng.integers(1, 7))
                ref_s, alt_s, allele = ref + "".join(rng.choice(bases, ln)), ref, "-"
            else:
                ins = "".join(rng.choice(bases, int(rng.integers(1, 7))))
                ref_s, alt_s, allele = ref, ref + ins, ins
            term = indel_terms[i]
        else:
            ref_s = ref
            alt_s = allele = bases[(list("ACGT").index(ref) + 1 + rng.integers(3)) % 4]
            term = snv_terms[i]
        csq = f"{allele}|{term}|MODERATE|{gene}|ENSG{gene_of[i]:011d}|protein_coding"
        alts = alt_s
        if multi[i] and not indel[i]:
            alt2 = bases[(list("ACGT").index(ref) + 1 + (list("ACGT").index(alt_s) + 1) % 3) % 4]
            if alt2 in (ref_s, alt_s):
                alt2 = next(b for b in "ACGT" if b not in (ref_s, alt_s))
            alts = f"{alt_s},{alt2}"
            csq += f",{alt2}|stop_gained|HIGH|{gene}|ENSG{gene_of[i]:011d}|protein_coding"
            some = het[: max(1, len(het) // 3)]
            if len(some):
                off = (some * 4)[:, None] + np.arange(3)
                g[off] = codes["0/2"]
        n_carrier_calls += len(het) + len(hom)
        filt = "LowQual" if rng.random() < 0.03 else "PASS"
        w.write(f"chr{chroms[i]}\t{local[i]}\t.\t{ref_s}\t{alts}\t50\t{filt}\tCSQ={csq}\tGT\t".encode())
        w.write(g.tobytes())
    w.close()
    if proc.wait() != 0:
        raise SystemExit("bgzip failed")
    return {"n_samples": n_samples, "n_variants": n_variants, "n_genes": n_genes, "seed": seed,
            "carrier_calls": int(n_carrier_calls), "bytes_gz": path.stat().st_size}


def timed(cmd, stdout=subprocess.DEVNULL, env=None) -> dict:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({rc}):\n{err[-2000:]}")
    return {"wall_s": round(wall, 3), "user_s": round(ru.ru_utime, 3), "sys_s": round(ru.ru_stime, 3),
            "peak_rss_mb": round(ru.ru_maxrss / 1024, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--variants", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="htslib threads for encode (default: none)")
    ap.add_argument("--workdir", default=None, help="where to write the VCF (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_encode.json"))
    args = ap.parse_args(argv)
    for tool in ("bgzip", "bcftools"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench_encode: {tool} not found (apt-get install bcftools tabix)")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_encode."))
    work.mkdir(parents=True, exist_ok=True)
    vcf, sheet = work / "cohort.vcf.gz", work / "samples.tsv"
    try:
        t0 = time.perf_counter()
        desc = generate(vcf, sheet, args.samples, args.variants, args.seed)
        gen_s = time.perf_counter() - t0
        print(f"generated {vcf} ({desc['bytes_gz'] / 1e6:.0f} MB) in {gen_s:.0f} s", file=sys.stderr)
        # warm the page cache for both tools alike
        with open(vcf, "rb") as fh:
            while fh.read(1 << 24):
                pass
        bcf = timed(["bcftools", "query", "-f", "[%GT]\\n", str(vcf)])
        print(f"bcftools query: {bcf}", file=sys.stderr)
        cmd = [sys.executable, "-m", "pipelines.cli", "encode", "--vcf", str(vcf), "--samples", str(sheet),
               "--out", str(work / "encoded"), "--metrics", str(work / "encode.json"), "--quiet",
               "--params", str(work / "none.yaml")]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        enc = timed(cmd, env=env)
        print(f"epiflow encode: {enc}", file=sys.stderr)
        summary = json.loads((work / "encode.json").read_text())
        result = {
            "benchmark": "encode_vs_bcftools_query",
            "data": desc, "generate_s": round(gen_s, 1),
            "bcftools_query": bcf, "epiflow_encode": enc,
            "ratio_wall": round(enc["wall_s"] / bcf["wall_s"], 3),
            # CPU time (user + sys): the fairer ratio on a machine shared with other work
            "ratio_cpu": round((enc["user_s"] + enc["sys_s"]) / max(bcf["user_s"] + bcf["sys_s"], 1e-9), 3),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "goal": {"ratio_wall_max": 2.0, "peak_rss_mb_max": 4096},
            "meets_goal": bool(enc["wall_s"] <= 2 * bcf["wall_s"] and enc["peak_rss_mb"] < 4096),
            "encode_summary": {k: summary[k] for k in ("n_records", "n_alleles", "n_counted", "n_genes",
                                                       "counts_nnz", "variants_nnz", "skipped")},
            "threads": args.threads,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(),
                        "bcftools": subprocess.run(["bcftools", "--version"], capture_output=True,
                                                   text=True).stdout.splitlines()[0]},
        }
        out = Path(args.out)
        sys.path.insert(0, str(REPO))
        from pipelines.atomic import write_json

        write_json(out, result)
        print(json.dumps({k: result[k] for k in ("ratio_wall", "ratio_cpu", "meets_goal")} |
                         {"bcftools_s": bcf["wall_s"], "encode_s": enc["wall_s"],
                          "encode_rss_mb": enc["peak_rss_mb"]}))
        print(f"-> {out}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
