"""Size on disk and build time of a 2D scan's map pyramid, and the viewer's cost per tile.

Reads level 0 back from SCAN_DIR/pyramid, rebuilds the whole pyramid with the writer the scan
uses (``pipelines.workflows.scan.write_pyramid``) into a temporary folder, and times it; then
times the viewer serving every tile of the whole-genome view and of one level-0 view (cold: read,
float16, gzip). Reference in the same run: the scan's own time (summary.json) and the raw float32
size of level 0. Writes benchmarks/results/view_pyramid_<name>.json.

    .venv/bin/python benchmarks/bench_view_pyramid.py SCAN_DIR [--name hlc]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.view.data import ScanMap  # noqa: E402
from pipelines.view.mcool import level0_grid  # noqa: E402
from pipelines.workflows.scan import write_pyramid  # noqa: E402


def _size(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scan_dir")
    ap.add_argument("--name", default=None, help="result name (default: the folder's name)")
    args = ap.parse_args()
    sm = ScanMap(args.scan_dir)
    name = args.name or Path(args.scan_dir).resolve().name
    grid = level0_grid(sm)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        idx = write_pyramid(Path(tmp) / "pyramid", grid, sm.cell, sm.tile_side, sm.axis,
                            sm.index.get("value", "statistic"), sm.segments)
        build = time.perf_counter() - t0
        size = _size(Path(tmp) / "pyramid")
    n_tiles = sum(lv["n_tiles"] for lv in idx["levels"])
    fresh = ScanMap(args.scan_dir)                       # cold tile cache
    # whole-genome view of a 1,000-pixel map at >= 2 px per map pixel, and a level-0 view of 1000 px
    side0 = sm.index["levels"][0]["side"]
    k_over = max(0, min(sm.n_levels - 1, math.ceil(math.log2(max(side0 * 2 / 1000, 1)))))
    t = sm.tile_side
    over = [(k_over, r, c) for r in range(math.ceil(sm.index["levels"][k_over]["side"] / t))
            for c in range(r, math.ceil(sm.index["levels"][k_over]["side"] / t))]
    span = max(1, math.ceil(500 / t))
    deep = [(0, r, c) for r in range(span) for c in range(r, span + 1)]
    timings = {}
    for label, tiles in (("overview", over), ("level0_view", deep)):
        t0 = time.perf_counter()
        nbytes = sum(len(fresh.tile(*q, gzip=True) or b"") for q in tiles)
        timings[label] = {"level": tiles[0][0], "tiles": len(tiles), "seconds": time.perf_counter() - t0,
                          "bytes_gzip": nbytes}
    summary = json.loads((Path(args.scan_dir) / "summary.json").read_text()) if (Path(args.scan_dir) / "summary.json").is_file() else {}
    scan_s = summary.get("seconds_scan")
    raw = side0 * side0 * 4
    res = {"name": name, "n_snps": sm.p, "cell_snps": sm.cell, "level0_side": side0, "n_levels": sm.n_levels,
           "tile": sm.tile_side, "n_tiles": n_tiles, "pyramid_bytes": size, "build_seconds": build,
           "scan_seconds": scan_s, "build_over_scan": (build / scan_s) if scan_s else None,
           "level0_raw_float32_bytes": raw, "size_over_raw_level0": size / raw, "serve": timings,
           "device_of_scan": summary.get("device"), "machine": platform.node()}
    print(f"{name}: {sm.p:,} SNPs, cell {sm.cell}, level 0 {side0}^2, {sm.n_levels} levels, {n_tiles} tiles; "
          f"pyramid {size / 2**20:.1f} MiB ({size / raw:.2f} x raw float32 level 0), built in {build:.2f} s"
          + (f" ({build / scan_s:.3f} x the scan's {scan_s:.1f} s)" if scan_s else ""))
    for label, v in timings.items():
        print(f"  serve {label}: {v['tiles']} tiles of level {v['level']} in {v['seconds'] * 1000:.0f} ms cold "
              f"({v['seconds'] * 1000 / max(v['tiles'], 1):.1f} ms a tile, {v['bytes_gzip'] / 2**10:.0f} KiB gzip)")
    out = REPO / "benchmarks" / "results" / f"view_pyramid_{name}.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
