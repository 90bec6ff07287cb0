"""Learning-curve and sparsity-sweep stages on a tiny planted cohort; their statistics by hand."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from models.simulate.genes import planted_burden
from models.stats import crossover_size, learning_curve_subsets
from pipelines.atomic import MARKER
from pipelines.cli import main as cli_main
from pipelines.encode import save_csr
from pipelines.splits import make_splits, save_splits

N, G, C = 240, 24, 4


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """An encoded cohort (additive burden in a few genes), splits, gene sets and params."""
    d = tmp_path_factory.mktemp("lc")
    coh = planted_burden(N, G, C, n_causal=3, effect=3.0, case_fraction=0.5, rate=0.25, n_pathways=4, seed=3)
    enc = d / "encoded"
    enc.mkdir()
    save_csr(enc / "gene_counts.npz", coh.X.tocsr())
    save_csr(enc / "variants.npz", coh.X.tocsr())          # one "variant" per (class, gene) column
    genes = [f"G{g}" for g in range(G)]
    (enc / "genes.txt").write_text("".join(f"{g}\n" for g in genes))
    (enc / "classes.txt").write_text("".join(f"c{c}\n" for c in range(C)))
    ids = [f"S{i:03d}" for i in range(N)]
    pd.DataFrame({"sample_id": ids, "y": coh.y, "sex": "F"}).to_csv(enc / "samples.tsv", sep="\t", index=False)
    pd.DataFrame({"chrom": "chr1", "pos": np.arange(C * G) + 1, "id": ".", "ref": "A", "alt": "T",
                  "gene": [genes[j % G] for j in range(C * G)], "class": [f"c{j // G}" for j in range(C * G)]}
                 ).to_csv(enc / "variants.tsv", sep="\t", index=False)
    save_splits(make_splits(coh.y, ids, repeats=2, folds=3, seed=1), d / "splits.npz")
    members = {}
    for g, ps in enumerate(coh.gene_pathways):
        for p in ps:
            members.setdefault(p, []).append(genes[g])
    (d / "sets.gmt").write_text("".join(f"P{p}\tx\t" + "\t".join(m) + "\n" for p, m in sorted(members.items())))
    params = {
        "study": "lc-test",
        "encode": {"gmt": str(d / "sets.gmt")},
        "train": {"max_epochs": 3, "batch_size": 64, "seed": 0, "device": "cpu"},
        "models": {"logreg": {"type": "logreg", "lr": 0.01, "hidden": 8},
                   "sgd_l2": {"type": "sgd_l2", "alpha": 0.01, "max_iter": 20},
                   "biosparse": {"type": "biosparse", "lr": 0.01, "hidden": 8, "gene_l1": 1e-3}},
        "learning_curve": {"models": ["logreg", "sgd_l2", "biosparse"], "fractions": [0.2, 0.5, 1.0],
                           "repeats": 1, "seed": 0},
        "sweep": {"model": "biosparse", "sparsity": [0.5, 1.0], "repeats": 1},
    }
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    return d, coh, ids


def _args(d, *extra):
    return ["--params", str(d / "params.yaml"), "--encoded", str(d / "encoded"), "--splits", str(d / "splits.npz"),
            "--no-mlflow", "--quiet", *extra]


def _with_params(d, tmp_path, **sections):
    params = yaml.safe_load((d / "params.yaml").read_text())
    for k, v in sections.items():
        params[k] = {**params[k], **v}
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    return p


def test_learning_curve_stage_end_to_end(project, tmp_path):
    d, coh, _ = project
    out, met, plots = tmp_path / "lc", tmp_path / "m.json", tmp_path / "plots"
    rc = cli_main(["learning-curve", *_args(d, "--out", str(out), "--metrics", str(met), "--plots", str(plots))])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir() if p.name != MARKER) == ["folds.tsv", "learning_curve.png", "summary.json", "table.md"]
    df = pd.read_csv(out / "folds.tsv", sep="\t")
    assert len(df) == 3 * 3 * 3                         # folds x fractions x models
    # every model saw the same training-set sizes on every fold
    sizes = df.pivot_table(index=["repeat", "fold", "fraction"], columns="model", values="n_train")
    assert (sizes.nunique(axis=1) == 1).all()
    s = json.loads((out / "summary.json").read_text())
    assert [t["fraction"] for t in s["tests"]] == [0.2, 0.5, 1.0]
    for t in s["tests"]:
        assert t["best_additive"] in ("logreg", "sgd_l2") and 0 <= t["p_value"] <= 1
    # the planted additive signal is learnt by the full-size additive models
    full = df[df.fraction == 1.0].groupby("model").auc.mean()
    assert max(full["logreg"], full["sgd_l2"]) > 0.7
    m = json.loads(met.read_text())      # tracked: results only, no run id or wall time
    assert "auc.biosparse.f100" in m and "p_corrected.f20" in m and "mlflow_run_id" not in m
    from pipelines.atomic import read_metrics

    assert read_metrics(met)["mlflow_run_id"] == "" and read_metrics(met)["wall_time_s"] > 0
    pts = json.loads((plots / "biosparse.json").read_text())
    assert [p["fraction"] for p in pts] == [0.2, 0.5, 1.0] and pts[0]["n_train"] < pts[-1]["n_train"]
    assert "| 100% |" in (out / "table.md").read_text()
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_full_fraction_reproduces_the_train_stage_fit(project, tmp_path):
    """At 100 % the stage fits exactly what `epiflow train` fits on that fold (same seed)."""
    from pipelines.workflows.cohort import Cohort, load_splits
    from pipelines.workflows.cv import ModelSpec, cross_validate

    d, coh, ids = project
    out = tmp_path / "lc"
    p = _with_params(d, tmp_path, learning_curve={"models": ["logreg", "sgd_l2"], "sparse_model": "logreg",
                                                  "fractions": [1.0]})
    rc = cli_main(["learning-curve", "--params", str(p), "--encoded", str(d / "encoded"), "--splits",
                   str(d / "splits.npz"), "--out", str(out), "--metrics", str(tmp_path / "m.json"),
                   "--plots", str(tmp_path / "pl"), "--no-mlflow", "--quiet"])
    assert rc == 0
    df = pd.read_csv(out / "folds.tsv", sep="\t")
    cohort = Cohort.load(d / "encoded", d / "sets.gmt")
    splits = load_splits(d / "splits.npz", cohort)
    r, k, tr, te = next(splits.iter_folds(1))
    [fold] = cross_validate(ModelSpec("logreg", "logreg", {"lr": 0.01, "hidden": 8}), cohort, [(r, k, tr, te)],
                            train_cfg={"max_epochs": 3, "batch_size": 64, "device": "cpu", "seed": 0}).folds
    auc = fold.auc
    got = df[(df.model == "logreg") & (df.repeat == 0) & (df.fold == 0)].auc.item()
    assert got == pytest.approx(auc, abs=1e-6)


def test_subsets_nested_stratified_and_shared():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.3).astype(int)
    train = np.sort(rng.choice(500, 330, replace=False))
    fr = [0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    a = learning_curve_subsets(train, y, fr, seed=7)
    b = learning_curve_subsets(train, y, fr, seed=7)       # a second model asks for its subsets
    for f in fr:
        assert np.array_equal(a[f], b[f])
        assert np.isin(a[f], train).all()
    for f0, f1 in zip(fr, fr[1:]):
        assert np.isin(a[f0], a[f1]).all() and a[f0].size < a[f1].size
    assert np.array_equal(a[1.0], train)
    frac_pos = y[train].mean()
    for f in fr:
        assert abs(y[a[f]].mean() - frac_pos) < 0.02
        assert abs(a[f].size - f * train.size) <= 2


def test_crossover_on_hand_built_curves():
    n = [100, 200, 400, 800]
    # sparse below until between 200 and 400: d = -0.04 at 200, +0.02 at 400 -> 200 + 200 * 4/6
    assert crossover_size(n, [0.60, 0.64, 0.72, 0.80], [0.66, 0.68, 0.70, 0.72]) == pytest.approx(200 + 200 * 4 / 6)
    assert crossover_size(n, [0.7, 0.7, 0.7, 0.7], [0.6, 0.6, 0.6, 0.6]) == 100      # above throughout
    assert crossover_size(n, [0.5, 0.6, 0.7, 0.69], [0.6, 0.6, 0.6, 0.7]) is None    # ends below
    # dips below and recovers: the last crossing counts
    assert crossover_size(n, [0.7, 0.5, 0.7, 0.8], [0.6, 0.6, 0.6, 0.6]) == pytest.approx(200 + 200 * 0.1 / 0.2)


def test_stage_crossover_uses_best_additive_curve():
    from pipelines.curves import compare_learning_curve as compare

    rows = []
    curves_ = {"add_a": [0.70, 0.72, 0.73], "add_b": [0.60, 0.74, 0.75], "sp": [0.55, 0.70, 0.80]}
    for f, n_tr in zip([0.25, 0.5, 1.0], [100, 200, 400]):
        for rep in range(4):
            for m, c in curves_.items():
                rows.append({"model": m, "fraction": f, "repeat": rep, "fold": 0, "n_train": n_tr,
                             "n_test": 200, "auc": c[[0.25, 0.5, 1.0].index(f)] + 0.01 * rep})
    cfg = {"models": [("add_a", "logreg", {}), ("add_b", "sgd_l2", {}), ("sp", "biosparse", {})],
           "fractions": [0.25, 0.5, 1.0], "sparse_model": "sp", "additive_models": ["add_a", "add_b"]}
    s = compare(pd.DataFrame(rows), cfg)
    assert [t["best_additive"] for t in s["tests"]] == ["add_a", "add_b", "add_b"]
    # best additive curve 0.70/0.74/0.75 (+ same offsets); sparse crosses between 200 and 400:
    # d = -0.04 at 200, +0.05 at 400
    assert s["crossover_n_train"] == pytest.approx(200 + 200 * 0.04 / 0.09)
    assert s["crossover_fraction"] == pytest.approx(0.5 + 0.5 * 0.04 / 0.09)
    assert s["tests"][2]["mean_diff"] == pytest.approx(0.05)


def test_sweep_stage_end_to_end(project, tmp_path):
    d, _, _ = project
    out, met, plots = tmp_path / "sw", tmp_path / "m.json", tmp_path / "sweep.json"
    rc = cli_main(["sweep", *_args(d, "--out", str(out), "--metrics", str(met), "--plots", str(plots))])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir() if p.name != MARKER) == ["folds.tsv", "summary.json", "sweep.png", "table.md"]
    s = json.loads((out / "summary.json").read_text())
    half, full = s["per_sparsity"]
    # half of the genes connected: half of the gene -> pathway edges (one edge per gene)
    assert full["n_edges"] == G and half["n_edges"] == G // 2
    assert "p_vs_ref" in half and "p_vs_ref" not in full
    pts = json.loads(plots.read_text())
    assert [p["sparsity"] for p in pts] == [0.5, 1.0]
    assert "auc.s50" in json.loads(met.read_text())


@pytest.mark.parametrize("command,section,value,message", [
    ("learning-curve", "learning_curve", {"models": ["logreg", "nosuch"]}, "unknown model 'nosuch'"),
    ("learning-curve", "learning_curve", {"fractions": [0.0, 0.5]}, "fractions must lie in (0, 1]"),
    ("learning-curve", "learning_curve", {"fractions": [0.5, 1.5]}, "fractions must lie in (0, 1]"),
    ("learning-curve", "learning_curve", {"sparse_model": "dense"}, "sparse_model 'dense' is not one of models"),
    ("learning-curve", "learning_curve", {"repeats": 9}, "repeats=9"),
    ("sweep", "sweep", {"sparsity": [0.25, 1.2]}, "sparsity values must lie in (0, 1]"),
    ("sweep", "sweep", {"model": "logreg"}, "has no sparse gene layer"),
    ("sweep", "sweep", {"model": "nosuch"}, "unknown model 'nosuch'"),
])
def test_bad_params_one_line_error_and_no_outputs(project, tmp_path, capsys, command, section, value, message):
    d, _, _ = project
    p = _with_params(d, tmp_path, **{section: value})
    out, met, plots = tmp_path / "out", tmp_path / "m.json", tmp_path / "plots"
    rc = cli_main([command, "--params", str(p), "--encoded", str(d / "encoded"), "--splits", str(d / "splits.npz"),
                   "--out", str(out), "--metrics", str(met), "--plots", str(plots), "--no-mlflow", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err and "\n" not in err and err.startswith(f"epiflow {command}: error:")
    assert not out.exists() and not met.exists() and not plots.exists()
