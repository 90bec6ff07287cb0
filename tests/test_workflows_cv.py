"""cross_validate, the fold loop every caller shares: it gives the per-fold AUCs the train stage
gave before the workflow existed (values recorded from that code on this cohort), the same
numbers as a plain loop over the estimator with the train stage's fold seeds, and the same
bytes with worker processes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from models.simulate.genes import planted_burden
from pipelines.errors import EpiflowError

# folds.tsv of `epiflow train --model M` before the refactor (pipelines/stages/train.py with its
# own fold loop), on write_project's cohort: repeat, fold, auc
OLD_TRAIN_AUCS = {
    "sgd_l2": [0.760389, 0.672856, 0.729443, 0.694960, 0.791335, 0.826702],
    "rf_genes": [0.776304, 0.744474, 0.669761, 0.699381, 0.706012, 0.780725],
}


COHORT = dict(n=300, n_genes=30, n_causal=3, effect=2.0, seed=5, rate=0.05, n_damaging=10)


def write_project(d: Path, **cohort) -> Path:
    """A project folder (encoded/, splits.npz, params.yaml) on a planted-burden cohort
    (``COHORT``, updated by ``cohort``)."""
    from pipelines.encode import save_csr
    from pipelines.splits import make_splits, save_splits

    coh = planted_burden(**{**COHORT, **cohort})
    enc = d / "encoded"
    enc.mkdir(parents=True, exist_ok=True)
    n, C = coh.X.shape[0], coh.n_classes
    G = coh.X.shape[1] // C
    save_csr(enc / "gene_counts.npz", coh.X.tocsr())
    save_csr(enc / "variants.npz", coh.X.tocsr())
    ids = [f"s{i}" for i in range(n)]
    pd.DataFrame({"sample_id": ids, "y": coh.y, "sex": "NA"}).to_csv(enc / "samples.tsv", sep="\t", index=False)
    genes = [f"G{g}" for g in range(G)]
    (enc / "genes.txt").write_text("".join(g + "\n" for g in genes))
    (enc / "classes.txt").write_text("".join(f"c{c}\n" for c in range(C)))
    pd.DataFrame({"chrom": "1", "pos": np.arange(C * G), "id": [f"v{i}" for i in range(C * G)], "ref": "A",
                  "alt": "T", "gene": genes * C, "class": np.repeat([f"c{c}" for c in range(C)], G)}
                 ).to_csv(enc / "variants.tsv", sep="\t", index=False)
    save_splits(make_splits(coh.y, ids, repeats=2, folds=3, seed=3), d / "splits.npz")
    (d / "params.yaml").write_text(yaml.safe_dump({
        "study": "t", "train": {"max_epochs": 2, "seed": 4, "device": "cpu", "batch_size": 32},
        "models": {"sgd_l2": {"type": "sgd_l2", "alpha": 0.01, "max_iter": 20},
                   "rf_genes": {"type": "rf_genes", "n_estimators": 20},
                   "logreg": {"type": "logreg", "lr": 0.01, "hidden": 4}}}))
    return d


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return write_project(tmp_path_factory.mktemp("cv"))


def _load(d):
    from pipelines.params import load_params
    from pipelines.workflows.cohort import Cohort, load_splits

    params = load_params(d / "params.yaml")
    cohort = Cohort.load(d / "encoded")
    return params, cohort, load_splits(d / "splits.npz", cohort)


@pytest.mark.parametrize("model", sorted(OLD_TRAIN_AUCS))
def test_cross_validate_gives_the_old_train_stage_aucs(project, model):
    from pipelines import zoo
    from pipelines.workflows.cv import ModelSpec, cross_validate

    params, cohort, splits = _load(project)
    mtype, cfg = zoo.resolve(model, params["models"])
    res = cross_validate(ModelSpec(model, mtype, cfg), cohort, splits.iter_folds(), train_cfg=params["train"])
    assert [(f.repeat, f.fold) for f in res.folds] == [(r, k) for r in range(2) for k in range(3)]
    assert [f.seed for f in res.folds] == [4 + 1000 * r + k for r in range(2) for k in range(3)]
    np.testing.assert_allclose(res.aucs, OLD_TRAIN_AUCS[model], atol=5e-7)
    assert [f.n_train for f in res.folds] == [200] * 6 and res.n_parameters > 0


def test_cross_validate_is_the_plain_fold_loop_and_jobs_change_nothing(project):
    """logreg (a torch net): a hand loop over models.genes.fit_predict with the train stage's fold
    seeds gives the same probabilities; two worker processes give the same bytes."""
    from sklearn.metrics import roc_auc_score

    from models.genes import fit_predict
    from pipelines.workflows.cv import ModelSpec, cross_validate

    params, cohort, splits = _load(project)
    spec = ModelSpec("logreg", "logreg", {k: v for k, v in params["models"]["logreg"].items() if k != "type"})
    train = params["train"]
    folds = list(splits.iter_folds(1))
    one = cross_validate(spec, cohort, folds, train_cfg=train, jobs=1)
    two = cross_validate(spec, cohort, folds, train_cfg=train, jobs=2)
    base = {k: v for k, v in train.items() if k != "seed"}
    for f1, f2, (r, k, tr, te) in zip(one.folds, two.folds, folds):
        p, _ = fit_predict("logreg", cohort.counts[tr], cohort.y[tr], cohort.counts[te], n_classes=cohort.n_classes,
                           params=spec.config, train={**base, "seed": 4 + 1000 * r + k})
        np.testing.assert_array_equal(f1.proba, np.asarray(p, np.float64))
        assert f1.auc == roc_auc_score(cohort.y[te], p)
        assert f1.proba.tobytes() == f2.proba.tobytes()
    oof = one.oof(cohort)
    assert list(oof.columns) == ["repeat", "fold", "sample_id", "y", "proba"] and len(oof) == cohort.n_samples


def test_train_stage_writes_what_cross_validate_returns(project, tmp_path):
    from pipelines.cli import main
    from pipelines.workflows.cv import ModelSpec, cross_validate

    params, cohort, splits = _load(project)
    assert main(["train", "--model", "sgd_l2", "--params", str(project / "params.yaml"), "--encoded",
                 str(project / "encoded"), "--splits", str(project / "splits.npz"), "--out", str(tmp_path / "o"),
                 "--metrics", str(tmp_path / "m.json"), "--plots", str(tmp_path / "r.json"),
                 "--no-mlflow", "--quiet", "--jobs", "1"]) == 0
    folds = pd.read_csv(tmp_path / "o" / "folds.tsv", sep="\t")
    np.testing.assert_allclose(folds.auc, OLD_TRAIN_AUCS["sgd_l2"], atol=5e-7)
    oof = pd.read_parquet(tmp_path / "o" / "oof.parquet")
    res = cross_validate(ModelSpec("sgd_l2", "sgd_l2", {"alpha": 0.01, "max_iter": 20}), cohort,
                         splits.iter_folds(), train_cfg=params["train"])
    pd.testing.assert_frame_equal(oof, res.oof(cohort))


def test_splits_of_another_cohort_are_refused(project, tmp_path):
    from pipelines.errors import EpiflowError
    from pipelines.splits import make_splits, save_splits
    from pipelines.workflows.cohort import Cohort, load_splits

    cohort = Cohort.load(project / "encoded")
    save_splits(make_splits(cohort.y, cohort.sample_ids[::-1], repeats=1, folds=3), tmp_path / "s.npz")
    with pytest.raises(EpiflowError, match="other samples"):
        load_splits(tmp_path / "s.npz", cohort)
    with pytest.raises(EpiflowError, match="repeats=5"):
        load_splits(project / "splits.npz", cohort, repeats=5, what="sweep")
    one_label = make_splits(cohort.y, cohort.sample_ids, repeats=1, folds=3)
    one_label.fold[0] = np.where(cohort.y == 1, 0, 1 + np.arange(cohort.n_samples) % 2)
    save_splits(one_label, tmp_path / "t.npz")
    with pytest.raises(EpiflowError, match="test fold 0 of repeat 0 holds only label"):
        load_splits(tmp_path / "t.npz", cohort)
    with pytest.raises(EpiflowError, match="labels must be 0/1"):
        Cohort(counts=cohort.counts, variants=cohort.variants, y=cohort.y * 2, sample_ids=cohort.sample_ids,
               genes=cohort.genes, classes=cohort.classes)


def test_labels_changed_after_the_splits_are_refused(project, tmp_path):
    """Labels edited under the same sample ids used to give AUC NaN in the metrics with exit 0;
    the splits now carry a hash of the labels they were stratified on. Files written before the
    hash existed still load."""
    import shutil

    from pipelines.cli import main
    from pipelines.splits import load_splits as load_file, make_splits, save_splits
    from pipelines.workflows.cohort import Cohort, load_splits

    cohort = Cohort.load(project / "encoded")
    splits = make_splits(cohort.y, cohort.sample_ids, repeats=1, folds=3)
    save_splits(splits, tmp_path / "s.npz")
    assert load_file(tmp_path / "s.npz").label_sha256 == splits.label_sha256
    assert load_splits(tmp_path / "s.npz", cohort).label_sha256 == splits.label_sha256
    enc = tmp_path / "encoded"
    shutil.copytree(project / "encoded", enc)
    samples = pd.read_csv(enc / "samples.tsv", sep="\t", dtype={"sample_id": str})
    samples.loc[:9, "y"] = 1 - samples.loc[:9, "y"]
    samples.to_csv(enc / "samples.tsv", sep="\t", index=False)
    with pytest.raises(EpiflowError, match="labels differ from those the splits were made on"):
        load_splits(tmp_path / "s.npz", Cohort.load(enc))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["train", "--model", "sgd_l2", "--params", str(project / "params.yaml"), "--encoded", str(enc),
                 "--splits", str(tmp_path / "s.npz"), "--out", str(tmp_path / "o"), "--metrics",
                 str(tmp_path / "m.json"), "--plots", str(tmp_path / "r.json"), "--no-mlflow", "--quiet"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no metrics, no folder
    # a splits file from before the hash: loads, no check
    with np.load(tmp_path / "s.npz") as z:
        old = {k: z[k] for k in z.files if k != "label_sha256"}
    np.savez(tmp_path / "old.npz", **old)
    assert load_splits(tmp_path / "old.npz", Cohort.load(enc)).label_sha256 is None


@pytest.mark.parametrize("gmt_text", ["", "KEGG_X\tna\tTP53\tBRCA1\nKEGG_Y\tna\tEGFR\n"])
def test_gene_set_head_refuses_a_gmt_naming_no_cohort_gene(project, tmp_path, gmt_text):
    """An empty GMT, or one naming no gene of the cohort, used to send every gene to biosparse's
    dummy neuron without a word; logreg (not wired by gene sets) still runs."""
    from pipelines.errors import EpiflowError
    from pipelines.workflows.cohort import Cohort, load_splits
    from pipelines.workflows.cv import ModelSpec, cross_validate

    gmt = tmp_path / "sets.gmt"
    gmt.write_text(gmt_text)
    cohort = Cohort.load(project / "encoded", gmt)
    splits = load_splits(project / "splits.npz", cohort)
    folds = list(splits.iter_folds(1))[:1]
    train = {"max_epochs": 1, "device": "cpu", "batch_size": 32}
    with pytest.raises(EpiflowError, match="no gene set names a gene of the cohort") as e:
        cross_validate(ModelSpec("biosparse", "biosparse", {"hidden": 4}), cohort, folds, train_cfg=train)
    assert "\n" not in str(e.value) and str(gmt) in str(e.value)
    res = cross_validate(ModelSpec("logreg", "logreg", {"hidden": 4}), cohort, folds, train_cfg=train)
    assert 0.0 <= res.folds[0].auc <= 1.0


def test_fold_rows_are_sliced_once_per_fold_within_the_budget(monkeypatch):
    """Several models on the same folds (a Table-1 run) slice each fold once; the slice equals
    M[idx]; a budget of 0 turns the memory off; the least recently used slice goes first."""
    import scipy.sparse as sp

    from pipelines.workflows import cohort as C

    C.clear_fold_rows()
    M = sp.random(200, 50, 0.2, format="csr", random_state=0)
    a, b = np.arange(0, 200, 2), np.arange(1, 200, 2)
    monkeypatch.setenv("EPIFLOW_FOLD_MEMORY_GB", "1")
    s1 = C.fold_rows(M, a)
    assert C.fold_rows(M, a.copy()) is s1                        # same rows: the same slice
    assert (s1 != M[a]).nnz == 0
    assert C.fold_rows(M.copy(), a) is not s1                    # another matrix: its own slice
    one = s1.data.nbytes + s1.indices.nbytes + s1.indptr.nbytes
    monkeypatch.setenv("EPIFLOW_FOLD_MEMORY_GB", str(1.5 * one / 1e9))
    C.clear_fold_rows()
    s1 = C.fold_rows(M, a)
    s2 = C.fold_rows(M, b)                                       # evicts a's slice
    assert C.fold_rows(M, b) is s2 and C.fold_rows(M, a) is not s1
    monkeypatch.setenv("EPIFLOW_FOLD_MEMORY_GB", "0")
    assert C.fold_rows(M, a) is not C.fold_rows(M, a)
    C.clear_fold_rows()


def test_cohort_with_variants_equal_to_counts_slices_once(project, monkeypatch):
    from pipelines.workflows import cohort as C
    from pipelines.workflows.cohort import Cohort

    monkeypatch.setenv("EPIFLOW_FOLD_MEMORY_GB", "1")
    coh = Cohort.load(project / "encoded")
    coh = Cohort(counts=coh.counts, variants=coh.counts, y=coh.y, sample_ids=coh.sample_ids,
                 genes=coh.genes, classes=coh.classes)
    tr, te = np.arange(0, coh.n_samples, 3), np.arange(1, coh.n_samples, 3)
    d = coh.fold_data(tr, te)
    assert d["variants_train"] is d["counts_train"] and d["variants_test"] is d["counts_test"]
    assert (d["counts_train"] != coh.counts[tr]).nnz == 0
    assert coh.fold_data(tr, te)["counts_train"] is d["counts_train"]
    C.clear_fold_rows()
