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
    ("scan --bfile g --pyramid-tile 0", "--pyramid-tile", "0"),
    ("scan --bfile g --checkpoint-every -1", "--checkpoint-every", "-1"),
    ("train --model logreg --repeats 0", "--repeats", "0"),
    ("train --model logreg --jobs -1", "--jobs", "-1"),
    ("train --model logreg --repeats ten", "--repeats", "ten"),
    ("learning-curve --repeats 0", "--repeats", "0"),
    ("sweep --repeats -3", "--repeats", "-3"),
    ("tune --n-trials 0", "--n-trials", "0"),
    ("tune --n-jobs 0", "--n-jobs", "0"),
    ("tune --timeout -5", "--timeout", "-5"),
    ("splits --folds 1", "--folds", "1"),
    ("splits --repeats 0", "--repeats", "0"),
    ("encode --min-maf 2", "--min-maf", "2"),
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
