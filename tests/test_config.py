"""The params.yaml schema (pipelines/config.py): the repository's file validates, every section's
defaults equal what the code applies when a key is left out, and bad values are one-line errors
naming the file, the dotted key and the value, through load_params and the real CLI, before any work."""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines import config
from pipelines.config import Params, defaults, load_config, validate_params
from pipelines.errors import EpiflowError
from pipelines.params import load_params, section

REPO = Path(__file__).resolve().parents[1]
EPIFLOW = Path(sys.executable).parent / "epiflow"


def _attr(name: str, *modules: str):
    """``name`` from the first of ``modules`` that has it (code moves between modules)."""
    import importlib

    for mod in modules:
        try:
            value = getattr(importlib.import_module(mod), name, None)
        except ImportError:
            continue
        if value is not None:
            return value
    pytest.fail(f"{name} not found in {', '.join(modules)}")


def _write(tmp_path, data, name="BAD.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return p


# ------------------------------------------------------------------------------ the repository's file
def test_repository_params_validate():
    raw = load_params(REPO / "params.yaml")
    cfg = load_config(REPO / "params.yaml")
    assert isinstance(cfg, Params)
    # the user's values, as given (not filled in), and the typed view agrees with them
    assert raw == yaml.safe_load((REPO / "params.yaml").read_text())
    assert "max_epochs" in raw["train"] and "input_mode" not in raw["train"]
    assert cfg.train.max_epochs == raw["train"]["max_epochs"] and cfg.train.input_mode == "auto"
    assert cfg.study == raw["study"]
    assert cfg.ngg.ngg.B == raw["ngg"]["ngg"]["B"] and cfg.ngg.ngg.lam is None
    assert cfg.tune.space["lr"] == [0.0003, 0.03, "log"]
    assert cfg.tune_ngg.search.B == [20, 2000]
    assert set(cfg.models) == set(raw["models"])
    assert cfg.models["rf_activations"]["type"] == "rf_activations"
    assert cfg.models["rf_activations"]["net"]["type"] == "logreg"
    # every section of the file is one of the schema's
    assert set(raw) <= set(Params.model_fields)


def test_frozen_and_missing_file(tmp_path):
    cfg = load_config(tmp_path / "nowhere.yaml")
    assert cfg == Params() and cfg.train.max_epochs == 30
    assert load_params(tmp_path / "nowhere.yaml") == {}
    with pytest.raises(Exception):
        cfg.train.max_epochs = 3          # frozen
    with pytest.raises(EpiflowError, match="did you mean 'train'"):
        defaults("trian")


def test_models_resolve_like_the_zoo():
    """load_config's models: entries are the registry's (type, config) of each entry, as the zoo's."""
    from pipelines import zoo

    raw = load_params(REPO / "params.yaml")
    cfg = load_config(REPO / "params.yaml")
    for name, entry in cfg.models.items():
        mtype, c = zoo.resolve(name, raw["models"])
        assert entry == {"type": mtype, **c}


def test_models_without_the_registry(monkeypatch, tmp_path):
    """Where models.registry is absent: a mapping of name -> mapping (type defaulting to the name)."""
    monkeypatch.setattr(config, "_registry", lambda: None)
    cfg = validate_params({"models": {"a": {"type": "logreg", "lr": 0.1}, "b": None}}, "p.yaml")
    assert cfg.models == {"a": {"type": "logreg", "lr": 0.1}, "b": {"type": "b"}}
    for bad, text in (({"a": [1]}, "p.yaml: models.a: must be a mapping of settings with a type, got [1]"),
                      ({"a": {"type": 3}}, "p.yaml: models.a: type must be a model type name, got 3"),
                      ([1], "p.yaml: models: must be a mapping")):
        with pytest.raises(EpiflowError) as exc:
            validate_params({"models": bad}, "p.yaml")
        assert str(exc.value).startswith(text), str(exc.value)


def test_validation_is_cached_per_file_version(tmp_path, monkeypatch):
    p = _write(tmp_path, {"train": {"max_epochs": 3}}, "params.yaml")
    calls = []
    real = config._validate
    monkeypatch.setattr(config, "_validate", lambda data, path: calls.append(path) or real(data, path))
    for _ in range(3):
        assert load_params(p) == {"train": {"max_epochs": 3}}
    assert len(calls) == 1
    p.write_text("train:\n  max_epochs: 4\n")
    assert load_params(p) == {"train": {"max_epochs": 4}} and len(calls) == 2
    p.write_text("train:\n  max_epochs: ten\n")
    with pytest.raises(EpiflowError, match="max_epochs"):
        load_params(p)


# ------------------------------------------------------------------------- defaults equal the code's
def test_simulate_defaults_are_the_simulators():
    from models.simulate.cohort import DEFAULTS, simulate_cohort

    sig = inspect.signature(simulate_cohort).parameters
    code = {k: sig[k].default for k in ("n_samples", "n_genes", "case_fraction", "seed")} | DEFAULTS
    assert defaults("simulate") == code


def test_encode_defaults_are_the_encoders():
    from pipelines.annotate import DEFAULT_CLASSES
    from pipelines.encode import dosage_matrix_vcf, encode_vcf

    d = defaults("encode")
    sig = inspect.signature(encode_vcf).parameters
    assert d["classes"] == list(DEFAULT_CLASSES) == list(config.DEFAULT_CLASSES)
    for k in ("count", "pass_only", "annotation", "haploid", "threads", "min_maf", "max_maf", "min_call_rate",
              "fasta", "genes"):
        assert d[k] == sig[k].default, k
    assert d["dosage_missing"] == inspect.signature(dosage_matrix_vcf).parameters["missing"].default
    # no default input paths: the stage asks for --vcf / --samples; dosage_min_maf empty: min_maf
    assert d["vcf"] is d["samples"] is d["snp_dosage"] is d["dosage_min_maf"] is None


def test_ingest_defaults_are_the_stages():
    DEFAULTS = _attr("DEFAULTS", "pipelines.stages.ingest_bed", "pipelines.workflows.ingest")
    IMPUTE = _attr("IMPUTE", "pipelines.workflows.ingest", "pipelines.stages.ingest_bed")
    ingest_bed = _attr("ingest_bed", "pipelines.workflows.ingest", "pipelines.stages.ingest_bed")
    d = defaults("ingest")
    assert {k: d[k] for k in DEFAULTS} == DEFAULTS
    sig = inspect.signature(ingest_bed).parameters
    for k in ("pheno_col", "pheno_format", "covar_format", "min_maf", "min_call_rate", "impute"):
        assert d[k] == sig[k].default, k
    assert d["impute"] == IMPUTE[0]
    assert all(d[k] is None for k in set(d) - set(DEFAULTS))


def test_ngg_defaults_are_the_stages():
    from models.simulate.pheno import PAIR_MODELS

    DEFAULTS = _attr("DEFAULTS", "pipelines.workflows.ngg", "pipelines.stages.ngg")
    assert defaults("ngg") == DEFAULTS
    assert config.PAIR_MODELS == PAIR_MODELS


def test_train_defaults_are_the_trainers():
    from models.genes import DEFAULT_TRAIN

    assert defaults("train") == DEFAULT_TRAIN


def _code_defaults(relpath: str, pattern: str) -> dict:
    """{key: literal default} of the ``.get("key", literal)`` calls matching ``pattern`` in a module of
    the repository (empty once the module takes its defaults from the schema)."""
    import ast
    import re

    src = (REPO / relpath).read_text()
    return {m.group(1): ast.literal_eval(m.group(2))
            for m in re.finditer(pattern + r'\.get\("(\w+)", ([^()]+?|\[[^\]]*\])\)', src)}


def test_splits_defaults_are_the_stages():
    # pipelines/stages/splits.py: int(cfg.get("repeats", 10)), folds 3, seed 7
    code = _code_defaults("pipelines/stages/splits.py", r"cfg")
    d = defaults("splits")
    assert {k: d[k] for k in code} == code


def test_learning_curve_and_sweep_defaults_are_the_stages():
    try:
        lc_config = _attr("learning_curve_config", "pipelines.curves")
        sw_config = _attr("sweep_config", "pipelines.curves")
    except pytest.fail.Exception:
        lc_config = _attr("resolve_config", "pipelines.stages.learning_curve")
        sw_config = _attr("resolve_config", "pipelines.stages.sweep")
    models = {"logreg": {"type": "logreg"}, "biosparse": {"type": "biosparse"}}
    lc = lc_config({"models": models, "learning_curve": {"models": ["logreg", "biosparse"]}})
    d = defaults("learning_curve")
    assert (lc["fractions"], lc["repeats"], lc["seed"]) == (d["fractions"], d["repeats"], d["seed"])
    assert d["models"] is None and d["sparse_model"] is None      # required / chosen from the models listed
    sw = sw_config({"models": models})
    d = defaults("sweep")
    assert (sw["model"], sw["sparsity"], sw["repeats"]) == (d["model"], d["sparsity"], d["repeats"])


def test_report_defaults_are_the_stages():
    from pipelines.report import ADDITIVE_TYPES
    from pipelines.stages.report import DEFAULT_EXTRAS, _settings

    d = defaults("report")
    assert d == {"additive_types": list(ADDITIVE_TYPES), "extras": DEFAULT_EXTRAS}
    assert _settings({}, "params.yaml") == (tuple(d["additive_types"]), d["extras"])


def test_tune_defaults_are_the_tuners():
    from pipelines.tune import DEFAULT_PRUNER

    d = defaults("tune")
    assert {k: v for k, v in d["pruner"].items() if v is not None} == DEFAULT_PRUNER
    # pipelines/tune.py zoo_study_spec and pipelines/stages/tune.py: tcfg.get(key, default)
    code = {**_code_defaults("pipelines/tune.py", r"tcfg"), **_code_defaults("pipelines/stages/tune.py", r"tcfg")}
    assert code == {k: d[k] for k in code}
    assert d["space"] == {} and d["model"] is d["n_trials"] is d["storage"] is d["experiment"] is None
    assert (d["inner_folds"], d["outer_repeat"], d["outer_fold"], d["seed"]) == (3, 0, 0, 0)


def test_tune_ngg_defaults_are_the_tuners():
    from pipelines.tune_ngg import CONFIG_DEFAULTS, resolve_config

    assert defaults("tune_ngg") == CONFIG_DEFAULTS == resolve_config({})
    # and a fully spelled-out section of defaults means the same to the tuner
    assert resolve_config(defaults("tune_ngg")) == resolve_config({})


def test_study_default():
    assert defaults("study") == "epiflow"
    assert set(config.SECTIONS) == {"simulate", "encode", "ingest", "ngg", "splits", "train", "models",
                                    "learning_curve", "sweep", "report", "interpret", "tune", "tune_ngg",
                                    "executor"}


# --------------------------------------------------------------------------------- one-line errors
BAD = [
    ({"models": {"logreg": {"type": "logreg", "lr": "fast"}}}, ["logreg", "lr", "'fast'"]),
    ({"train": {"max_epochs": "ten"}}, ["train.max_epochs: must be an integer >= 1, got 'ten'"]),
    ({"train": {"batch_size": 0}}, ["train.batch_size: must be >= 1, got 0"]),
    ({"train": {"device": "tpu"}}, ["train.device: must be one of auto, cpu, cuda, got 'tpu'"]),
    ({"ngg": {"device": "tpu"}}, ["ngg.device: must be one of auto, cpu, cuda, got 'tpu'"]),
    ({"ngg": {"pyramid": {"side": 1024, "tile": -256}}}, ["ngg.pyramid.tile: must be >= 1, got -256"]),
    ({"train": {"max_epoch": 3}}, ["train.max_epoch: unknown key (did you mean 'max_epochs'?)"]),
    ({"trian": {"max_epochs": 3}}, ["trian: unknown section (did you mean 'train'?)"]),
    ({"train": [3, 128]}, ["train: must be a mapping, got [3, 128]"]),
    ({"ngg": "fast"}, ["ngg: must be a mapping, got 'fast'"]),
    ({"splits": {"folds": 1}}, ["splits.folds: must be >= 2, got 1"]),
    ({"ngg": {"heritability": {"holdout": 1.5}}}, ["ngg.heritability.holdout: must be <= 0.9, got 1.5"]),
    ({"ngg": {"simulate": {"h2_add": 1.2}}}, ["ngg.simulate.h2_add: must be <= 1, got 1.2"]),
    ({"ngg": {"geno": 1.5}}, ["ngg.geno: must be <= 1, got 1.5"]),
    ({"tune_ngg": {"holdout_fraction": 1.0}}, ["tune_ngg.holdout_fraction: must be < 1, got 1.0"]),
    ({"simulate": {"case_fraction": 1.5}}, ["simulate.case_fraction: must be < 1, got 1.5"]),
    ({"encode": {"min_maf": 2}}, ["encode.min_maf: must be <= 1, got 2"]),
    ({"learning_curve": {"fractions": [0.5, 1.5]}}, ["learning_curve.fractions: fractions must lie in (0, 1]"]),
    ({"sweep": {"sparsity": [0.25, 1.2]}}, ["sweep.sparsity: sparsity values must lie in (0, 1]"]),
    ({"encode": {"count": "allele"}}, ["encode.count: must be one of carrier, dosage, got 'allele'"]),
    ({"ngg": {"method_2d": "fast"}}, ["ngg.method_2d: must be one of exact, ngg, got 'fast'"]),
    ({"ngg": {"trait": "ordinal"}}, ["ngg.trait: must be one of auto, qt, binary, got 'ordinal'"]),
    ({"ngg": {"pheno_format": "csv"}}, ["ngg.pheno_format: must be one of auto, plink, gemma, tsv, got 'csv'"]),
    ({"ngg": {"simulate": {"pair_model": "sum"}}}, ["ngg.simulate.pair_model: must be one of product"]),
    ({"encode": {"annotation": "vep"}}, ["encode.annotation: must be auto, csq, ann", "got 'vep'"]),
    ({"tune": {"space": {"lr": [0.1, 0.01]}}}, ["tune.space.lr: needs low < high, got [0.1, 0.01]"]),
    ({"tune": {"space": {"lr": "1e-3"}}}, ["tune.space.lr: must be [low, high]", "got '1e-3'"]),
    ({"tune": {"pruner": {"type": "median", "percentile": 25}}}, ["tune.pruner: percentile does not apply"]),
    ({"tune_ngg": {"mode": "auc"}}, ["tune_ngg.mode: must be one of recall, r2, got 'auc'"]),
    ({"tune_ngg": {"tune_seeds": [1, 2], "holdout_seed": 2}}, ["tune_ngg: holdout_seed 2 is also a tuning seed"]),
    ({"simulate": {"h2_additive": 0.6, "h2_epistatic": 0.5}}, ["simulate: h2_additive + h2_epistatic must be < 1"]),
    ({"study": 3}, ["study: must be a non-empty string, got 3"]),
    ({"models": {"logreg": "fast"}}, ["logreg", "must be a mapping"]),
    ("train:\n  lr: 1e-3\n", ["train.lr: unknown key"]),
    ("tune:\n  seed: 1e3\n", ["tune.seed: must be an integer >= 0, got '1e3'", "YAML reads it as text"]),
]


@pytest.mark.parametrize("data, parts", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_values_are_one_line_errors(tmp_path, data, parts):
    p = _write(tmp_path, data)
    with pytest.raises(EpiflowError) as exc:
        load_params(p)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"{p}: "), text
    for part in parts:
        assert part in text, text


@pytest.mark.parametrize("data, parts", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_values_stop_the_cli_before_any_work(tmp_path, monkeypatch, capsys, data, parts):
    from pipelines.cli import main

    p = _write(tmp_path, data)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rc = main(["train", "--model", "logreg", "--params", str(p)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith(f"epiflow train: error: {p}: "), err
    for part in parts:
        assert part in err, err
    assert list(work.iterdir()) == [] and not (tmp_path / "mlflow.db").exists()


def test_real_cli_exits_2_with_one_line(tmp_path):
    p = _write(tmp_path, {"train": {"max_epochs": "ten", "batch_size": 0}})
    r = subprocess.run([str(EPIFLOW), "train", "--model", "logreg", "--params", str(p)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"epiflow train: error: {p}: train.max_epochs: must be an integer >= 1, got 'ten'")
    assert "(and 1 more error)" in lines[0]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["BAD.yaml"]


def test_every_stage_validates_its_params_first(tmp_path, capsys, monkeypatch):
    """The stages that read params.yaml all go through load_params: same one-line error."""
    from pipelines.cli import main

    p = _write(tmp_path, {"tune": {"n_trials": -1}})
    monkeypatch.chdir(tmp_path)
    for argv in (["splits"], ["simulate", "--out", str(tmp_path / "sim")], ["encode"], ["tune"],
                 ["ngg", "1d"], ["report"], ["learning-curve"], ["sweep"], ["ingest-bed"]):
        rc = main([*argv, "--params", str(p)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.endswith(f"{p}: tune.n_trials: must be >= 0, got -1"), (argv, err)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["BAD.yaml"]


# ------------------------------------------------------------------------------ valid but unusual
@pytest.mark.parametrize("data", [
    {},
    {"tune_ngg": None},                                  # read as `or {}`: all defaults
    {"ngg": {"ngg": None, "pyramid": None}},             # the ngg stage skips empty sub-sections
    {"tune": {"pruner": None, "space": None}},
    {"ngg": {"ngg": {"B": 100.0}}, "simulate": {"n_samples": 200.0}},   # integral floats, as accepted today
    {"models": {"logreg": None}},                        # type defaults to the name
    {"encode": {"gmt": None}},
    {"tune": {"pruner": {"type": "percentile", "percentile": 25.0}}},
    {"tune_ngg": {"tune_seeds": 3, "holdout_seed": 4, "score": "recall_at_5"}},
    {"ingest": {"covar_cols": "age, sex", "pheno_col": 2}},
])
def test_valid_configurations(tmp_path, data):
    p = _write(tmp_path, data, "params.yaml")
    assert load_params(p) == (data or {})
    load_config(p)


def test_section_keeps_its_interface():
    params = load_params(REPO / "params.yaml")
    assert section(params, "train")["max_epochs"] == params["train"]["max_epochs"]
    assert section(params, "ingest") == {}
    with pytest.raises(EpiflowError, match="section 'train' must be a mapping"):
        section({"train": [1]}, "train")


def test_tuned_params_file_validates(tmp_path):
    """epiflow tune --rerun-best writes the whole file back with one tuned model: it must validate."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    tuned = {**params, "models": {"biosparse-tuned": {"type": "biosparse", **{
        k: v for k, v in params["models"]["biosparse"].items() if k != "type"}, "lr": 0.0123, "focal_alpha": 0.4}},
        "train": {**params["train"], "max_epochs": 7}}
    p = _write(tmp_path, tuned, "tuned_params.yaml")
    assert load_config(p).models["biosparse-tuned"]["lr"] == 0.0123
