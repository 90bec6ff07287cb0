"""``epiflow view SCAN_DIR``: the map of a 2D scan in the browser.

    epiflow view results/scan2d [--port 8765] [--host 127.0.0.1] [--no-browser] [--genes genes.gtf]

Serves a pan-and-zoom genome x genome map of the scan's pyramid (``SCAN_DIR/pyramid``; a tiled NGG scan:
its map of NGG scores, ``SCAN_DIR/pyramid_effect``) on
127.0.0.1 (a free port unless ``--port`` is given), prints the URL and opens it in the browser when
there is one. Hovering names the pair holding a pixel's maximum; clicking opens the pair's card
(interaction effect, statistic, p, n, two-locus genotype table and box plot, recomputed from the
scan's genotypes and phenotype named in ``summary.json``); the side list jumps to the top pairs and
the search box to a SNP id, chromosome, region (``chr3:10.5Mb-12Mb``) or a gene of ``--genes``.
Runs until Ctrl-C; needs no network.
"""
from __future__ import annotations

import sys

from pipelines.argtypes import count


def add_arguments(p) -> None:
    p.add_argument("scan_dir", metavar="SCAN_DIR", help="output folder of a 2D exact scan (holds pyramid/) or of a tiled NGG 2D scan (holds pyramid_effect/ only)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; anything else exposes the results to the network)")
    p.add_argument("--port", type=count(0, 65535), default=0, help="port (default 0: a free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.add_argument("--bfile", help="genotypes of the scan (default: as recorded in SCAN_DIR/summary.json)")
    p.add_argument("--pheno", help="phenotype of the scan (default: as recorded in SCAN_DIR/summary.json)")
    p.add_argument("--pheno-col", help="phenotype column (default: as recorded)")
    p.add_argument("--covar", help="covariates of the scan (default: as recorded)")
    p.add_argument("--covar-cols", help="comma-separated covariate columns the scan used (default: all)")
    p.add_argument("--genes", help="GTF file whose gene names the search box finds")


def run(args) -> int:
    from pipelines.view.app import make_app
    from pipelines.view.data import ScanMap
    from pipelines.view.serve import bind, is_loopback, open_browser, serve

    scan_map = ScanMap(args.scan_dir, bfile=args.bfile, pheno=args.pheno, pheno_col=args.pheno_col,
                       covar=args.covar, covar_cols=args.covar_cols.split(",") if args.covar_cols else None,
                       genes=args.genes)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can read the scan results",
              file=sys.stderr)
    print(f"epiflow view: serving {args.scan_dir} at {url} (Ctrl-C to stop)", flush=True)
    if not args.no_browser and not open_browser(url):
        print("no browser to open here: open the URL above in one", flush=True)
    try:
        serve(make_app(scan_map), sock)
    finally:
        sock.close()
    return 0
