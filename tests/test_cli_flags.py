"""Every numeric flag is typed and ranged before any work: a bad value is one line on stderr
naming the flag and the value, exit status 2, nothing written (before: `--tile -4` scanned
"0 blocks, complete" and exited 0; `--ngg-B 0`, `--repeats 0` ended in tracebacks)."""
from __future__ import annotations

import pytest

from pipelines import cli

CASES = [
    ("scan --bfile g --tile -4", "--tile", "-4"),
    ("scan --bfile g --tile 0", "--tile", "0"),
    ("scan --bfile g --top 0", "--top", "0"),
    ("scan --bfile g --ngg-B 0", "--ngg-B", "0"),
    ("scan --bfile g --ngg-d -1", "--ngg-d", "-1"),
    ("scan --bfile g --ngg-R 0", "--ngg-R", "0"),
    ("scan --bfile g --ngg-lam-scale 0", "--ngg-lam-scale", "0"),
    ("scan --bfile g --maf 0.7", "--maf", "0.7"),
    ("scan --bfile g --maf nan", "--maf", "nan"),
    ("scan --bfile g --threads -2", "--threads", "-2"),
    ("scan --bfile g --jobs -2", "--jobs", "-2"),
    ("scan --bfile g --ngg-piece-size 0", "--ngg-piece-size", "0"),
    ("scan --bfile g --ngg-repetitions 0", "--ngg-repetitions", "0"),
    ("scan --bfile g --pyramid-tile 0", "--pyramid-tile", "0"),
    ("scan --bfile g --checkpoint-every -1", "--checkpoint-every", "-1"),
    ("train --model logreg --repeats 0", "--repeats", "0"),
    ("train --model logreg --jobs -1", "--jobs", "-1"),
    ("train --model logreg --repeats ten", "--repeats", "ten"),
    ("learning-curve --repeats 0", "--repeats", "0"),
    ("sweep --repeats -3", "--repeats", "-3"),
    ("tune --n-trials 0", "--n-trials", "0"),
    ("tune --n-jobs 0", "--n-jobs", "0"),
    ("tune --jobs 0", "--jobs", "0"),
    ("tune --timeout -5", "--timeout", "-5"),
    ("splits --folds 1", "--folds", "1"),
    ("splits --repeats 0", "--repeats", "0"),
    ("encode --min-maf 2", "--min-maf", "2"),
    ("encode --maf 2", "--maf", "2"),
    ("ingest-bed --bfile g --maf -1", "--maf", "-1"),
    ("encode --min-call-rate -0.1", "--min-call-rate", "-0.1"),
    ("simulate --n-samples 0", "--n-samples", "0"),
    ("ingest-bed --bfile g --min-call-rate 1.5", "--min-call-rate", "1.5"),
]


@pytest.mark.parametrize("argv,flag,value", CASES, ids=[c[0] for c in CASES])
def test_bad_flag_is_one_line(argv, flag, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(argv.split())
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"epiflow {argv.split()[0]}: error: argument {flag}") and repr(value) in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_good_values_still_parse():
    p = cli.build_parser(only="scan")
    a = p.parse_args("scan --bfile g --out o --tile 512 --maf 0.05 --ngg-B 100 --threads 0 --ngg-lam-scale 2".split())
    assert (a.tile, a.maf, a.ngg_B, a.threads, a.ngg_lam_scale) == (512, 0.05, 100, 0, 2.0)


# ------------------------------------------------------------------------------------------------
# One vocabulary: the same idea has the same flag in every command, every option says what it does
# and shows its default; the spellings of earlier releases still parse (hidden from --help).

def _subparsers():
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _options(sp):
    import argparse

    return [a for a in sp._actions if not isinstance(a, argparse._HelpAction)]


def test_every_option_of_every_command_has_help():
    import argparse

    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, sp in _subparsers().items()
               for a in _options(sp) if not a.help or not a.help.strip()]
    assert not missing, f"options without help text: {missing}"
    # hidden options are the renamed spellings of earlier releases only
    from pipelines.argtypes import _Renamed

    hidden = [f"{name} {a.option_strings}" for name, sp in _subparsers().items() for a in _options(sp)
              if a.help == argparse.SUPPRESS and not isinstance(a, _Renamed)]
    assert not hidden, hidden


def test_help_shows_every_default():
    """An option with a default value shows it in --help (explicitly or by the formatter)."""
    import argparse

    lacking = []
    for name, sp in _subparsers().items():
        fmt = sp._get_formatter()
        for a in _options(sp):
            if a.help == argparse.SUPPRESS or not a.option_strings or a.default is None or a.default is False:
                continue
            text = fmt._expand_help(a) if a.help else ""
            if "default" not in text:
                lacking.append(f"{name} {a.option_strings[0]} (default {a.default!r}): {text!r}")
    assert not lacking, lacking
    text = cli.build_parser(only="scan")._subparsers._group_actions[0].choices["scan"].format_help()
    assert "(default: 0.0)" in " ".join(text.split())           # --maf 0.0 is shown, not taken for "no default"


# the idea -> its one spelling; the others must not be offered by any command's --help
VOCABULARY = {
    "minor allele frequency threshold": ("--maf", ["--min-maf", "--dosage-min-maf"]),
    "parallel workers": ("--jobs", ["--n-jobs", "--threads", "--workers", "--n-workers"]),
    "no progress bar": ("--quiet", ["--no-progress", "--silent"]),
    "MLflow logging off": ("--no-mlflow", ["--no-log", "--nolog"]),
    "MLflow experiment": ("--experiment", ["--mlflow-experiment", "--exp"]),
    "NGG settings": ("--ngg-piece-size", ["--ngg-B", "--ngg-d", "--ngg-R"]),
}


def test_one_spelling_per_idea():
    import argparse

    offered = {}
    for name, sp in _subparsers().items():
        for a in _options(sp):
            if a.help != argparse.SUPPRESS:
                for o in a.option_strings:
                    offered.setdefault(o, []).append(name)
    for idea, (good, bad) in VOCABULARY.items():
        wrong = {b: offered[b] for b in bad if b in offered}
        assert not wrong, f"{idea}: use {good}, not {wrong}"
    # the MLflow switches: stages log by default (--no-mlflow), ad-hoc commands on request (--log),
    # and reading from MLflow instead of stage outputs is --source mlflow
    assert "--mlflow" not in offered, offered.get("--mlflow")
    assert set(offered["--source"]) >= {"report", "compare"}
    assert set(offered["--log"]) >= {"scan", "compare"}
    assert set(offered["--no-mlflow"]) >= {"train", "learning-curve", "sweep", "tune", "interpret", "report", "ngg"}
    assert set(offered["--quiet"]) >= {"simulate", "encode", "train", "tune"}
    assert set(offered["--jobs"]) >= {"encode", "train", "tune", "scan"}
    assert set(offered["--maf"]) >= {"encode", "ingest-bed", "scan"}


OLD_AND_NEW = [
    ("encode --min-maf 0.01 --threads 2 --dosage-min-maf 0.05", "encode --maf 0.01 --jobs 2 --dosage-maf 0.05"),
    ("ingest-bed --bfile g --min-maf 0.02", "ingest-bed --bfile g --maf 0.02"),
    ("simulate --no-progress", "simulate --quiet"),
    ("tune --n-jobs 3", "tune --jobs 3"),
    ("compare a b --mlflow", "compare a b --source mlflow"),
    ("scan --bfile g --out o --threads 2 --workers thread --mlflow exp1 --ngg-B 50 --ngg-d 7 --ngg-R 3",
     "scan --bfile g --out o --jobs 2 --parallel thread --experiment exp1 --ngg-piece-size 50 "
     "--ngg-sketch-size 7 --ngg-repetitions 3"),
]


@pytest.mark.parametrize("old,new", OLD_AND_NEW, ids=[o.split()[0] for o, _ in OLD_AND_NEW])
def test_old_spellings_still_parse(old, new):
    name = old.split()[0]
    parse = lambda argv: vars(cli.build_parser(only=name).parse_args(argv.split()))
    a, b = parse(old), parse(new)
    assert a == b
    defaults = parse(name + (" --bfile g" if name in ("ingest-bed", "scan") else "")
                     + (" --out o" if name == "scan" else "") + (" a b" if name == "compare" else ""))
    assert a != defaults                                       # the old spelling did set something


def test_old_spellings_are_hidden_from_help():
    for name, sp in _subparsers().items():
        text = sp.format_help()
        for old in ("--min-maf", "--n-jobs", "--threads", "--workers", "--no-progress", "--ngg-B", "--mlflow "):
            assert old not in text, f"epiflow {name} --help offers {old.strip()}"
