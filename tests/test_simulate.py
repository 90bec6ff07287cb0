"""The embedded cohort generator: files, formats, determinism, planted signal, argument checks."""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import EpiflowError
from models.simulate.cohort import simulate_cohort

FILES = ("cohort.vcf.gz", "cohort.vcf.gz.tbi", "samples.tsv", "genesets.gmt", "truth.json")
CLASSES16 = {
    "UTR3", "UTR5", "splicing", "upstream", "downstream", "intronic", "ncRNA_intronic",
    "ncRNA_exonic", "ncRNA_splicing", "nonframeshift_insertion", "frameshift_insertion",
    "nonframeshift_deletion", "frameshift_deletion", "stoploss", "stopgain", "nonsynonymous_SNV",
}
SMALL = dict(n_samples=200, n_genes=100, seed=11)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _class_of(consequence: str, biotype: str, ref: str, alt: str) -> str | None:
    """ANNOVAR-style class of one CSQ entry, written independently of the generator's tables."""
    t = set(consequence.split("&"))
    nc = "non_coding_transcript_variant" in t or "non_coding_transcript_exon_variant" in t \
        or biotype not in ("protein_coding", "")
    if "frameshift_variant" in t:
        return "frameshift_insertion" if len(alt) > len(ref) else "frameshift_deletion"
    for term, cls in (("stop_gained", "stopgain"), ("stop_lost", "stoploss"),
                      ("inframe_insertion", "nonframeshift_insertion"),
                      ("inframe_deletion", "nonframeshift_deletion"),
                      ("missense_variant", "nonsynonymous_SNV")):
        if term in t:
            return cls
    if "synonymous_variant" in t or "intergenic_variant" in t:
        return None
    splice = bool(t & {"splice_acceptor_variant", "splice_donor_variant", "splice_region_variant"})
    if nc:
        if "non_coding_transcript_exon_variant" in t:
            return "ncRNA_exonic"
        return "ncRNA_splicing" if splice else "ncRNA_intronic"
    if splice:
        return "splicing"
    for term, cls in (("5_prime_UTR_variant", "UTR5"), ("3_prime_UTR_variant", "UTR3"),
                      ("intron_variant", "intronic"), ("upstream_gene_variant", "upstream"),
                      ("downstream_gene_variant", "downstream")):
        if term in t:
            return cls
    raise AssertionError(f"unexpected consequence {consequence!r}")


def _read_cohort(d: Path):
    """Parse the cohort back: records, per-(gene, class) carriers, samples, truth, gene sets."""
    from cyvcf2 import VCF

    vcf = VCF(str(d / "cohort.vcf.gz"))
    desc = vcf.get_header_type("CSQ")["Description"]
    fields = desc.split("Format: ")[1].strip('"').split("|")
    ix = {f: i for i, f in enumerate(fields)}
    samples = list(vcf.samples)
    n = len(samples)
    records = []
    carriers: dict[tuple[str, str], np.ndarray] = {}
    for rec in vcf:
        gt = rec.genotype.array()[:, :2]
        csq = rec.INFO.get("CSQ")
        entries = [e.split("|") for e in csq.split(",")]
        records.append((rec.CHROM, rec.POS, rec.REF, list(rec.ALT), entries, gt))
        vep_alleles = list(rec.ALT)
        if all(a[0] == rec.REF[0] for a in rec.ALT) and (len(rec.REF) > 1 or any(len(a) > 1 for a in rec.ALT)):
            vep_alleles = [a[1:] or "-" for a in rec.ALT]
        for e in entries:
            ai = vep_alleles.index(e[ix["Allele"]])
            cls = _class_of(e[ix["Consequence"]], e[ix["BIOTYPE"]], rec.REF, rec.ALT[ai])
            if cls is None:
                continue
            car = (gt == ai + 1).any(axis=1)
            key = (e[ix["SYMBOL"]], cls)
            carriers.setdefault(key, np.zeros(n, np.int64))
            carriers[key] += car
    with open(d / "samples.tsv", newline="") as fh:
        sheet = list(csv.DictReader(fh, delimiter="\t"))
    truth = json.loads((d / "truth.json").read_text())
    gmt = {}
    for line in (d / "genesets.gmt").read_text().splitlines():
        f = line.split("\t")
        gmt[f[0]] = f[2:]
    return dict(vcf_samples=samples, desc=desc, records=records, carriers=carriers, sheet=sheet,
                truth=truth, gmt=gmt)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim") / "a"
    summary = simulate_cohort(d, progress=False, **SMALL)
    return d, summary, _read_cohort(d)


def test_files_and_determinism_across_processes(small, tmp_path):
    d, summary, _ = small
    assert sorted(p.name for p in d.iterdir()) == sorted(FILES)   # no temporary leftovers
    other = tmp_path / "b"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
            "from models.simulate.cohort import simulate_cohort; "
            f"simulate_cohort({str(other)!r}, progress=False, **{SMALL!r})")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONHASHSEED": "123", "PATH": "",
                                                                  "OMP_NUM_THREADS": "1", "LC_ALL": "C"})
    for name in FILES:
        assert _sha(d / name) == _sha(other / name), name
    # a different seed gives a different cohort
    third = tmp_path / "c"
    simulate_cohort(third, progress=False, **{**SMALL, "seed": 12})
    assert _sha(third / "cohort.vcf.gz") != _sha(d / "cohort.vcf.gz")


def test_vcf_format(small):
    d, summary, c = small
    import pysam

    raw = pysam.BGZFile(str(d / "cohort.vcf.gz")).read().decode()
    header = [line for line in raw.splitlines() if line.startswith("##")]
    assert header[0] == "##fileformat=VCFv4.2"
    assert "##contig=<ID=chr1,length=248956422,assembly=GRCh38>" in header
    assert "##contig=<ID=chrX,length=156040895,assembly=GRCh38>" in header
    assert "Consequence annotations from Ensembl VEP. Format: " \
           "Allele|Consequence|IMPACT|SYMBOL|Gene|Feature_type|Feature|BIOTYPE" in c["desc"]
    assert c["vcf_samples"] == [r["sample_id"] for r in c["sheet"]]
    recs = c["records"]
    assert len(recs) == summary["n_records"] > 1000
    # sorted by chromosome (GRCh38 order) then position, positions inside the contig
    order = {f"chr{i}": i for i in range(1, 23)}
    keys = [(order[r[0]], r[1]) for r in recs]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # tabix index answers region queries
    tbx = pysam.TabixFile(str(d / "cohort.vcf.gz"))
    first = recs[0]
    hits = list(tbx.fetch(first[0], first[1] - 1, first[1]))
    assert hits and hits[0].split("\t")[1] == str(first[1])
    # genotypes: unphased, a little missingness, rare variants dominate
    body = [line for line in raw.splitlines() if not line.startswith("#")]
    gts = [g for line in body[:300] for g in line.split("\t")[9:]]
    assert "|" not in "".join(gts) and set(gts) <= {"0/0", "0/1", "1/1", "./.", "0/2", "1/2", "2/2"}
    calls = np.concatenate([r[5] for r in recs])
    miss = np.mean(calls[:, 0] < 0)
    assert 0.001 < miss < 0.02
    ac = np.array([(r[5] > 0).sum() for r in recs])
    af = ac / np.array([max(1, (r[5] >= 0).sum()) for r in recs])
    assert np.bincount(ac).argmax() == 1 and np.mean(ac <= 2) > 0.25   # singletons lead the spectrum
    assert 0.05 < np.mean(af > 0.05) < 0.6
    # multi-allelic records with one CSQ entry set per ALT allele
    multi = [r for r in recs if len(r[3]) == 2]
    assert multi
    for r in multi:
        assert {e[0] for e in r[4]} == set(r[3]) and (r[5] == 2).any()
    # two genes in one CSQ, '&'-joined consequences
    assert any(len({e[3] for e in r[4] if e[3]}) >= 2 for r in recs)
    assert any("&" in e[1] and "splice_region_variant" in e[1] for r in recs for e in r[4])


def test_consequence_classes_and_allele_lengths(small):
    _, _, c = small
    seen = {}
    for chrom, pos, ref, alts, entries, _ in c["records"]:
        for e in entries:
            alt = alts[0] if len(alts) == 1 else next(a for a in alts if a == e[0])
            cls = _class_of(e[1], e[7], ref, alt)
            seen[cls] = seen.get(cls, 0) + 1
            diff = len(alt) - len(ref)
            if cls in ("frameshift_insertion", "frameshift_deletion"):
                assert diff % 3 != 0 and (diff > 0) == (cls == "frameshift_insertion"), (ref, alt)
            elif cls in ("nonframeshift_insertion", "nonframeshift_deletion"):
                assert diff != 0 and diff % 3 == 0 and (diff > 0) == (cls == "nonframeshift_insertion")
            elif cls in ("nonsynonymous_SNV", "stopgain", "stoploss", "splicing", "ncRNA_exonic"):
                assert diff == 0 and len(ref) == 1
            if "intergenic_variant" in e[1]:
                assert e[3] == "" and e[2] == "MODIFIER"
            else:
                assert e[3] and e[4].startswith("ENSG") and e[5] == "Transcript"
    assert CLASSES16 <= set(seen), CLASSES16 - set(seen)
    assert None in seen                                    # synonymous / intergenic, not counted
    # exome-like proportions: missense and intronic abundant, loss of function rare
    assert seen["intronic"] > 10 * seen["stopgain"]
    assert seen["nonsynonymous_SNV"] > 5 * seen["frameshift_deletion"]


def test_samples_truth_and_gene_sets(small):
    _, summary, c = small
    truth, sheet, gmt = c["truth"], c["sheet"], c["gmt"]
    assert {r["status"] for r in sheet} == {"case", "control"}
    assert {r["sex"] for r in sheet} == {"male", "female"}
    frac = np.mean([r["status"] == "case" for r in sheet])
    assert abs(frac - 0.87) <= 1 / len(sheet)
    assert truth["liability"]["case_fraction_realised"] == pytest.approx(frac)
    assert truth["generator"]["version"] and truth["parameters"]["seed"] == SMALL["seed"]
    for key in ("h2_additive", "h2_epistatic", "n_additive_genes", "n_epistatic_pairs", "variants_per_gene"):
        assert key in truth["parameters"]
    vcf_genes = {g for (g, _cls) in c["carriers"]}
    add = truth["additive_genes"]
    assert len(add) == truth["parameters"]["n_additive_genes"] and all(a["gene"] in vcf_genes for a in add)
    pairs = truth["epistatic_pairs"]
    assert len(pairs) == truth["parameters"]["n_epistatic_pairs"]
    assert any(p["type"] == "xor" for p in pairs)
    assert {p["sign"] for p in pairs if p["type"] == "product"} == {-1, 1}
    for p in pairs:
        a, b = p["genes"]
        assert a in vcf_genes and b in vcf_genes
        assert a in gmt[p["pathway"]] and b in gmt[p["pathway"]]
    # GMT: KEGG sets restricted to cohort genes, none empty; about a third of genes are members
    assert gmt and all(genes for genes in gmt.values())
    members = {g for genes in gmt.values() for g in genes}
    assert members <= vcf_genes
    assert 0.2 < len(members) / len(vcf_genes) < 0.5
    h2 = truth["liability"]["h2"]
    assert h2["additive"] > 0.15 and h2["epistatic"] > 0.15


def _burden(carriers, gene, weights):
    return sum(w * carriers.get((gene, cls), 0) for cls, w in weights.items())


def test_planted_signal_is_recoverable_from_the_vcf(tmp_path):
    """truth.json describes the phenotype exactly as a function of the VCF; and it is learnable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    d = tmp_path / "sig"
    simulate_cohort(d, n_samples=600, n_genes=60, case_fraction=0.5, seed=5, progress=False,
                    h2_additive=0.6, h2_epistatic=0.2, n_additive_genes=3, n_epistatic_pairs=2)
    c = _read_cohort(d)
    truth = c["truth"]
    weights = truth["class_weights"]
    y = np.array([r["status"] == "case" for r in c["sheet"]])
    liab = np.zeros(len(y))
    for a in truth["additive_genes"]:
        b = _burden(c["carriers"], a["gene"], weights)
        assert b.mean() == pytest.approx(a["burden_mean"], rel=1e-6)
        assert b.std() == pytest.approx(a["burden_sd"], rel=1e-6)
        liab += a["effect"] * (b - a["burden_mean"]) / a["burden_sd"]
    for p in truth["epistatic_pairs"]:
        ba, bb = (_burden(c["carriers"], g, weights) for g in p["genes"])
        if p["type"] == "xor":
            dmg = {k: 1.0 for k in truth["damaging_classes"]}
            da, db = (_burden(c["carriers"], g, dmg) > 0 for g in p["genes"])
            term = (da ^ db).astype(float)
        else:
            za = (ba - p["gene_a"]["burden_mean"]) / p["gene_a"]["burden_sd"]
            zb = (bb - p["gene_b"]["burden_mean"]) / p["gene_b"]["burden_sd"]
            term = za * zb
        liab += p["effect"] * (term - p["term_mean"]) / p["term_sd"]
    from scipy.stats import mannwhitneyu

    auc = mannwhitneyu(liab[y], liab[~y]).statistic / (y.sum() * (~y).sum())
    assert auc == pytest.approx(truth["liability"]["oracle_auc"]["additive_plus_epistatic"], abs=1e-5)
    # an additive per-gene model learns something under cross-validation
    genes = sorted({g for g, _ in c["carriers"]})
    X = np.stack([_burden(c["carriers"], g, {k: 1.0 for k in weights}) for g in genes], axis=1)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    cv_auc = cross_val_score(LogisticRegression(C=0.1, max_iter=2000), (X - X.mean(0)) / (X.std(0) + 1e-9),
                             y, cv=cv, scoring="roc_auc").mean()
    assert cv_auc > 0.65


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_samples=5), "n_samples must be"),
    (dict(case_fraction=1.0), "case_fraction must be in"),
    (dict(case_fraction=0), "case_fraction must be in"),
    (dict(n_genes=10**6), "n_genes=1000000 is more than"),
    (dict(n_genes="many"), "n_genes must be an integer"),
    (dict(h2_additive=0.6, h2_epistatic=0.5), "h2_additive \\+ h2_epistatic must be < 1"),
    (dict(bogus=1), "unknown parameter 'bogus'"),
    (dict(class_weights={"exonic": 1}), "unknown class 'exonic'"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(EpiflowError, match=match) as exc:
        simulate_cohort(tmp_path / "x", progress=False, **kwargs)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "x").exists()


def test_too_many_causal_genes_is_a_clear_error(tmp_path):
    with pytest.raises(EpiflowError, match="n_additive_genes=90"):
        simulate_cohort(tmp_path / "x", n_samples=40, n_genes=20, n_additive_genes=90,
                        n_epistatic_pairs=0, progress=False)
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path, capsys):
    from pipelines.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("simulate:\n  seed: 3\n  n_samples: 100\n  n_genes: 400\n  n_epistatic_pairs: 3\n")
    rc = main(["simulate", "--out", str(tmp_path / "out"), "--params", str(params), "--n-genes", "50",
               "--case-fraction", "0.6", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "cohort.vcf.gz" in out and "case fraction 0.600" in out
    truth = json.loads((tmp_path / "out" / "truth.json").read_text())
    assert truth["parameters"]["n_genes"] == 50 and truth["parameters"]["seed"] == 3
    assert len(truth["epistatic_pairs"]) == 3
    assert main(["simulate", "--out", str(tmp_path / "o2"), "--params", str(params),
                 "--case-fraction", "1.5", "--no-progress"]) == 2


@pytest.mark.slow
def test_default_cohort_is_learnable(tmp_path):
    """At the default 2,000 x 2,000 an additive per-gene model clears 0.68 ROC AUC (3-fold CV),
    and the planted pair terms add to what the additive genes alone give."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = tmp_path / "default"
    simulate_cohort(d, progress=False)
    c = _read_cohort(d)
    truth = c["truth"]
    y = np.array([r["status"] == "case" for r in c["sheet"]])
    genes = sorted({g for g, _ in c["carriers"]})
    ones = {k: 1.0 for k in truth["class_weights"]}
    X = np.stack([_burden(c["carriers"], g, ones) for g in genes], axis=1).astype(float)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    l1 = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, l1_ratio=1.0, solver="liblinear"))
    auc_additive = cross_val_score(l1, X, y, cv=cv, scoring="roc_auc").mean()
    assert auc_additive > 0.68
    # oracle features: the planted genes' weighted burdens, then also the planted pair terms
    w = truth["class_weights"]
    B = {g: _burden(c["carriers"], g, w) for g in
         [a["gene"] for a in truth["additive_genes"]] + [g for p in truth["epistatic_pairs"] for g in p["genes"]]}
    add = np.stack([B[a["gene"]] for a in truth["additive_genes"]], axis=1)
    extra = []
    dmg = {k: 1.0 for k in truth["damaging_classes"]}
    for p in truth["epistatic_pairs"]:
        za, zb = ((B[g] - B[g].mean()) / B[g].std() for g in p["genes"])
        da, db = (_burden(c["carriers"], g, dmg) > 0 for g in p["genes"])
        extra += [za, zb, za * zb, (da ^ db).astype(float)]
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    auc_a = cross_val_score(lr, add, y, cv=cv, scoring="roc_auc").mean()
    auc_ae = cross_val_score(lr, np.column_stack([add] + extra), y, cv=cv, scoring="roc_auc").mean()
    assert auc_ae > auc_a + 0.03
