"""A small exact 2D scan with one planted interacting pair, and a viewer server for tests."""
from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from plink_files import write_bed

CHROMS = (("1", 800), ("2", 700), ("3", 500))   # 2,000 SNPs on three chromosomes
PLANTED = (300, 1700)                           # rs300 (chromosome 1) x rs1700 (chromosome 3)


def planted_scan(d: Path, *, n: int = 300, pyramid_side: int = 1000, tile: int = 128, extra=(),
                 chroms=CHROMS, planted=PLANTED) -> SimpleNamespace:
    """PLINK files of n samples x 2,000 independent SNPs, a phenotype driven by the product of the
    two planted SNPs, and the ``epiflow scan --mode 2d`` folder of it (cell 2 SNPs: level 0 is 1,000
    pixels a side, cut into ``tile`` tiles)."""
    from pipelines import cli

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    p = sum(k for _, k in chroms)
    freq = rng.uniform(0.2, 0.5, p)
    X = rng.binomial(2, freq, size=(n, p)).astype(np.int8)
    chrom = [c for c, k in chroms for _ in range(k)]
    bp = [1_000_000 + 25_000 * q for _, k in chroms for q in range(k)]
    write_bed(d / "geno", X, chrom=chrom, bp=bp)
    a, b = X[:, planted[0]] - X[:, planted[0]].mean(), X[:, planted[1]] - X[:, planted[1]].mean()
    y = 1.2 * a * b + rng.normal(size=n)
    (d / "pheno.txt").write_text("".join(f"S{i:02d} S{i:02d} {v:.6f}\n" for i, v in enumerate(y)))
    out = d / "scan"
    rc = cli.main(["scan", "--bfile", str(d / "geno"), "--pheno", str(d / "pheno.txt"), "--mode", "2d",
                   "--top", "50", "--out", str(out), "--device", "cpu", "--pyramid-side", str(pyramid_side),
                   "--pyramid-tile", str(tile), "--threads", "1", *extra])
    assert rc == 0
    top = pd.read_csv(out / "top_pairs.tsv", sep="\t")
    return SimpleNamespace(dir=out, root=d, top=top, snp1=f"rs{planted[0]}", snp2=f"rs{planted[1]}",
                           i=planted[0], j=planted[1], n=n, p=p)


@contextlib.contextmanager
def running_server(scan_map):
    """The viewer app on a free 127.0.0.1 port in a background thread; yields its URL."""
    import anyio
    import uvicorn

    from pipelines.view.app import make_app
    from pipelines.view.serve import bind

    # anyio imports its parts on first use, and pytest rewrites anyio (a pytest plugin) on import:
    # done in the server thread, that rewrite can race another thread's compile in CPython 3.11
    # ("AST constructor recursion depth mismatch"); import them all here, in the test's thread
    for name in ("open_file", "wrap_file", "Path", "to_thread", "from_thread", "create_task_group"):
        getattr(anyio, name, None)

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(make_app(scan_map), log_level="warning", access_log=False))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        t.join(10)
        sock.close()


def get(url: str):
    """(status, body bytes, headers) of a GET without raising on HTTP errors."""
    req = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def get_json(url: str):
    status, body, _ = get(url)
    return status, json.loads(body)
