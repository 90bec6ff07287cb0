"""The zoo as params.yaml reaches it: every type resolves, forests learn a planted signal through
zoo.fit_predict, bad keys fail in one line, and the train stage's fold workers change nothing."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from models.simulate.genes import planted_burden
from pipelines import zoo
from pipelines.errors import EpiflowError


@pytest.fixture(scope="module")
def cohort():
    return planted_burden(n=900, n_genes=60, n_causal=4, effect=2.0, seed=2, rate=0.04, n_damaging=16)


def _fit(mtype, cfg, coh, tr, te, **kw):
    X = coh.X.tocsr()
    return zoo.fit_predict(mtype, cfg, counts_train=X[tr], counts_test=X[te], variants_train=X[tr],
                           variants_test=X[te], y_train=coh.y[tr], n_classes=coh.n_classes,
                           gene_pathways=coh.gene_pathways, train=kw.get("train", {"max_epochs": 8}),
                           seed=0)


@pytest.mark.parametrize("mtype,cfg", [
    ("rf_variants", {"n_estimators": 150, "min_samples_leaf": 3}),
    ("rf_genes", {"n_estimators": 150, "min_samples_leaf": 3}),
    ("rf_activations", {"net": {"type": "logreg", "lr": 0.01, "max_epochs": 8}, "n_estimators": 150,
                        "min_samples_leaf": 5}),
])
def test_forests_learn_planted_burden(cohort, mtype, cfg):
    tr, te = np.arange(600), np.arange(600, 900)
    _, cfg = zoo.resolve("m", {"m": {"type": mtype, **cfg}})
    proba, info = _fit(mtype, cfg, cohort, tr, te)
    oracle = roc_auc_score(cohort.y[te], cohort.liability[te])
    auc = roc_auc_score(cohort.y[te], proba)
    assert proba.shape == (300,) and np.all((proba >= 0) & (proba <= 1))
    assert auc > 0.7 and oracle > 0.9, (mtype, auc, oracle)
    assert info["n_parameters"] > 0


def test_rf_activations_trains_its_net_on_the_training_fold_only(cohort, monkeypatch):
    """The net inside rf_activations sees exactly the training rows (and test rows only to read
    activations); its own max_epochs overrides the shared train section."""
    import models.genes as genes

    seen = {}
    real = genes.fit_predict

    def spy(model_type, X_train, y_train, X_test, **kw):
        seen.update(n_train=X_train.shape[0], epochs=kw["train"]["max_epochs"], type=model_type)
        return real(model_type, X_train, y_train, X_test, **kw)

    monkeypatch.setattr(genes, "fit_predict", spy)
    tr, te = np.arange(500), np.arange(500, 900)
    _, cfg = zoo.resolve("m", {"m": {"type": "rf_activations", "net": {"type": "biosparse", "max_epochs": 2},
                                     "n_estimators": 20}})
    _fit("rf_activations", cfg, cohort, tr, te, train={"max_epochs": 30})
    assert seen == {"n_train": 500, "epochs": 2, "type": "biosparse"}


def test_every_net_type_and_sparsity_source_is_reachable(cohort):
    """Each net type and each sparsity source resolves from params and fits one fold."""
    tr, te = np.arange(300), np.arange(300, 450)
    entries = {
        "logreg": {"type": "logreg"}, "linear": {"type": "linear"}, "biosparse": {"type": "biosparse"},
        "multipathway": {"type": "multipathway"}, "dense": {"type": "dense", "dense_units": 8},
        "genegene": {"type": "genegene_pathway"},
        "random": {"type": "biosparse", "sparsity_source": "random", "sparsity": 0.5},
        "rigl": {"type": "biosparse", "sparsity_source": "rigl"},
        "l1": {"type": "multipathway", "sparsity_source": "l1"},
        "ens": {"type": "ensemble", "n_members": 3, "member_source": "random", "max_epochs": 1},
    }
    for name in entries:
        mtype, cfg = zoo.resolve(name, entries)
        proba, info = _fit(mtype, cfg, cohort, tr, te, train={"max_epochs": 2})
        assert proba.shape == (150,) and np.isfinite(proba).all(), name
        if name == "ens":
            assert info["n_members"] == 3 and info["epochs"] == 1
        if name in ("random", "rigl", "l1", "biosparse"):
            assert info["n_edges"] > 0


@pytest.mark.parametrize("entry,message", [
    ({"type": "transformer"}, "unknown model type 'transformer'"),
    ({"type": "biosparse", "lr": 0.01, "learning_rate": 1}, "unknown key(s) learning_rate"),
    ({"type": "sgd_l1", "n_estimators": 10}, "unknown key(s) n_estimators"),
    ({"type": "rf_genes", "alpha": 0.1}, "unknown key(s) alpha"),
    ({"type": "biosparse", "sparsity_source": "magic"}, "unknown sparsity_source 'magic'"),
    ({"type": "dense", "sparsity_source": "rigl"}, "applies to biosparse, linear, multipathway"),
    ({"type": "logreg", "sparsity": 0.5}, "has no sparse gene layer"),
    ({"type": "biosparse", "sparsity": 1.5}, "sparsity must be in (0, 1]"),
    ({"type": "ensemble", "sparsity_source": "random"}, "member_source"),
    ({"type": "ensemble", "n_members": 0}, "n_members must be a positive integer"),
    ({"type": "rf_activations", "net": {"type": "ensemble"}}, "no single set of gene activations"),
    ({"type": "rf_activations", "net": {"type": "logreg", "foo": 1}}, "unknown key(s) foo"),
    ({"type": "biosparse", "gene_gene_edges": "x.tsv"}, "genegene_pathway only"),
    ("just a string", "must be a mapping"),
])
def test_bad_entries_are_one_line_errors(entry, message):
    with pytest.raises(EpiflowError) as exc:
        zoo.resolve("m", {"m": entry}, "params.yaml")
    text = str(exc.value)
    assert message in text and "\n" not in text and "model 'm" in text


def test_default_zoo_resolves():
    """Every model of the repository's params.yaml resolves (keys and values valid)."""
    from pipelines.params import load_params, repo_root

    models = load_params(repo_root() / "params.yaml")["models"]
    for name in models:
        mtype, _ = zoo.resolve(name, models)
        assert mtype in zoo.known_types()


def test_gene_gene_edges_file(tmp_path):
    p = tmp_path / "edges.tsv"
    p.write_text("# gene_a gene_b\ngene_a\tgene_b\nA\tC\nC B\nA ZZZ\n")
    e = zoo.load_gene_gene_edges(p, ["A", "B", "C"])
    assert e.tolist() == [[0, 2], [2, 1]]
    with pytest.raises(EpiflowError, match="not found"):
        zoo.load_gene_gene_edges(tmp_path / "none.tsv", ["A"])
    (tmp_path / "bad.tsv").write_text("A\n")
    with pytest.raises(EpiflowError, match="bad.tsv:1"):
        zoo.load_gene_gene_edges(tmp_path / "bad.tsv", ["A"])


# ---------------------------------------------------------------- the train stage on a tiny cohort
@pytest.fixture(scope="module")
def tiny_encoded(tmp_path_factory, cohort):
    from pipelines.encode import save_csr
    from pipelines.splits import make_splits, save_splits

    d = tmp_path_factory.mktemp("enc")
    enc = d / "encoded"
    enc.mkdir()
    n, G, C = cohort.X.shape[0], cohort.X.shape[1] // cohort.n_classes, cohort.n_classes
    save_csr(enc / "gene_counts.npz", cohort.X.tocsr())
    save_csr(enc / "variants.npz", cohort.X.tocsr())          # one "variant" per (class, gene)
    ids = [f"s{i}" for i in range(n)]
    pd.DataFrame({"sample_id": ids, "y": cohort.y, "sex": "NA"}).to_csv(enc / "samples.tsv", sep="\t", index=False)
    genes = [f"G{g}" for g in range(G)]
    (enc / "genes.txt").write_text("".join(g + "\n" for g in genes))
    (enc / "classes.txt").write_text("".join(f"c{c}\n" for c in range(C)))
    pd.DataFrame({"chrom": "1", "pos": np.arange(C * G), "id": [f"v{i}" for i in range(C * G)], "ref": "A",
                  "alt": "T", "gene": genes * C, "class": np.repeat([f"c{c}" for c in range(C)], G)}
                 ).to_csv(enc / "variants.tsv", sep="\t", index=False)
    save_splits(make_splits(cohort.y, ids, repeats=2, folds=3, seed=1), d / "splits.npz")
    (d / "params.yaml").write_text(yaml.safe_dump({
        "study": "t", "train": {"max_epochs": 2, "seed": 0},
        "models": {"rf_genes": {"type": "rf_genes", "n_estimators": 30}}}))
    return d


def _train_args(d, model, out, jobs):
    from pipelines.stages import train

    p = argparse.ArgumentParser()
    train.add_arguments(p)
    return p.parse_args(["--model", model, "--params", str(d / "params.yaml"), "--encoded", str(d / "encoded"),
                         "--splits", str(d / "splits.npz"), "--out", str(out / "o"),
                         "--metrics", str(out / "m.json"), "--plots", str(out / "roc.json"),
                         "--no-mlflow", "--quiet", "--jobs", str(jobs)])


def test_train_stage_results_do_not_depend_on_jobs(tiny_encoded, tmp_path):
    from pipelines.stages import train

    for jobs in (1, 2):
        assert train.run(_train_args(tiny_encoded, "rf_genes", tmp_path / f"j{jobs}", jobs)) == 0
    a, b = tmp_path / "j1" / "o", tmp_path / "j2" / "o"
    assert (a / "oof.parquet").read_bytes() == (b / "oof.parquet").read_bytes()
    folds = pd.read_csv(a / "folds.tsv", sep="\t")
    assert (a / "folds.tsv").read_text() == (b / "folds.tsv").read_text()
    assert len(folds) == 6 and folds["auc"].mean() > 0.7
    assert set(folds.columns) >= {"repeat", "fold", "auc", "n_train", "n_test"}


def test_resolve_jobs():
    from pipelines.workflows.cv import resolve_jobs

    assert resolve_jobs(3, 30, "cpu") == 3 and resolve_jobs(8, 2, "cpu") == 2
    assert resolve_jobs(0, 30, "cuda") == 1
    # a scikit-learn baseline does not share the GPU: it gets the cores
    assert resolve_jobs(0, 30, "cuda", uses_device=False) == resolve_jobs(0, 30, "cpu") >= 1
    assert 1 <= resolve_jobs(0, 30, "cpu") <= 4
    with pytest.raises(EpiflowError):
        resolve_jobs(-1, 30)
