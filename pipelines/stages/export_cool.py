"""``epiflow export-cool SCAN_DIR --out map.mcool``: a 2D scan's map for HiGlass and other Hi-C browsers.

Writes a multi-resolution cooler file (``map.mcool::resolutions/<bp>``) whose pixels hold the
largest pair statistic under them (max aggregation at every resolution, never sums), built from
level 0 of the scan's map pyramid. ``--value nlp`` stores -log10 p instead of the chi-square;
``--base-resolution`` sets the finest bin in bp (default: about one bin per level-0 map cell).
"""
from __future__ import annotations

from pipelines.argtypes import count


def add_arguments(p) -> None:
    p.add_argument("scan_dir", metavar="SCAN_DIR", help="output folder of a 2D exact scan (holds pyramid/)")
    p.add_argument("--out", required=True, help="the .mcool file to write")
    p.add_argument("--value", choices=["stat", "nlp"], default="stat",
                   help="pixel value: the interaction chi-square (stat) or -log10 p (nlp)")
    p.add_argument("--base-resolution", type=count(1), default=None,
                   help="finest bin size in bp (default: 1 kb x 2^k, about one bin per level-0 map cell)")


def run(args) -> int:
    from pipelines.atomic import precheck_output_file
    from pipelines.view.mcool import export_mcool

    precheck_output_file(args.out, [f"{args.scan_dir}/pyramid/index.json"], "--out")
    export_mcool(args.scan_dir, args.out, base=args.base_resolution, value=args.value)
    return 0
