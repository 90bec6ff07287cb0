"""benchmarks/bench_table1.py at a tiny size: the result file has the fields the paper-size run
reports, and running the scikit-learn models in a thread beside the nets changes no AUC."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_table1", ROOT / "benchmarks" / "bench_table1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table1_overlap_gives_the_sequential_aucs(tmp_path, monkeypatch):
    monkeypatch.setenv("EPIFLOW_FOLD_MEMORY_GB", "1")
    bench = _bench()
    common = ["--n-samples", "200", "--n-genes", "400", "--repeats", "1", "--epochs", "1",
              "--models", "logreg,sgd_l2,rf_genes", "--no-mlflow", "--quiet", "--device", "cpu"]
    assert bench.main(common + ["--overlap", "off", "--out", str(tmp_path / "seq.json")]) == 0
    assert bench.main(common + ["--overlap", "on", "--cpu-jobs", "2", "--out", str(tmp_path / "par.json")]) == 0
    seq = json.loads((tmp_path / "seq.json").read_text())
    par = json.loads((tmp_path / "par.json").read_text())
    for d in (seq, par):
        assert d["n_samples"] == 200 and d["n_genes"] == 400 and d["n_models"] == 3 and d["n_folds"] == 3
        assert d["device"] == "cpu" and d["total_s"] > 0
        assert list(d["models"]) == ["logreg", "sgd_l2", "rf_genes"]      # params.yaml order
    assert par["overlap_cpu_models"] and not seq["overlap_cpu_models"]
    for m in seq["models"]:
        assert seq["models"][m]["auc_mean"] == par["models"][m]["auc_mean"]
        assert seq["models"][m]["auc_min"] == par["models"][m]["auc_min"] <= seq["models"][m]["auc_mean"]
        assert 0.0 < seq["models"][m]["auc_mean"] < 1.0
