"""The demo's closing summary (pipelines.summary), the static report reports/index.html
(pipelines.html_report), the figures' legends and labels, and the DVC plot definitions.

The fixture is a small project folder with the files the stages write: three models' fold tables
(one additive), a learning curve, a 2D scan whose top pairs hold a planted pair, an LD copy of it
and an unplanted pair, and an interpret folder with planted genes and pairs.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml

matplotlib.use("Agg")

from pipelines import html_report, summary  # noqa: E402
from pipelines.plots import heritability as hplot  # noqa: E402
from pipelines.plots import scans, style  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LONG = "a_model_with_a_name_much_longer_than_any_column_of_the_summary_table"
# SNP axis of the 2D scan: 30 SNPs on chr1 then 30 on chr2 (ids carry long allele strings)
SNPS = [f"chr{1 + k // 30}:{1000 * (k % 30 + 1)}:ACGTACGTACGTACGT:A" for k in range(60)]
PLANTED = (SNPS[3], SNPS[40])
UNPLANTED = (SNPS[10], SNPS[55])


def _folds(mean, seed, r=3, k=3):
    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"repeat": i, "fold": j, "auc": mean + 0.01 * rng.standard_normal(), "n_train": 200,
                          "n_test": 100} for i in range(r) for j in range(k)])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("proj")
    models = {"logreg": {"type": "logreg"}, "biosparse": {"type": "biosparse", "lr": 0.01},
              LONG: {"type": "dense", "hidden": 8}}
    for seed, (name, mean) in enumerate((("logreg", 0.60), ("biosparse", 0.70), (LONG, 0.62))):
        ft = _folds(mean, seed)
        (root / "work/train" / name).mkdir(parents=True)
        ft.to_csv(root / "work/train" / name / "folds.tsv", sep="\t", index=False)
        (root / "metrics/train").mkdir(parents=True, exist_ok=True)
        (root / "metrics/train" / f"{name}.json").write_text(json.dumps(
            {"auc_mean": float(ft.auc.mean()), "auc_sd": float(ft.auc.std(ddof=1)), "n_folds": 9,
             "n_parameters": 1234567}))
    lc = root / "work/learning_curve"
    lc.mkdir(parents=True)
    (lc / "summary.json").write_text(json.dumps({
        "sparse_model": "biosparse", "crossover_n_train": 150.0,
        "per_model": {"biosparse": [{"fraction": 1.0, "auc_mean": 0.70}], "logreg": [{"fraction": 1.0, "auc_mean": 0.6}]},
        "tests": [{"fraction": 0.5, "best_additive": "logreg", "mean_diff": 0.01, "p_value": 0.5, "n_folds": 9,
                   "n_train_mean": 100.0},
                  {"fraction": 1.0, "best_additive": "logreg", "mean_diff": 0.10, "p_value": 0.004, "n_folds": 9,
                   "n_train_mean": 200.0}]}))
    d2 = root / "work/ngg_2d"
    d2.mkdir(parents=True)
    chrom = ["chr1"] * 30 + ["chr2"] * 30
    pd.DataFrame({"snp": SNPS, "chrom": chrom}).to_parquet(d2 / "snp_best.parquet")
    top = [(SNPS[4], SNPS[41], 1e-20),        # an LD copy of the planted pair, ranked first
           (*PLANTED, 1e-19), (*UNPLANTED, 1e-8)]
    pd.DataFrame({"rank": [1, 2, 3], "snp1": [t[0] for t in top], "snp2": [t[1] for t in top],
                  "p": [t[2] for t in top]}).to_csv(d2 / "top_pairs.tsv", sep="\t", index=False)
    (d2 / "summary.json").write_text(json.dumps({"n_pairs": 1770, "method": "exact"}))
    ph = root / "work/ngg_pheno"
    ph.mkdir(parents=True)
    (ph / "truth.json").write_text(json.dumps({"pairs": [list(PLANTED)], "snps": []}))
    it = root / "work/interpret/biosparse"
    it.mkdir(parents=True)
    pd.DataFrame({"gene": ["WNT2", "GPC4", "TP53"], "rank": [2, 1, 3], "planted": [False, True, False]}).to_csv(
        it / "genes.tsv", sep="\t", index=False)
    pd.DataFrame({"gene_a": ["GPC4"], "gene_b": ["ZNRF3"], "p": [0.004], "burden_p": [0.03], "planted": [True]}).to_csv(
        it / "pairs.tsv", sep="\t", index=False)
    params = {"study": "toy", "models": models, "ngg": {"recall_window": 2, "pheno": "work/ngg_pheno"}}
    return root, params


def test_summary_fits_100_columns_and_names_pairs_and_genes(project):
    root, params = project
    f = summary.collect(root, params)
    text = summary.format_text(f)
    lines = text.splitlines()
    assert max(len(x) for x in lines) <= 100, [x for x in lines if len(x) > 100]
    # models: best first, the additive reference marked, p against it
    assert f.reference == "logreg" and list(f.models["model"])[0] == "biosparse"
    assert any(x.strip().startswith("logreg (ref)") for x in lines)
    assert "beats the best additive model logreg" in text
    # learning curve: the largest training size's test, significant, and the crossover
    assert "beats logreg" in text and "p 0.004" in text and "about 150 training samples" in text
    # SNP pairs: the LD copy and the planted pair are one locus pair (clumped within the window);
    # it is marked as the planted locus, the unplanted pair as not planted
    sp = f.snp_pairs
    assert [(r["snp1"], r["snp2"], r["planted"]) for r in sp["rows"]] == [
        (SNPS[4], SNPS[41], "planted locus"), (*UNPLANTED, "no")]
    assert sp["n_found"] == 1 and sp["n_planted"] == 1 and sp["found_within"] == 1
    assert "planted locus" in text and "1 of 1" in text
    # long identifiers are cut to fit, not wrapped
    assert SNPS[4][:20] in text
    # genes: in rank order, planted ones starred; the planted gene pair named
    assert "GPC4*, WNT2, TP53" in text and "GPC4 x ZNRF3 (planted)" in text
    assert "Not run yet" not in text and "reports/index.html" not in text   # no report built yet


def test_summary_names_what_has_not_run(tmp_path):
    text = summary.format_text(summary.collect(tmp_path, {"models": {"logreg": {"type": "logreg"}}}))
    assert "Not run yet" in text and "dvc repro interpret" in text and "make repro" in text
    assert max(len(x) for x in text.splitlines()) <= 100


def _png(path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
    fig.savefig(path)


def test_html_report_is_self_contained(project, tmp_path):
    root, params = project
    rep = tmp_path / "reports"
    rep.mkdir()
    _png(rep / "roc.png")
    _png(rep / "fold_auc.png")
    (root / "work/ngg_2d/map_overview.png").unlink(missing_ok=True)
    _png(root / "work/ngg_2d/map_overview.png")
    extras = {"learning_curve": {"files": [], "table": "| a | b |\n|---|---|\n| 1 | 2 |\n"}}
    page = html_report.render(summary.collect(root, params), rep, root, extras)
    # nothing outside the file: no scripts, no external styles, links or images
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page
    imgs = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert len(imgs) == 3 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert all(base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for s in imgs)
    # the findings: verdicts, the planted locus pair, planted genes, the extra table
    assert "beats the best additive model logreg" in page and "planted locus" in page
    assert "<span class=planted>GPC4*</span>" in page and "<td>1</td><td>2</td>" in page
    # equal inputs, equal bytes (reports/ is a cached DVC output)
    assert html_report.render(summary.collect(root, params), rep, root, extras) == page


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved during the test, as (texts of legends, x tick labels, y tick labels)."""
    from matplotlib.figure import Figure

    out = []
    orig = Figure.savefig

    def savefig(self, *a, **k):
        legends = [t.get_text() for ax in self.axes for lg in [ax.get_legend()] if lg for t in lg.get_texts()]
        texts = [t.get_text() for ax in self.axes for t in ax.texts] + [t.get_text() for t in self.texts]
        ticks = [[t.get_text() for t in ax.get_xticklabels(minor=m)] for ax in self.axes[:1] for m in (False, True)]
        out.append({"legend": legends, "texts": texts, "xticks": ticks[0] + ticks[1] if ticks else []})
        return orig(self, *a, **k)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return out


def test_manhattan_explains_red_points_and_line(tmp_path, drawn):
    rng = np.random.default_rng(0)
    chrom = np.repeat([f"chr{c}" for c in range(1, 23)], [400 - 15 * c for c in range(1, 23)])
    p = rng.uniform(size=len(chrom))
    path = scans.manhattan(tmp_path / "m.png", chrom, np.arange(len(chrom)) * 1000, p, threshold=1e-4,
                           highlight=np.argsort(p)[:5], highlight_label="top 5 SNPs",
                           threshold_label="Bonferroni: p = 0.05 / 500 SNPs")
    assert path.is_file()
    [fig] = drawn
    assert sorted(fig["legend"]) == ["Bonferroni: p = 0.05 / 500 SNPs", "top 5 SNPs"]
    labels = [t for t in fig["xticks"] if t]
    assert "1" in labels and "chr1" not in labels and len(labels) == len(set(labels))


def test_chromosome_labels_do_not_overlap():
    ticks = np.array([0, 10, 12, 13, 14, 40], dtype=float)
    labels = ["1", "19", "20", "21", "22", "X"]
    (t0, l0), (t1, l1) = style.chrom_tick_rows(ticks, labels, units_per_point=0.5, fontsize=8)
    for t, lb in ((t0, l0), (t1, l1)):
        half = [(0.62 * 8 * len(x) / 2 + 1.5) * 0.5 for x in lb]
        assert all(t[i + 1] - t[i] >= half[i] + half[i + 1] for i in range(len(t) - 1))
    assert set(l0) | set(l1) <= set(labels) and "1" in l0 and "X" in l0 and l1


def test_map_overview_circles_distinct_top_pairs(tmp_path, drawn):
    level = np.full((64, 64), 1.0)
    level[np.tril_indices(64, -1)] = np.nan
    level[5, 50] = 80.0                                # one strong pair in an otherwise flat map
    top = pd.DataFrame({"snp1": ["s5", "s6", "s20"], "snp2": ["s50", "s51", "s30"], "chrom1": ["1", "1", "1"],
                        "bp1": [5e6, 6e6, 2e7], "chrom2": ["2", "2", "2"], "bp2": [5e7, 5.1e7, 3e7],
                        "p": [1e-20, 1e-19, 1e-6]})
    marks = scans.overview_marks(top, {f"s{k}": k for k in range(64)}, sep=2)
    assert [(r, c) for r, c, _ in marks] == [(5, 50), (20, 30)]          # s6 x s51: an LD copy
    scans.map_overview(tmp_path / "o.png", level, 1, chrom_bounds=[0, 32, 64], chrom_labels=["chr1", "chr2"],
                       marks=marks, max_px=16)
    [fig] = drawn
    key = [t for t in fig["texts"] if t.startswith("circled pairs")]
    assert key and "1:5.00 x 2:50.00 Mb  p=1.0e-20" in key[0]
    assert any("SNPs per cell side" in t for t in fig["texts"])


def test_box_plots_name_genotypes_by_alleles(tmp_path, drawn):
    assert scans.genotype_labels("C", "T") == ["TT", "TC", "CC"]
    assert scans.genotype_labels("AT", "A") == ["A/A", "A/AT", "AT/AT"]
    g = np.array([0, 1, 2] * 20)
    scans.pair_boxplots(tmp_path / "b.png", [g], [g[::-1].copy()], np.arange(60.0), titles=["x"],
                        alleles=[(("C", "T"), ("G", "A"))])
    [fig] = drawn
    assert any(t.startswith("TT\nGG\nn=") for t in fig["xticks"]) and not any(t.startswith("00") for t in fig["xticks"])


def test_heritability_plot_shows_planted_h2(tmp_path, drawn):
    rows = [{"feature_set": fs, "draw": d, "n_features": 3, "n_components": c, "r2": 0.1 * c, "adj_r2": 0.1 * c + 0.01 * d}
            for fs, draws in (("1d", 1), ("1d+top_pairs", 1), ("1d+random_pairs", 4)) for d in range(draws)
            for c in (1, 2, 3)]
    hplot.plot_heritability(pd.DataFrame(rows), tmp_path / "h.png", planted={"h2_add": 0.1, "h2_int": 0.25})
    [fig] = drawn
    assert "random pairs: mean ± 1 sd over 4 draws" in fig["legend"]
    assert any(t.startswith("planted h$^2$ total = 0.35") for t in fig["legend"])


def test_roc_has_distinct_colours_diagonal_and_auc(tmp_path, drawn):
    from pipelines import report

    curves = {f"m{k}": [{"fpr": 0, "tpr": 0}, {"fpr": 0.5, "tpr": 0.5 + k / 40}, {"fpr": 1, "tpr": 1}]
              for k in range(14)}
    report.plot_roc(curves, {m: f"AUC 0.{60 + k}" for k, m in enumerate(curves)}, tmp_path / "r.png",
                    additive={"m0"})
    [fig] = drawn
    assert "m3 (AUC 0.63)" in fig["legend"] and "chance (AUC 0.5)" in fig["legend"]
    assert len(set(style.PALETTE[:14])) == 14


def test_dvc_plots_have_axes_and_cover_every_model():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # stage-level plots are only images (a data file there becomes a panel without x/y)
    for name, st in dvc["stages"].items():
        body = st.get("do", st)
        for entry in body.get("plots", []):
            path = entry if isinstance(entry, str) else next(iter(entry))
            assert path.endswith(".png"), (name, path)
    top = {next(iter(e)): next(iter(e.values())) for e in dvc["plots"]}
    for title, spec in top.items():
        assert spec.get("x") and spec.get("y") and spec.get("template"), title
        assert (ROOT / ".dvc/plots" / f"{spec['template']}.json").is_file(), title
    roc = next(s for t, s in top.items() if t.startswith("ROC"))
    assert set(roc["y"]) == {f"plots/roc/{m}.json" for m in params["models"]}
    lc = next(s for t, s in top.items() if t.startswith("Learning"))
    assert set(lc["y"]) == {f"plots/learning_curve/{m}.json" for m in params["learning_curve"]["models"]}
    tpl = json.loads((ROOT / ".dvc/plots/roc.json").read_text())
    assert tpl["data"]["values"] == "<DVC_METRIC_DATA>" and len(tpl["layer"]) == 2    # curves + diagonal
    assert "dvc_plots/" in (ROOT / ".gitignore").read_text()


def test_report_stage_writes_the_page_reproducibly(project, tmp_path, monkeypatch, capsys):
    """`epiflow report` writes reports/index.html: equal inputs give equal bytes whether or not
    reports/ existed before; the tracked metrics leave out the per-model AUCs of metrics/train/."""
    import argparse
    import shutil

    from pipelines.stages import report as stage

    src, params = project
    root = tmp_path / "proj"
    shutil.copytree(src, root)
    params = {**params, "models": {"logreg": {"type": "logreg", "lr": 0.01},
                                   "biosparse": {"type": "biosparse", "lr": 0.01},
                                   LONG: {"type": "dense", "lr": 0.01}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(root)
    monkeypatch.setenv("EPIFLOW_DEMO", "1")
    p = argparse.ArgumentParser()
    stage.add_arguments(p)
    args = p.parse_args(["--no-mlflow"])
    assert stage.run(args) == 0
    first = (root / "reports/index.html").read_bytes()
    assert stage.run(args) == 0
    assert (root / "reports/index.html").read_bytes() == first
    out = capsys.readouterr().out
    assert "AUC mean +- sd" not in out              # the demo's summary shows Table 1
    page = first.decode()
    assert "<script" not in page and "data:image/png;base64," in page and "reports/index.html" in page
    met = json.loads((root / "metrics/report.json").read_text())
    assert met["best_model"] == "biosparse" and not any(k.startswith("auc_mean.") for k in met)
    assert "p_vs_best_additive.biosparse" in met
