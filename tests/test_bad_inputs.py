"""Bad input, at the command line: every case below was found by scripts/probe_inputs.py as a
crash, a traceback, htslib's own lines on stderr, exit 0 on a broken file, a file changed outside
the output or a partial output left behind. Each now ends with exit status 2, exactly one
``epiflow <cmd>: error: ...`` line on stderr (fd 2 is captured, so htslib's ``[E::...]`` lines
count too) and not one byte changed in the project.

Every command runs in process through ``pipelines.cli.main`` in a copy of a small project
(inputs/ with a VCF, a sample sheet and a PLINK fileset; an encoded cohort, its splits and one
trained model), hashed before and after.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from plink_files import write_bed

TESTS = Path(__file__).resolve().parent
SMALL_VCF = TESTS / "data" / "vcf" / "small_csq.vcf"
SMALL_SHEET = TESTS / "data" / "vcf" / "small_samples.tsv"
ENC = ["encode", "--vcf", "inputs/in.vcf", "--samples", "inputs/samples.tsv", "--out", "out/enc",
       "--metrics", "out/enc.json", "--snp-dosage", "out/dos", "--quiet"]
TRAIN = ["train", "--model", "sgd_l2", "--encoded", "encoded", "--splits", "splits.npz", "--out", "out/train",
         "--metrics", "out/train.json", "--plots", "out/roc.json", "--no-mlflow", "--quiet", "--jobs", "1"]
REPORT = ["report", "--no-mlflow", "--train-dir", "work/train", "--metrics-dir", "metrics/train",
          "--splits", "splits.npz", "--roc-dir", "plots/roc", "--out", "out/rep", "--metrics", "out/rep.json"]
COMPARE = ["compare", "sgd_l2", "rf_genes", "--train-dir", "work/train", "--metrics-dir", "metrics/train",
           "--out", "out/cmp"]
SCAN = ["scan", "--bfile", "inputs/g", "--pheno", "inputs/y.txt", "--out", "out/scan", "--device", "cpu",
        "--no-plots", "--threads", "1"]
SPLITS = ["splits", "--samples", "encoded/samples.tsv", "--out", "out/splits.npz", "--metrics", "out/splits.json"]
TUNE = ["tune", "--model", "sgd_l2", "--n-trials", "1", "--no-mlflow", "--quiet", "--encoded", "encoded",
        "--splits", "splits.npz", "--storage", "journal:out/tune.log", "--metrics", "out/tune.json"]


# ------------------------------------------------------------------------------------ project
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The project every test copies: built once (one sgd_l2 and one rf_genes train run)."""
    from pipelines.cli import main
    from test_workflows_cv import write_project

    d = tmp_path_factory.mktemp("bad_inputs") / "proj"
    inputs = d / "inputs"
    inputs.mkdir(parents=True)
    write_project(d)                      # encoded/, splits.npz, params.yaml
    shutil.copy(SMALL_VCF, inputs / "in.vcf")
    shutil.copy(SMALL_SHEET, inputs / "samples.tsv")
    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, size=(60, 40)).astype(np.int8)
    write_bed(inputs / "g", X)
    (inputs / "y.txt").write_text("".join(f"S{i:02d} S{i:02d} {v:.4f}\n" for i, v in enumerate(rng.normal(size=60))))
    old = os.getcwd()
    env = os.environ.get("EPIFLOW_ROOT")
    os.environ["EPIFLOW_ROOT"] = str(d)
    os.chdir(d)
    try:
        for m in ("sgd_l2", "rf_genes"):
            assert main(["train", "--model", m, "--encoded", "encoded", "--splits", "splits.npz", "--no-mlflow",
                         "--quiet", "--jobs", "1"]) == 0
    finally:
        os.chdir(old)
        if env is None:
            os.environ.pop("EPIFLOW_ROOT")
        else:
            os.environ["EPIFLOW_ROOT"] = env
    return d


@pytest.fixture
def project(base, tmp_path, monkeypatch):
    d = tmp_path / "proj"
    shutil.copytree(base, d)
    monkeypatch.setenv("EPIFLOW_ROOT", str(d))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(d)
    return d


def _tree(root: Path) -> dict[str, str]:
    """Every file (sha1) and folder of the project."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def refused(project: Path, capfd, argv, *, want: str | None = None) -> str:
    """Run ``argv``: exit 2, one ``epiflow <cmd>: error:`` line on stderr (fd level) besides the
    command's own ``<cmd>: ...`` log lines, nothing changed in the project; returns the line."""
    from pipelines.cli import main

    capfd.readouterr()
    before = _tree(project)
    rc = main(list(argv))
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(f"{argv[0]}: ")]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"epiflow {argv[0]}: error: "), err
    after = _tree(project)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))
    if want is not None:
        assert want in lines[0], lines[0]
    return lines[0]


def _vcf_lines():
    lines = SMALL_VCF.read_text().splitlines(keepends=True)
    return [x for x in lines if x.startswith("##")], next(x for x in lines if x.startswith("#CHROM")), \
        [x for x in lines if not x.startswith("#")]


def _put_vcf(project: Path, meta, chrom, recs, name="in.vcf") -> None:
    (project / "inputs" / name).write_text("".join(meta) + chrom + "".join(recs))


def _edit_record(recs, i, col, value):
    f = recs[i].rstrip("\n").split("\t")
    f[col] = value
    recs = list(recs)
    recs[i] = "\t".join(f) + "\n"
    return recs


# --------------------------------------------------------------------------- 1, 3, 4, 6: VCF
# record 6 (chr3:700, intergenic_variant, no gene) counts for nothing: the encode pass used to
# skip its genotypes and only the SNP dosage pass, after work/encoded was written, met them
VCF_CASES = {
    "chrom_line_twice": (lambda m, c, r: (m, c, [c] + r), "is the #CHROM line repeated?"),
    "gt_allele_out_of_range": (lambda m, c, r: (m, c, _edit_record(r, 6, 9, "0/3")), "GT refers to allele 3"),
    "record_too_many_samples": (lambda m, c, r: (m, c, r[:2] + [r[2].rstrip("\n") + "\t0/0\t0/0\n"] + r[3:]),
                                "17 columns, expected 15"),
    "pos_beyond_int32": (lambda m, c, r: (m, c, _edit_record(r, 1, 1, "99999999999")), "is beyond 2147483647"),
    "ref_empty": (lambda m, c, r: (m, c, _edit_record(r, 1, 3, "")), "REF is empty"),
    "alt_empty": (lambda m, c, r: (m, c, _edit_record(r, 1, 4, "")), "an ALT allele is empty"),
    "qual_not_a_number": (lambda m, c, r: (m, c, _edit_record(r, 1, 5, "abc")), "QUAL is not a number: 'abc'"),
    "csq_more_fields_than_format": (
        lambda m, c, r: (m, c, _edit_record(r, 1, 7, "CSQ=synonymous_variant|T|ENSG0001|GA|protein_coding|T1|x|y")),
        "CSQ entry has 8 fields, header Format has 6"),
    "gt_letters": (lambda m, c, r: (m, c, _edit_record(r, 1, 9, "A/B")), "invalid GT 'A/B'"),
    "spaces_for_tabs": (lambda m, c, r: (m, c, [x.replace("\t", " ") for x in r]), "1 tab-separated columns"),
}


@pytest.mark.parametrize("case", sorted(VCF_CASES))
def test_malformed_vcf_record(project, capfd, case):
    make, want = VCF_CASES[case]
    _put_vcf(project, *make(*_vcf_lines()))
    line = refused(project, capfd, ENC, want=want)
    assert "inputs/in.vcf:" in line


def test_haploid_call_refused_in_a_record_counted_nowhere(project, capfd):
    m, c, r = _vcf_lines()
    _put_vcf(project, m, c, _edit_record(r, 6, 9, "1"))
    refused(project, capfd, ENC + ["--haploid", "error"], want="haploid call(s) on chr3")


def _big_vcf(project: Path) -> Path:
    """The small VCF's records again and again (rising positions), bgzipped: a file long enough
    to be cut in the middle of its records."""
    import pysam

    m, c, r = _vcf_lines()
    recs = []
    for k in range(400):
        for x in r:
            f = x.split("\t")
            f[1] = str(int(f[1]) + 1000 * k)
            recs.append("\t".join(f))
    plain = project / "big.vcf"
    plain.write_text("".join(m) + c + "".join(recs))
    out = project / "inputs" / "big.vcf.gz"
    pysam.tabix_compress(str(plain), str(out), force=True)
    plain.unlink()
    return out


@pytest.mark.parametrize("damage", ["truncated", "corrupt_middle"])
def test_damaged_bgzf_is_named_without_htslib_lines(project, capfd, damage):
    gz = _big_vcf(project)
    data = gz.read_bytes()
    half = len(data) // 2
    gz.write_bytes(data[:half] if damage == "truncated" else data[:half] + bytes(range(64)) + data[half + 64:])
    line = refused(project, capfd, ENC[:2] + ["inputs/big.vcf.gz"] + ENC[3:])
    assert "truncated or corrupt compressed file (BGZF)" in line and "[E::" not in line


def test_garbage_index_is_named(project, capfd):
    gz = _big_vcf(project)
    Path(f"{gz}.tbi").write_bytes(bytes(np.random.default_rng(5).integers(0, 256, 900, dtype=np.uint8)))
    refused(project, capfd, ENC[:2] + ["inputs/big.vcf.gz"] + ENC[3:] + ["--region", "chr1"],
            want=f"cannot load the index inputs/big.vcf.gz.tbi")


def test_vcf_folder_is_a_folder(project, capfd):
    refused(project, capfd, ENC[:2] + ["inputs"] + ENC[3:], want="inputs: is a folder")


# ------------------------------------------------------------------------ 2: encode inputs
def test_binary_gtf(project, capfd):
    (project / "inputs" / "g.gtf").write_bytes(bytes(np.random.default_rng(6).integers(128, 256, 2000, dtype=np.uint8)))
    refused(project, capfd, ENC + ["--annotation", "gtf:inputs/g.gtf"], want="inputs/g.gtf: not a text GTF file")


def test_empty_subset_file(project, capfd):
    (project / "inputs" / "sub.txt").write_text("")
    refused(project, capfd, ENC + ["--subset", "inputs/sub.txt"], want="lists no sample id")


# --------------------------------------------------------------------- 2, 4: params files
@pytest.mark.parametrize("case", ["binary", "missing", "folder"])
def test_params_file(project, capfd, case):
    path = {"binary": "inputs/bad.yaml", "missing": "inputs/none.yaml", "folder": "inputs"}[case]
    if case == "binary":
        (project / path).write_bytes(bytes(range(128, 256)) * 8)
    want = {"binary": "not a text (YAML) file", "missing": "file not found", "folder": "is a folder"}[case]
    refused(project, capfd, SPLITS + ["--params", path], want=want)


@pytest.mark.parametrize("key,value,want", [
    ("lr", float("inf"), "lr must be a number > 0, got inf"),
    ("weight_decay", float("nan"), "weight_decay must be a number >= 0, got nan"),
    ("pathway_seed", -1, "pathway_seed must be an integer >= 0, got -1"),
])
def test_net_params_refuse_inf_nan_and_negative_seed(project, capfd, key, value, want):
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["models"]["logreg"][key] = value
    (project / "bad.yaml").write_text(yaml.safe_dump(p))
    refused(project, capfd, TRAIN[:2] + ["logreg"] + TRAIN[3:] + ["--params", "bad.yaml"], want=want)


def test_train_device_cuda_without_gpu(project, capfd):
    from pipelines.workflows.cv import _cuda_available

    if _cuda_available():
        pytest.skip("this machine has a CUDA device")
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["train"]["device"] = "cuda"
    (project / "bad.yaml").write_text(yaml.safe_dump(p))
    refused(project, capfd, TRAIN[:2] + ["logreg"] + TRAIN[3:] + ["--params", "bad.yaml"],
            want="device 'cuda' requested but no CUDA device is available")


def test_splits_seed_beyond_uint32(project, capfd):
    from pipelines.cli import main

    with pytest.raises(SystemExit) as e:
        main(SPLITS + ["--seed", str(2 ** 40)])
    err = capfd.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "must be an integer in [0, 4294967295]" in err[0]


def test_train_repeats_beyond_the_splits(project, capfd):
    refused(project, capfd, TRAIN + ["--repeats", "99"], want="repeats=99 but splits.npz holds 2 repeats")


# ---------------------------------------------------------------- 2, 4: phenotype tables
@pytest.mark.parametrize("case", ["inf", "ragged"])
def test_phenotype_table(project, capfd, case):
    rows = (project / "inputs" / "y.txt").read_text().splitlines()
    if case == "inf":
        rows[3] = rows[3].rsplit(" ", 1)[0] + " inf"
    else:
        rows[20] += " 7.0 8.0"
    (project / "inputs" / "y.txt").write_text("\n".join(rows) + "\n")
    want = {"inf": "inputs/y.txt:4: value 'inf'", "ragged": "inputs/y.txt:21: 5 fields where other rows have 3"}
    refused(project, capfd, SCAN, want=want[case])


def test_broken_truth_json_of_a_phenotype_folder(project, capfd):
    d = project / "inputs" / "ph"
    d.mkdir()
    (d / "pheno.tsv").write_text("IID\ty\n" + "".join(f"S{i:02d}\t{i % 3}.5\n" for i in range(60)))
    (d / "truth.json").write_text('{"snps": [1, 2')
    refused(project, capfd, SCAN[:4] + ["inputs/ph"] + SCAN[5:], want="inputs/ph/truth.json:1: not a valid")


def test_ingest_fileset_without_a_called_genotype(project, capfd):
    write_bed(project / "inputs" / "miss", np.full((20, 10), -1, np.int8))
    refused(project, capfd, ["ingest-bed", "--bfile", "inputs/miss", "--out", "out/ing", "--metrics", "out/ing.json"],
            want="no called genotype")


# --------------------------------------------------------------- 2: corrupt intermediates
@pytest.mark.parametrize("case", ["gene_counts_truncated", "gene_counts_empty", "variants_random", "samples_y_text"])
def test_corrupt_encoded_folder(project, capfd, case):
    enc = project / "encoded"
    if case == "gene_counts_truncated":
        (enc / "gene_counts.npz").write_bytes((enc / "gene_counts.npz").read_bytes()[:200])
        want = "encoded/gene_counts.npz: unreadable"
    elif case == "gene_counts_empty":
        (enc / "gene_counts.npz").write_bytes(b"")
        want = "encoded/gene_counts.npz: unreadable"
    elif case == "variants_random":
        (enc / "variants.npz").write_bytes(bytes(np.random.default_rng(17).integers(0, 256, 3000, dtype=np.uint8)))
        want = "encoded/variants.npz: unreadable"
    else:
        (enc / "samples.tsv").write_text((enc / "samples.tsv").read_text().replace("\t1\t", "\tyes\t"))
        want = "encoded/samples.tsv:"
    line = refused(project, capfd, TRAIN, want=want)
    if case == "samples_y_text":
        assert "y must be 0 (control) or 1 (case), got 'yes'" in line


@pytest.mark.parametrize("case", ["empty", "y_not_binary", "duplicate_ids"])
def test_splits_input_table(project, capfd, case):
    text = (project / "encoded" / "samples.tsv").read_text()
    bad = {"empty": "", "y_not_binary": text.replace("\t1\t", "\t7\t"),
           "duplicate_ids": text + text.splitlines()[1] + "\n"}[case]
    (project / "inputs" / "s.tsv").write_text(bad)
    want = {"empty": "empty file", "y_not_binary": "got '7'", "duplicate_ids": "appears twice"}[case]
    refused(project, capfd, ["splits", "--samples", "inputs/s.tsv"] + SPLITS[3:], want=want)


@pytest.mark.parametrize("case", ["folds_tsv_binary", "metrics_json_truncated", "roc_json_truncated"])
def test_report_damaged_train_outputs(project, capfd, case):
    path, data = {"folds_tsv_binary": ("work/train/sgd_l2/folds.tsv", bytes(range(128, 256)) * 6),
                  "metrics_json_truncated": ("metrics/train/sgd_l2.json", b'{"auc_mean": '),
                  "roc_json_truncated": ("plots/roc/sgd_l2.json", b'[{"fpr": 0')}[case]
    (project / path).write_bytes(data)
    refused(project, capfd, REPORT, want=path)
    assert not (project / "out").exists()


def test_compare_truncated_metrics_json(project, capfd):
    (project / "metrics" / "train" / "rf_genes.json").write_text('{"auc_mean": ')
    refused(project, capfd, COMPARE, want="metrics/train/rf_genes.json:1: not a valid metrics JSON")


# ------------------------------------------------------------------ 5, 6: output paths
@pytest.mark.parametrize("argv,want", [
    (ENC[:8] + ["inputs/samples.tsv"] + ENC[9:], "--metrics inputs/samples.tsv would overwrite the input"),
    (ENC[:10] + ["out/enc"] + ENC[11:], "must be two separate folders"),
    (ENC[:8] + ["out/f.txt/m.json"] + ENC[9:], "out/f.txt is a file, not a folder"),
    (SCAN + ["--metrics", "out/f.txt/m.json"], "out/f.txt is a file, not a folder"),
    (TRAIN[:10] + ["out/f.txt/m.json"] + TRAIN[11:], "out/f.txt is a file, not a folder"),
    (TRAIN[:12] + ["out/f.txt/r.json"] + TRAIN[13:], "--plots out/f.txt/r.json: out/f.txt is a file"),
    (["splits", "--samples", "encoded/samples.tsv", "--out", "encoded/samples.tsv", "--metrics", "out/s.json"],
     "would overwrite the input encoded/samples.tsv"),
    (["splits", "--samples", "encoded/samples.tsv", "--out", "inputs", "--metrics", "out/s.json"],
     "--out inputs is a folder"),
    (COMPARE[:-1] + ["work/train"], "would hold the input work/train"),
], ids=["encode_metrics_is_input", "encode_dosage_is_out", "encode_metrics_under_file", "scan_metrics_under_file",
        "train_metrics_under_file", "train_plots_under_file", "splits_out_is_input", "splits_out_is_folder",
        "compare_out_is_input"])
def test_output_path_refused_before_work(project, capfd, argv, want):
    (project / "out").mkdir()
    (project / "out" / "f.txt").write_text("x\n")
    refused(project, capfd, argv, want=want)


def test_simulate_keeps_a_users_folder(project, capfd):
    (project / "mine").mkdir()
    (project / "mine" / "samples.tsv").write_text("sample_id\tstatus\nMY1\tcase\nMY2\tcontrol\n")
    (project / "mine" / "notes.txt").write_text("mine\n")
    refused(project, capfd, ["simulate", "--out", "mine", "--n-samples", "40", "--n-genes", "20", "--no-progress"],
            want="output folder mine exists and was not written by epiflow")


def test_scan_checkpoint_that_is_a_folder(project, capfd):
    (project / "out" / "scan" / ".scan2d.ckpt.npz").mkdir(parents=True)
    refused(project, capfd, SCAN + ["--mode", "2d", "--top", "5"], want="the scan checkpoint is not a file")


@pytest.mark.parametrize("case", ["bogus", "sqlite_text_file", "journal_garbage", "metrics_under_file"])
def test_tune_refused_early_leaves_no_locks(project, capfd, case):
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["tune"] = {"space": {"alpha": [1e-4, 0.1, "log"]}}
    (project / "t.yaml").write_text(yaml.safe_dump(p))
    argv = TUNE + ["--params", "t.yaml"]
    (project / "out").mkdir()
    if case == "bogus":
        argv[argv.index("--storage") + 1] = "bogus"
        want = "expected journal:PATH or a database URL"
    elif case == "sqlite_text_file":
        (project / "out" / "o.db").write_text("this is not sqlite\n")
        argv[argv.index("--storage") + 1] = "sqlite:///out/o.db"
        want = "out/o.db is not a SQLite database"
    elif case == "journal_garbage":
        (project / "out" / "tune.log").write_bytes(bytes(range(256)) * 3)
        want = "out/tune.log is not an Optuna journal file"
    else:
        (project / "out" / "f.txt").write_text("x\n")
        argv[argv.index("--metrics") + 1] = "out/f.txt/t.json"
        want = "out/f.txt is a file, not a folder"
    refused(project, capfd, argv, want=want)
    assert not (project / "mlruns").exists()


# ---------------------------------------------------------------- 7: a UTF-8 BOM is valid
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_sample_sheet_with_a_bom(project, capfd, newline):
    from pipelines.cli import main

    text = SMALL_SHEET.read_text()
    (project / "inputs" / "samples.tsv").write_bytes(("\ufeff" + text.replace("\n", newline)).encode())
    assert main(ENC) == 0, capfd.readouterr().err
    assert json.loads((project / "out" / "enc.json").read_text())["n_samples"] == 6


# ------------------------------------------------------------- 8: an MLflow store is read
@pytest.mark.parametrize("argv", [["report", "--source", "mlflow", "--out", "out/rep", "--metrics", "out/rep.json",
                                   "--no-mlflow"],
                                  ["compare", "sgd_l2", "rf_genes", "--mlflow", "--out", "out/cmp"]],
                         ids=["report", "compare"])
def test_reading_a_store_that_does_not_exist(project, capfd, argv):
    refused(project, capfd, argv, want="no MLflow store at")
    assert not (project / "mlruns").exists()


def test_a_failed_locked_block_leaves_no_lock(project):
    """tune's find-or-create lock: a block that fails removes the lock file it made (and the
    mlruns/ folder made for it); a lock file that was there stays."""
    from pipelines.tune import local_lock

    with pytest.raises(RuntimeError):
        with local_lock():
            with local_lock("ask"):
                assert (project / "mlruns" / ".ask.lock").is_file()
                raise RuntimeError("refused")
    assert not (project / "mlruns").exists()
    with local_lock():
        pass
    with pytest.raises(RuntimeError):
        with local_lock():
            raise RuntimeError("refused")
    assert (project / "mlruns" / ".tune.lock").is_file()
