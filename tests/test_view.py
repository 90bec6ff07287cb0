"""The map viewer (``epiflow view``) and ``epiflow export-cool`` on a planted 2D scan.

The fixture is an exact 2D scan of 2,000 independent SNPs whose phenotype is driven by one pair
(rs300 x rs1700): the pair must be rank 1 of ``top_pairs.tsv``, the best pair under the whole-map
pixel, the pair the hover names at level 0, and its card's statistic must equal the table's. The
browser test drives Debian's Chromium through Playwright (skipped cleanly without either), saves
a screenshot per step and the measured load times under ``$EPIFLOW_TEST_ARTIFACTS/view`` (else a
pytest temporary folder), and asserts the first view and every zoom step's tiles load in time.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from view_fixture import get, get_json, planted_scan, running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return planted_scan(tmp_path_factory.mktemp("view"), extra=("--no-plots",))


@pytest.fixture(scope="module")
def scan_map(fx):
    from pipelines.view.data import ScanMap

    return ScanMap(fx.dir)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = os.environ.get("EPIFLOW_TEST_ARTIFACTS")
    d = Path(root) / "view" if root else tmp_path_factory.mktemp("view_artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_planted_pair_tops_the_scan(fx):
    assert {fx.top.snp1[0], fx.top.snp2[0]} == {fx.snp1, fx.snp2}
    assert fx.top.stat[0] > 2 * fx.top.stat[1]


@pytest.mark.slow
def test_mlflow_run_has_overview_and_view_command(tmp_path, monkeypatch):
    """(slow: a fresh SQLite MLflow store and the scan's figures take 5-20 s)"""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    f = planted_scan(tmp_path, n=120, chroms=(("1", 40), ("2", 30)), planted=(5, 60), pyramid_side=32, tile=16,
                     extra=("--experiment", "view-test"))
    import mlflow

    runs = mlflow.search_runs(experiment_names=["view-test"])
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["run_id"][0])}
    assert {"map_overview.png", "view_command.txt", "top_pairs.tsv"} <= arts
    cmd = runs["tags.epiflow.view"][0]
    assert cmd.startswith("epiflow view ") and Path(cmd.split(" ", 2)[2]) == f.dir.resolve()
    text = mlflow.artifacts.load_text(f"runs:/{runs['run_id'][0]}/view_command.txt")
    assert text.strip() == cmd


def test_tiles_are_the_pyramid_in_float16(scan_map, fx):
    idx = json.loads((fx.dir / "pyramid" / "index.json").read_text())
    for lv in idx["levels"]:
        k = lv["level"]
        for f in sorted((fx.dir / "pyramid" / f"L{k}").glob("*.npz"))[:3]:
            r, c = map(int, f.stem.split("_"))
            want = np.load(f)["v"].astype(np.float16)
            got = np.frombuffer(scan_map.tile(k, r, c), dtype="<f2").reshape(want.shape)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(np.frombuffer(gzip.decompress(scan_map.tile(k, r, c, gzip=True)), "<f2"),
                                          got.ravel())
    assert scan_map.tile(0, 5, 1) is None            # below the diagonal: no pair, no tile


def test_every_level_names_the_planted_pair(scan_map, fx):
    top = fx.top.iloc[0]
    for level in (scan_map.n_levels - 1, 4, 0):
        w = scan_map.cell * 2 ** level
        px = scan_map.pixel(level, fx.i // w, fx.j // w)
        assert (px["pair"]["snp1"]["snp"], px["pair"]["snp2"]["snp"]) == (fx.snp1, fx.snp2)
        assert px["value"] == pytest.approx(top.stat, rel=1e-6)          # max kept at every level
        assert px["pair"]["stat"] == pytest.approx(top.stat, rel=1e-6)  # recomputed from genotypes
        assert px["rows"]["first"]["pos"] == fx.i // w * w and px["rows"]["n"] == min(w, fx.p)
    far = scan_map.pixel(0, 10, 400)
    assert far["pair"]["stat"] == pytest.approx(far["value"], rel=1e-5)   # the argmax of its 2 x 2 cell
    assert scan_map.pixel(0, 400, 10)["value"] is None                  # lower triangle


def test_pair_card_equals_top_pairs(scan_map, fx):
    from pipelines.workflows.genotypes import GenotypeSet

    top = fx.top.iloc[0]
    card = scan_map.pair(fx.j, fx.i)                # order does not matter
    v = card["computed"]
    assert card["snp1"]["snp"] == fx.snp1 and card["snp2"]["snp"] == fx.snp2
    assert v["stat"] == pytest.approx(top.stat, rel=1e-7)
    assert v["effect"] == pytest.approx(top.beta_int, rel=1e-7)
    assert v["p"] == pytest.approx(top.p, rel=1e-6) and v["n"] == top.n == fx.n
    assert card["listed"]["rank"] == 1
    gs = GenotypeSet.load(fx.root / "geno")
    a, b = gs.dosage[fx.i], gs.dosage[fx.j]
    y = np.array([float(line.split()[2]) for line in (fx.root / "pheno.txt").read_text().splitlines()])
    cells = {(c["g1"], c["g2"]): c for c in card["table"]}
    assert sum(c["n"] for c in card["table"]) == fx.n
    for (u, w), c in cells.items():
        m = (a == u) & (b == w)
        assert c["n"] == m.sum()
        if m.any():
            assert c["mean"] == pytest.approx(y[m].mean()) and c["median"] == pytest.approx(np.median(y[m]))


def test_search(scan_map, fx, tmp_path):
    from pipelines.errors import EpiflowError
    from pipelines.view.data import ScanMap

    s = scan_map.search(fx.snp2.upper())
    assert s["kind"] == "snp" and s["focus"] == [fx.i, fx.j]
    assert scan_map.search("chr2") == {"kind": "chromosome", "label": "2", "start": 800, "end": 1500, "focus": None}
    r = scan_map.search("3:1.5Mb-2,000,000")     # SNPs at 1 Mb + 25 kb * k on chromosome 3 (from SNP 1500)
    assert (r["start"], r["end"]) == (1520, 1541)
    with pytest.raises(EpiflowError, match="neither a SNP id"):
        scan_map.search("rs99999")
    gtf = tmp_path / "genes.gtf"
    gtf.write_text('3\ttest\texon\t1610001\t1640000\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; gene_name "GENEX";\n')
    g = ScanMap(fx.dir, genes=gtf).search("genex")
    assert g["kind"] == "gene" and (g["start"], g["end"]) == (1525, 1526)


def test_server_api(scan_map, fx):
    with running_server(scan_map) as url:
        status, meta = get_json(url + "/api/meta")
        assert status == 200 and meta["n_snps"] == fx.p and meta["cell"] == 2
        assert [c["chrom"] for c in meta["chromosomes"]] == ["1", "2", "3"]
        status, body, headers = get(url + "/api/tile/0/2/5")
        assert status == 200 and body == scan_map.tile(0, 2, 5)
        assert get(url + "/api/tile/0/6/1")[0] == 204
        status, err = get_json(url + "/api/pixel?level=99&row=0&col=0")
        assert status == 400 and "no level 99" in err["error"] and "\n" not in err["error"]
        status, err = get_json(url + "/api/pixel?level=x")
        assert status == 400 and "integer" in err["error"]
        status, top = get_json(url + "/api/top?limit=3")
        assert [t["rank"] for t in top] == [1, 2, 3] and (top[0]["i"], top[0]["j"]) == (fx.i, fx.j)
        status, page, _ = get(url + "/")
        assert status == 200 and b"/static/viewer.js" in page
        assert not re.search(rb"https?://(?!127\.0\.0\.1)", get(url + "/static/viewer.js")[1])   # no CDN


def test_view_cli_serves_and_refuses_bad_input(fx, capsys):
    from pipelines import cli

    assert cli.main(["view", str(fx.root / "nosuch")]) == 2
    err = capsys.readouterr().err.strip()
    assert "scan folder not found" in err and "\n" not in err
    assert cli.main(["view", str(fx.root)]) == 2     # a folder without a pyramid
    assert "no pyramid/index.json" in capsys.readouterr().err
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "view", str(fx.dir), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DISPLAY": ""})
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:(\d+)/)", line)
        assert m, line
        deadline = time.time() + 30
        while True:
            try:
                status, meta = get_json(m.group(1) + "api/meta")
                break
            except OSError:
                assert time.time() < deadline
                time.sleep(0.1)
        assert status == 200 and meta["n_snps"] == fx.p
    finally:
        proc.terminate()
        proc.wait(10)


def test_export_cool_keeps_the_peak_at_every_resolution(fx, tmp_path):
    cooler = pytest.importorskip("cooler")
    from pipelines import cli
    from pipelines.view.data import ScanMap
    from pipelines.view.mcool import bin_pixels, level0_grid

    out = tmp_path / "map.mcool"
    assert cli.main(["export-cool", str(fx.dir), "--out", str(out)]) == 0
    uris = cooler.fileops.list_coolers(str(out))
    assert len(uris) >= 4
    top = fx.top.iloc[0]
    for uri in uris:
        c = cooler.Cooler(f"{out}::{uri}")
        res = c.binsize
        assert uri == f"/resolutions/{res}" and c.info["metadata"]["aggregation"] == "max"
        m = c.matrix(balance=False, as_pixels=True, join=True).fetch(f"1:{top.bp1}-{top.bp1 + 1}", f"3:{top.bp2}-{top.bp2 + 1}")
        assert len(m) == 1 and m["count"].iloc[0] == pytest.approx(top.stat, rel=1e-6)
        assert c.pixels()[:]["count"].max() == pytest.approx(top.stat, rel=1e-6)   # a max, never a sum
    # ground truth at the two coarsest resolutions: the max over the level-0 cells in both bins
    sm = ScanMap(fx.dir)
    grid = level0_grid(sm)
    for uri in uris[-2:]:
        res = int(uri.rsplit("/", 1)[1])
        bins, pixels = bin_pixels(sm, grid, res)
        off = {ch: int(np.flatnonzero(bins.chrom == ch)[0]) for ch in ("1", "2", "3")}
        snp_bin = np.array([off[ch] for ch in sm.axis.chrom]) + sm.axis.bp.to_numpy() // res
        cells = {b: np.unique(np.flatnonzero(snp_bin == b) // sm.cell) for b in np.unique(snp_bin)}
        got = {(a, b): v for a, b, v in pixels.itertuples(index=False)}
        for a in cells:
            for b in cells:
                if b < a:
                    continue
                block = grid[np.ix_(cells[a], cells[b])]
                want = np.nanmax(block) if np.isfinite(block).any() else None
                assert (want is None and (a, b) not in got) or got[(a, b)] == pytest.approx(want)
    assert cli.main(["export-cool", str(fx.dir), "--out", str(fx.dir / "pyramid" / "index.json")]) == 2


# ------------------------------------------------------------------------------------------------
# the real browser


def _playwright():
    pw = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium binary (apt-get install chromium)")
    return pw


def browse(url: str, snp1: str, snp2: str, i: int, j: int, want_stat: float, shots: Path, *,
           viewport=(900, 600), max_first_ms: float, max_zoom_ms: float) -> dict:
    """Load the map, zoom on pair (i, j) by wheel steps to level 0, hover it, click it; a screenshot
    per step in ``shots``. Returns the measured times; asserts the hover, the card and the times."""
    pw = _playwright()
    shots.mkdir(parents=True, exist_ok=True)
    errors = []
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("window.epiflowMap && window.epiflowMap.stats.ready", timeout=20000)
            first = page.evaluate("window.epiflowMap.stats.firstViewMs")
            page.wait_for_function("document.querySelectorAll('#top-list tr[data-i]').length > 0")
            page.screenshot(path=str(shots / "01_overview.png"))
            # the server prepares tiles and reads the genotypes once the first view is drawn: zoom
            # steps are measured after that, as a user who looks at the overview first meets them
            page.wait_for_function("fetch('/api/warm', {method: 'POST'}).then(r => r.json())"
                                   ".then(w => w.warm === 'done')", timeout=120000, polling=250)
            steps = []
            while page.evaluate("window.epiflowMap.state.level") > 0:
                x, y = page.evaluate(f"window.epiflowMap.screenOf({i}, {j})")
                n_before = len(page.evaluate("window.epiflowMap.stats.zooms"))
                page.mouse.move(x, y)
                page.mouse.wheel(0, -100)
                page.wait_for_function(f"window.epiflowMap.stats.zooms.length > {n_before}", timeout=10000)
                z = page.evaluate("window.epiflowMap.stats.zooms")[-1]
                steps.append(z)
                page.screenshot(path=str(shots / f"02_zoom_level{z['level']}.png"))
                assert len(steps) < 30
            x, y = page.evaluate(f"window.epiflowMap.pixelScreen({i}, {j})")
            page.mouse.move(x, y)
            page.wait_for_function("(s) => document.getElementById('tooltip').innerText.includes(s[0]) && "
                                   "document.getElementById('tooltip').innerText.includes(s[1])", arg=[snp1, snp2])
            hover = page.inner_text("#tooltip")
            page.screenshot(path=str(shots / "03_hover.png"))
            page.mouse.click(x, y)
            page.wait_for_selector("#card [data-field=stat]")
            card_stat = float(page.get_attribute("#card [data-field=stat]", "data-value"))
            card_title = page.inner_text("#card .snps")
            page.wait_for_timeout(100)
            page.screenshot(path=str(shots / "04_card.png"))
        finally:
            browser.close()
    assert not errors, errors
    assert snp1 in hover and snp2 in hover
    assert snp1 in card_title and snp2 in card_title
    assert card_stat == pytest.approx(want_stat, rel=1e-6)
    times = {"first_view_ms": first, "zoom_steps": steps, "viewport": list(viewport)}
    (shots / "times.json").write_text(json.dumps(times, indent=1) + "\n")
    zooms = ", ".join(f"L{z['level']} {z['ms']:.0f} ms ({z['tiles']} tiles)" for z in steps)
    print(f"\nviewer: first view {first:.0f} ms, zoom steps {zooms}; screenshots in {shots}")
    assert steps, "the overview already showed level 0: the fixture is too small to test zooming"
    assert first <= max_first_ms, times
    assert max(z["ms"] for z in steps) <= max_zoom_ms, times
    return times


def test_browser_zoom_hover_card(fx, scan_map, artifacts):
    """Acceptance: first view within 1 s and each zoom step's tiles within 200 ms. The default
    suite shares two cores with everything else, so this test asserts 3 s / 1 s (a broken tile
    path, not a slow box) and prints the measured numbers; the slow tests below hold the full-size
    maps to 1.5 x the targets."""
    _playwright()
    with running_server(scan_map) as url:
        # prefetch off: every zoom step fetches and draws its own tiles (the cold case)
        times = browse(url + "/?prefetch=0", fx.snp1, fx.snp2, fx.i, fx.j, float(fx.top.stat[0]),
                       artifacts / "planted", max_first_ms=3000, max_zoom_ms=1000)
    assert all(z["tiles"] > 0 for z in times["zoom_steps"])
    assert len(times["zoom_steps"]) >= 2


@pytest.mark.slow
def test_browser_mouse_hs1940_full_map(shared_data, tmp_path, artifacts):
    """The full mouse_hs1940 exact 2D scan (9,282 SNPs, 43 M pairs) of a planted pair, in the browser:
    first view <= 1 s and every zoom step's tiles <= 200 ms (1.5 x margins), screenshots kept."""
    _playwright()
    from pipelines import cli
    from pipelines.view.data import ScanMap
    from pipelines.workflows.genotypes import GenotypeSet

    bfile = shared_data / "gemma" / "mouse_hs1940"
    gs = GenotypeSet.load(bfile, unique_ids=False)
    rng = np.random.default_rng(11)
    snps = gs.snps
    ok = np.flatnonzero((snps["bp"] > 0).to_numpy() & (gs.dosage.std(axis=1) > 0.6))
    a = int(ok[(snps["chrom"].to_numpy()[ok] == "4")][100])
    b = int(ok[(snps["chrom"].to_numpy()[ok] == "11")][200])
    ga, gb = gs.dosage[a].astype(float), gs.dosage[b].astype(float)
    y = 0.8 * (ga - ga.mean()) * (gb - gb.mean()) + rng.normal(size=gs.n)
    pheno = tmp_path / "planted.txt"
    pheno.write_text("".join(f"{f} {i} {v:.6f}\n" for f, i, v in zip(gs.samples.fid, gs.samples.iid, y)))
    out = tmp_path / "scan"
    t0 = time.perf_counter()
    assert cli.main(["scan", "--bfile", str(bfile), "--pheno", str(pheno), "--mode", "2d", "--top", "100",
                     "--out", str(out), "--device", "cpu", "--no-plots"]) == 0
    seconds = time.perf_counter() - t0
    top = pd.read_csv(out / "top_pairs.tsv", sep="\t")
    # the planted pair, or a proxy in tight LD with it (heterogeneous-stock mice), tops the scan
    planted = {(str(snps.chrom[a]), int(snps.bp[a])), (str(snps.chrom[b]), int(snps.bp[b]))}
    for c1, b1 in ((str(top.chrom1[0]), top.bp1[0]), (str(top.chrom2[0]), top.bp2[0])):
        assert any(c1 == c and abs(b1 - p) < 5_000_000 for c, p in planted), (top.iloc[0], planted)
    size = sum(f.stat().st_size for f in (out / "pyramid").rglob("*") if f.is_file())
    sm = ScanMap(out)
    i, j = sorted((sm._id_pos[top.snp1[0].lower()], sm._id_pos[top.snp2[0].lower()]))
    result = {"scan_seconds": seconds, "pyramid_bytes": size, "n_levels": sm.n_levels}
    for name, query in (("cold", "?prefetch=0"), ("prefetch", "")):
        with running_server(sm) as url:
            result[name] = browse(url + "/" + query, sm.axis.snp[i], sm.axis.snp[j], i, j, float(top.stat[0]),
                                  artifacts / f"mouse_hs1940_{name}", viewport=(1400, 900), max_first_ms=1500,
                                  max_zoom_ms=300)
    (artifacts / "mouse_hs1940_times.json").write_text(json.dumps(result, indent=1) + "\n")


@pytest.mark.slow
def test_browser_existing_scan(artifacts):
    """The map of any existing 2D scan folder named by $EPIFLOW_VIEW_SCAN (e.g. the full HLC scan),
    measured the same way (cold tiles): first view <= 1 s and every zoom step <= 200 ms, 1.5 x margins."""
    d = os.environ.get("EPIFLOW_VIEW_SCAN")
    if not d:
        pytest.skip("set EPIFLOW_VIEW_SCAN to a 2D scan folder")
    _playwright()
    from pipelines.view.data import ScanMap

    sm = ScanMap(d)
    assert sm.top is not None and len(sm.top), "the scan has no top_pairs.tsv"
    t = sm.top.iloc[0]
    with running_server(sm) as url:
        times = browse(url + "/?prefetch=0", sm.axis.snp[t.i], sm.axis.snp[t.j], int(t.i), int(t.j), float(t.stat),
                       artifacts / Path(d).name, viewport=(1400, 900), max_first_ms=1500, max_zoom_ms=300)
    size = sum(f.stat().st_size for f in (Path(d) / "pyramid").rglob("*") if f.is_file())
    print(f"pyramid of {sm.p:,} SNPs: {sm.n_levels} levels, {size / 2**20:.1f} MiB; {times}")


@pytest.mark.parametrize("extra", [("--covar-cols", "age,batch"), ("--pcs", "2")], ids=["covar-cols", "pcs"])
def test_pair_card_of_a_covariate_scan_equals_top_pairs(tmp_path, extra):
    """The card fits the scan's own pair model y ~ C + a + b + ab: the covariate columns the scan
    used (not the file's other, phenotype-correlated, column) or its genotype principal components."""
    from pipelines import cli
    from pipelines.view.data import ScanMap
    from plink_files import write_bed

    rng = np.random.default_rng(3)
    n, p = 240, 160
    pop = rng.integers(0, 2, n)                       # two subpopulations: PCs and covariates matter
    freq = np.where(pop[:, None] == 1, rng.uniform(0.1, 0.3, p), rng.uniform(0.3, 0.6, p))
    X = rng.binomial(2, freq).astype(np.int8)
    write_bed(tmp_path / "geno", X, chrom=["1"] * 90 + ["2"] * 70, bp=[10_000 * (k + 1) for k in range(p)])
    age, batch, other = rng.normal(size=n), rng.integers(0, 3, n), rng.normal(size=n)
    a, b = X[:, 20] - X[:, 20].mean(), X[:, 130] - X[:, 130].mean()
    y = 1.0 * a * b + 0.8 * age + 0.5 * batch + 1.5 * pop + 0.7 * other + rng.normal(size=n)
    ids = [f"S{i:02d} S{i:02d}" for i in range(n)]
    (tmp_path / "pheno.txt").write_text("".join(f"{s} {v:.6f}\n" for s, v in zip(ids, y)))
    (tmp_path / "covar.txt").write_text("FID IID age batch other\n" + "".join(
        f"{s} {u:.6f} {v} {w:.6f}\n" for s, u, v, w in zip(ids, age, batch, other)))
    covar = ("--covar", str(tmp_path / "covar.txt")) if extra[0] == "--covar-cols" else ()
    out = tmp_path / "scan"
    assert cli.main(["scan", "--bfile", str(tmp_path / "geno"), "--pheno", str(tmp_path / "pheno.txt"), "--mode", "2d",
                     "--top", "5", "--out", str(out), "--device", "cpu", "--threads", "1", "--no-plots",
                     *covar, *extra]) == 0
    top = pd.read_csv(out / "top_pairs.tsv", sep="\t")
    sm = ScanMap(out)
    for _, row in top.head(3).iterrows():
        card = sm.pair(sm._id_pos[row.snp1.lower()], sm._id_pos[row.snp2.lower()])
        assert card["note"] is None
        assert card["computed"]["stat"] == pytest.approx(row.stat, rel=1e-6)
        assert card["computed"]["effect"] == pytest.approx(row.beta_int, rel=1e-6)


def test_view_of_an_ngg_scan_says_why_not(tmp_path, capsys):
    """An NGG 2D scan keeps its top pairs but no map of all pairs: one line that says so and what to run."""
    from pipelines import cli
    from plink_files import write_bed

    rng = np.random.default_rng(1)
    X = rng.binomial(2, 0.4, size=(120, 60)).astype(np.int8)
    write_bed(tmp_path / "geno", X)
    y = X[:, 3] * X[:, 40] + rng.normal(size=120)
    (tmp_path / "pheno.txt").write_text("".join(f"S{i:02d} S{i:02d} {v:.5f}\n" for i, v in enumerate(y)))
    out = tmp_path / "ngg"
    assert cli.main(["scan", "--bfile", str(tmp_path / "geno"), "--pheno", str(tmp_path / "pheno.txt"), "--mode", "2d",
                     "--method", "ngg", "--out", str(out), "--device", "cpu", "--no-plots", "--threads", "1"]) == 0
    capsys.readouterr()
    assert cli.main(["view", str(out), "--no-browser"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "NGG scan" in err and "--ngg-engine tiled" in err
    assert f"--method exact --bfile {tmp_path / 'geno'} --pheno {tmp_path / 'pheno.txt'}" in err


@pytest.fixture(scope="module")
def effect_fx(tmp_path_factory):
    """A small planted scan with --effect-map, and the same scan without it."""
    d = tmp_path_factory.mktemp("view_effect")
    kw = dict(n=150, chroms=(("1", 130), ("2", 110)), planted=(20, 200), pyramid_side=64, tile=16)
    plain = planted_scan(d / "plain", extra=("--no-plots",), **kw)
    return planted_scan(d / "effect", extra=("--no-plots", "--effect-map", "--threads", "2"), **kw), plain


def test_effect_map_is_the_max_abs_effect_of_every_pair(effect_fx):
    """pyramid_effect/ level 0 = max |BETA_INT| over the pairs of each pixel, from every pair's own
    regression; the statistic's pyramid/ is byte-identical to a scan without --effect-map."""
    from models.scans.scan2d import dense_pair_stats
    from pipelines.errors import InputError
    from pipelines.view.data import ScanMap
    from pipelines.workflows.genotypes import GenotypeSet

    fx, plain = effect_fx
    files = sorted(p.relative_to(plain.dir / "pyramid") for p in (plain.dir / "pyramid").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(fx.dir / "pyramid") for p in (fx.dir / "pyramid").rglob("*") if p.is_file())
    for f in files:
        assert (plain.dir / "pyramid" / f).read_bytes() == (fx.dir / "pyramid" / f).read_bytes(), f
    sm = ScanMap(fx.dir)
    gs = GenotypeSet.load(fx.root / "geno")
    y = np.array([float(line.split()[2]) for line in (fx.root / "pheno.txt").read_text().splitlines()])
    G = gs.dosage[sm._match_rows(gs)]
    beta, _ = dense_pair_stats(G, G, y, "qt")
    p, c = len(G), sm.cell
    side = -(-p // c)
    pad = np.full((side * c, side * c), -1.0)
    pad[:p, :p] = np.where(np.triu(np.ones((p, p), bool), 1), np.abs(beta), -1.0)
    want = pad.reshape(side, c, side, c).max(axis=(1, 3))
    t = sm.tile_side
    for r in range(side):
        for q in range(side):
            a = sm.tile_array(0, r // t, q // t, "effect")
            got = np.nan if a is None else a[r % t, q % t]
            assert (want[r, q] < 0 and np.isnan(got)) or got == pytest.approx(want[r, q], rel=1e-6)
    meta = sm.meta()
    assert meta["has_effect"] and meta["vmax_effect"] == pytest.approx(want.max(), rel=1e-6)
    top = sm.n_levels - 1
    px = sm.pixel(top, 0, 0, layer="effect")          # the whole map: the pair of the largest |effect|
    k = np.unravel_index(np.argmax(np.where(np.triu(np.ones((p, p), bool), 1), np.abs(beta), -1)), beta.shape)
    assert (px["pair"]["snp1"]["pos"], px["pair"]["snp2"]["pos"]) == k
    assert px["effect"] == pytest.approx(want.max(), rel=1e-6)
    assert px["value"] == pytest.approx(fx.top.stat[0], rel=1e-6)
    assert np.frombuffer(sm.tile(top, 0, 0, layer="effect"), "<f2")[0] == np.float16(want.max())
    with pytest.raises(InputError, match="rerun the exact scan with --effect-map"):
        ScanMap(plain.dir).tile(0, 0, 0, layer="effect")
    assert not ScanMap(plain.dir).meta()["has_effect"]
    with pytest.raises(InputError, match="unknown map layer"):
        sm.tile(0, 0, 0, layer="beta")


def test_browser_colour_by_effect(effect_fx, artifacts):
    """The colour selector draws the |effect| map (its own tiles and legend) when the scan has one,
    and offers the option disabled when it has none."""
    pw = _playwright()
    from pipelines.view.data import ScanMap

    fx, plain = effect_fx
    shots = artifacts / "effect"
    shots.mkdir(parents=True, exist_ok=True)
    errors = []
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.on("pageerror", lambda e: errors.append(str(e)))
            with running_server(ScanMap(fx.dir)) as url:
                page.goto(url + "/")
                page.wait_for_function("window.epiflowMap && window.epiflowMap.stats.ready", timeout=20000)
                assert not page.is_disabled("#colour option[value=effect]")
                page.select_option("#colour", "effect")
                page.evaluate("window.epiflowMap.idle()")
                keys = page.evaluate("[...window.epiflowMap.state.tiles.entries()].filter(([k, t]) => "
                                     "k.startsWith('e/') && t).map(([k]) => k)")
                assert keys, "no tile of the effect map was drawn"
                vmax = float(page.input_value("#vmax"))
                assert vmax == pytest.approx(ScanMap(fx.dir).meta()["vmax_effect"], rel=1e-2)
                page.screenshot(path=str(shots / "01_effect_overview.png"))
            with running_server(ScanMap(plain.dir)) as url:
                page.goto(url + "/")
                page.wait_for_function("window.epiflowMap && window.epiflowMap.stats.ready", timeout=20000)
                assert page.is_disabled("#colour option[value=effect]")
        finally:
            browser.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def ngg_fx(tmp_path_factory):
    """A tiled NGG 2D scan of 240 SNPs (two chromosomes) with one planted pair, every scored pair listed
    in top_pairs.tsv (so the map can be checked against the pairs' own scores)."""
    from pipelines import cli
    from plink_files import write_bed

    d = tmp_path_factory.mktemp("view_ngg")
    rng = np.random.default_rng(1)
    n, p, planted = 200, 240, (20, 200)
    X = rng.binomial(2, rng.uniform(0.25, 0.5, p), size=(n, p)).astype(np.int8)
    write_bed(d / "geno", X, chrom=["1"] * 130 + ["2"] * 110, bp=[1_000_000 + 25_000 * q for q in range(p)])
    a, b = (X[:, k] - X[:, k].mean() for k in planted)
    y = np.round(1.5 * a * b + rng.normal(size=n), 6)
    (d / "pheno.txt").write_text("".join(f"S{i:02d} S{i:02d} {v:.6f}\n" for i, v in enumerate(y)))
    out = d / "scan"
    assert cli.main(["scan", "--bfile", str(d / "geno"), "--pheno", str(d / "pheno.txt"), "--mode", "2d",
                     "--method", "ngg", "--ngg-engine", "tiled", "--ngg-piece-size", "100", "--ngg-repetitions", "4",
                     "--top", str(p * (p - 1) // 2), "--out", str(out), "--device", "cpu", "--no-plots",
                     "--threads", "1", "--pyramid-side", "64", "--pyramid-tile", "16"]) == 0
    top = pd.read_csv(out / "top_pairs.tsv", sep="\t")
    return SimpleNamespace(dir=out, top=top, X=X, y=y, snp1=f"rs{planted[0]}", snp2=f"rs{planted[1]}", p=p)


def test_ngg_map_is_the_max_score_of_every_pair(ngg_fx):
    """pyramid_effect/ of a tiled NGG scan: level 0 holds, per cell of the exact scan's grid, the largest
    NGG score of its pairs (every pair with a nonzero score is listed here); no statistic map."""
    from pipelines.view.data import ScanMap

    assert not (ngg_fx.dir / "pyramid").exists()
    sm = ScanMap(ngg_fx.dir)
    assert sm.effect_only and sm.cell == 4 and sm.p == ngg_fx.p
    top = ngg_fx.top
    assert (top.snp1.iloc[0], top.snp2.iloc[0]) == (ngg_fx.snp1, ngg_fx.snp2)
    side = sm.index["levels"][0]["side"]
    want = np.zeros((side, side), dtype=np.float32)      # every pair was scored (0 when never selected)
    pos = {s: k for k, s in enumerate(sm.axis["snp"])}
    i = np.array([pos[s] for s in top.snp1]) // sm.cell
    j = np.array([pos[s] for s in top.snp2]) // sm.cell
    np.maximum.at(want, (np.minimum(i, j), np.maximum(i, j)), top.score.to_numpy(np.float32))
    got = np.full((side, side), np.nan, dtype=np.float32)
    for r in range(side):
        for c in range(side):
            got[r, c] = sm.value(0, r, c)
    upper = np.triu(np.ones((side, side), bool))
    np.testing.assert_allclose(got[upper], want[upper], rtol=1e-6)
    assert np.isnan(got[~upper]).all()
    assert sm.meta()["vmax"] == pytest.approx(top.score.max(), rel=1e-6)


def test_ngg_map_in_the_viewer_names_and_cards_the_planted_pair(ngg_fx):
    """The viewer API on an NGG scan: the whole-map pixel and its level-0 pixel name the planted pair,
    the card shows its NGG score equal to top_pairs.tsv and the exact statistic recomputed from the
    genotypes (equal to a direct least-squares fit of y ~ a + b + ab)."""
    from pipelines.view.data import ScanMap

    sm = ScanMap(ngg_fx.dir)
    with running_server(sm) as url:
        status, meta = get_json(url + "/api/meta")
        assert status == 200 and meta["effect_only"] and "NGG score" in meta["value"]
        top_level = meta["n_levels"] - 1
        status, px = get_json(f"{url}/api/pixel?level={top_level}&row=0&col=0")
        assert status == 200
        names = (px["pair"]["snp1"]["snp"], px["pair"]["snp2"]["snp"])
        assert names == (ngg_fx.snp1, ngg_fx.snp2) and px["pair"]["source"] == "top_pairs.tsv"
        assert px["value"] == pytest.approx(ngg_fx.top.score.iloc[0], rel=1e-3)      # float16 tiles, float32 map
        i, j = px["pair"]["snp1"]["pos"], px["pair"]["snp2"]["pos"]
        status, px0 = get_json(f"{url}/api/pixel?level=0&row={i // sm.cell}&col={j // sm.cell}")
        assert (px0["pair"]["snp1"]["snp"], px0["pair"]["snp2"]["snp"]) == names
        status, card = get_json(f"{url}/api/pair?i={i}&j={j}")
    assert status == 200 and card["ngg"] and card["note"] is None
    assert card["listed"]["score"] == ngg_fx.top.score.iloc[0] and card["listed"]["rank"] == 1
    a, b = (ngg_fx.X[:, int(s[2:])].astype(float) for s in names)
    D = np.column_stack([np.ones_like(a), a, b, a * b])
    coef, rss, *_ = np.linalg.lstsq(D, ngg_fx.y, rcond=None)
    se = np.sqrt(rss[0] / (len(a) - 4) * np.linalg.inv(D.T @ D)[3, 3])
    assert card["computed"]["effect"] == pytest.approx(coef[3], rel=1e-6)
    assert card["computed"]["stat"] == pytest.approx((coef[3] / se) ** 2, rel=1e-6)
    assert card["computed"]["n"] == len(a)
    assert px["pair"]["stat"] == pytest.approx(card["computed"]["stat"], rel=1e-9)

    def wald(u, v):
        D = np.column_stack([np.ones_like(u), u, v, u * v])
        coef, rss, *_ = np.linalg.lstsq(D, ngg_fx.y, rcond=None)
        return coef[3] ** 2 / (rss[0] / (len(u) - 4) * np.linalg.inv(D.T @ D)[3, 3])

    # a cell whose pairs are not listed: the cell's best exact statistic, from the genotypes
    sm.top = sm.top.head(1)
    px = sm.pixel(0, 0, sm.index["levels"][0]["side"] - 1)
    assert px["pair"]["score"] is None and "exact statistic" in px["pair"]["source"]
    rows, cols = range(0, sm.cell), range(sm.p - sm.cell, sm.p)
    stats = {(r, c): wald(*(ngg_fx.X[:, int(sm.axis.snp[k][2:])].astype(float) for k in (r, c)))
             for r in rows for c in cols}
    best = max(stats, key=stats.get)
    assert (px["pair"]["snp1"]["pos"], px["pair"]["snp2"]["pos"]) == best
    assert px["pair"]["stat"] == pytest.approx(stats[best], rel=1e-6)


def test_browser_ngg_map(ngg_fx, artifacts):
    """An NGG scan in the browser: coloured by NGG score only; on the planted pair's level-0 pixel the
    hover names the pair, and its card shows the NGG score of top_pairs.tsv and the exact STAT
    recomputed from the genotypes (a screenshot per step)."""
    pw = _playwright()
    from pipelines.view.data import ScanMap

    sm = ScanMap(ngg_fx.dir)
    i, j = sm._id_pos[ngg_fx.snp1.lower()], sm._id_pos[ngg_fx.snp2.lower()]
    want_stat = sm.pair(i, j)["computed"]["stat"]
    shots = artifacts / "ngg"
    shots.mkdir(parents=True, exist_ok=True)
    errors = []
    with running_server(sm) as url, pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.wait_for_function("window.epiflowMap && window.epiflowMap.stats.ready", timeout=20000)
            page.wait_for_function("document.querySelectorAll('#top-list tr[data-i]').length > 0")
            assert page.input_value("#colour") == "effect" and page.is_disabled("#colour option[value=nlp]")
            page.screenshot(path=str(shots / "01_overview.png"))
            page.evaluate(f"window.epiflowMap.jumpToPair({i}, {j})")
            page.evaluate("window.epiflowMap.idle()")
            assert page.evaluate("window.epiflowMap.state.level") == 0
            x, y = page.evaluate(f"window.epiflowMap.pixelScreen({i}, {j})")
            page.mouse.move(x, y)
            page.wait_for_function("(s) => document.getElementById('tooltip').innerText.includes(s[0]) && "
                                   "document.getElementById('tooltip').innerText.includes(s[1])",
                                   arg=[ngg_fx.snp1, ngg_fx.snp2])
            hover = page.inner_text("#tooltip")
            page.screenshot(path=str(shots / "02_hover_level0.png"))
            page.mouse.click(x, y)
            page.wait_for_selector("#card [data-field=score]")
            score = float(page.get_attribute("#card [data-field=score]", "data-value"))
            stat = float(page.get_attribute("#card [data-field=stat]", "data-value"))
            page.wait_for_timeout(100)
            page.screenshot(path=str(shots / "03_card.png"))
        finally:
            browser.close()
    assert not errors, errors
    assert "NGG score" in hover
    assert score == ngg_fx.top.score.iloc[0]
    assert stat == pytest.approx(want_stat, rel=1e-9)
