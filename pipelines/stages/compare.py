"""`epiflow compare`: models side by side, with corrected resampled t-tests over shared folds.

By model name::

    epiflow compare biosparse logreg [sgd_l2 ...] [--reference NAME] [--mlflow] [--out DIR] [--log]

reads each model's fold AUCs from work/train/NAME/folds.tsv (or, with --mlflow, from the latest
train run of the model in the study's MLflow experiment) and refuses models scored on different
splits. Across any MLflow runs::

    epiflow compare --experiment NAME [--filter "tags.model_type = 'biosparse'"] [--tag k=v] [--runs ID ...]

tests the selected runs when they share folds and lists their metrics side by side otherwise.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from pipelines import compare
from pipelines.argtypes import renamed
from pipelines.atomic import check_output_dir, precheck_output_dir
from pipelines.errors import EpiflowError
from pipelines.params import load_params


def add_arguments(p):
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="models to compare (names under work/train/, or MLflow model tags with --source mlflow)")
    p.add_argument("--reference", default=None,
                   help="model (or run id) every other one is tested against (default: the first)")
    p.add_argument("--source", choices=["stages", "mlflow"], default="stages",
                   help="where named models' folds come from: the train stages' outputs (work/train/) or "
                        "their latest MLflow train run")
    p.add_argument("--experiment", action="append", default=None, metavar="NAME",
                   help="MLflow experiment (default: `study` in params.yaml); repeatable for run selection")
    p.add_argument("--filter", default="", metavar="EXPR",
                   help="select runs with an MLflow search filter, e.g. \"tags.model_type = 'biosparse'\" "
                        "(short tag names also match the project's epiflow.* tags)")
    p.add_argument("--tag", action="append", default=None, metavar="KEY=VALUE",
                   help="select runs carrying this tag (KEY or epiflow.KEY); repeatable")
    p.add_argument("--runs", nargs="+", default=None, metavar="RUN_ID", help="select these runs (ids or prefixes)")
    p.add_argument("--nested", action="store_true",
                   help="in run selection, also consider child runs (e.g. Optuna trials), never single folds")
    p.add_argument("--all-runs", action="store_true",
                   help="in run selection, keep every matching run, not only the latest per label")
    p.add_argument("--out", default=None, metavar="DIR", help="write table.tsv, table.md, tests.tsv and compare.png here")
    p.add_argument("--log", action="store_true", help="log a `compare` MLflow run with the table and figure")
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    renamed(p, "--mlflow", "--source", flag_value="mlflow")     # the spelling of earlier releases
    p.add_argument("--train-dir", default="work/train", help="outputs of `epiflow train` (default: work/train)")
    p.add_argument("--metrics-dir", default="metrics/train", help="metrics of `epiflow train` (default: metrics/train)")


def _precheck_out(out: Path, inputs) -> None:
    """The --out folder, refused before any work when writing there would destroy anything (an
    input folder, a folder epiflow did not write); a previous compare output may be rewritten."""
    check_output_dir(out, inputs)
    if out.is_dir() and all(p.name in compare.OUTPUT_NAMES for p in out.iterdir()):
        return
    precheck_output_dir(out, inputs)


def run(args) -> int:
    selecting = bool(args.filter or args.tag or args.runs)
    if args.models and selecting:
        raise EpiflowError("give model names or a run selection (--filter/--tag/--runs), not both")
    if not args.models and not (selecting or args.experiment):
        raise EpiflowError("name two or more models (e.g. `epiflow compare biosparse logreg`) or select "
                           "MLflow runs with --experiment/--filter/--tag/--runs")
    if args.models and len(set(args.models)) != len(args.models):
        raise EpiflowError(f"a model is named twice: {' '.join(args.models)}")
    study = load_params(args.params).get("study", "epiflow")
    tags = compare.parse_tags(args.tag)
    notes: list[str] = []
    by_name = bool(args.models)
    use_mlflow = (not by_name) or args.source == "mlflow" or bool(args.experiment)
    if by_name and len(args.models) < 2:
        raise EpiflowError("name at least two models to compare")
    if args.out:
        _precheck_out(Path(args.out), [args.train_dir, args.metrics_dir] if not use_mlflow else [])
    if use_mlflow:
        compare.connect()

    if by_name and not use_mlflow:
        scores = [compare.load_stage_scores(m, args.train_dir, args.metrics_dir) for m in args.models]
        source = f"fold AUCs from {args.train_dir}/<model>/folds.tsv"
    elif by_name:
        if args.experiment and len(args.experiment) > 1:
            raise EpiflowError("named models are looked up in one experiment; give --experiment once")
        exp = (args.experiment or [study])[0]
        scores = compare.load_mlflow_model_scores(args.models, exp)
        source = f"fold AUCs from the latest finished train run of each model in MLflow experiment '{exp}'"
    else:
        experiments = args.experiment or ([] if args.runs else [study])
        scores, notes = compare.select_runs(experiments, args.filter, tags, args.runs,
                                            nested=args.nested, all_runs=args.all_runs)
        if len(scores) < 2:
            found = ", ".join(f"{s.label} ({s.run_id[:8]})" for s in scores) or "none"
            hint = "".join(f"; {n}" for n in notes if "--all-runs" in n)
            raise EpiflowError(f"need at least two runs to compare; the selection matched {len(scores)}: {found}{hint}")
        where = ", ".join(experiments) if experiments else "the given runs' experiments"
        source = f"{len(scores)} MLflow run(s) from {where}"

    if by_name:
        why = compare.check_shared_folds(scores)
        if why:
            raise EpiflowError(f"cannot compare on different splits: {why}")
    ref = compare.pick_reference(scores, args.reference)  # validated before any output
    # runs are tested against the reference when scored on its folds; the rest are only listed
    mismatch = {s.label: compare.fold_mismatch(ref, s) for s in scores if s is not ref}
    testable = [ref] + [s for s in scores if s is not ref and mismatch[s.label] is None]
    tests = None
    if len(testable) >= 2:
        tests = compare.pairwise_tests(testable, ref.label)
        notes[:0] = [f"not tested: {why}" for why in mismatch.values() if why]
    else:
        first = next(iter(mismatch.values()))
        notes.insert(0, f"no paired tests: the runs were not scored on the same folds ({first}); metrics only")
    scores = [ref] + [s for s in scores if s is not ref]  # the reference first in the table
    table = compare.summary_table(scores)
    with_run = use_mlflow
    print(f"{source}\n")
    print(compare.format_report(table, tests, notes, with_run=with_run))

    if args.out or args.log:
        if args.out:
            written = compare.write_outputs(Path(args.out), scores, table, tests, notes, with_run, args.reference)
            print(f"\nwritten: {', '.join(str(p) for p in written)}")
        if args.log:
            with tempfile.TemporaryDirectory() as tmp:
                files = (compare.write_outputs(Path(tmp), scores, table, tests, notes, with_run, args.reference)
                         if not args.out else written)
                experiment = study if by_name and not use_mlflow else (args.experiment or [study])[0]
                run_id = compare.log_comparison(scores, tests, files, experiment, reference=args.reference,
                                                filter_string=args.filter, source=source)
            print(f"logged MLflow run {run_id}")
    return 0
