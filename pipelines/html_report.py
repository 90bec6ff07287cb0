"""``reports/index.html``: the whole result in one self-contained static page.

Figures are embedded as base64 PNGs, the style is inline, there is no script and no reference to
anything outside the file: it opens in any browser, offline, and can be mailed or archived as is.
Written by `epiflow report` from the same data as the demo's summary (:mod:`pipelines.summary`).
The page holds no date or run id, so equal inputs give equal bytes (reports/ is a DVC output).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from pipelines.report import fmt_auc
from pipelines.summary import Findings, fmt_p, learning_verdict, model_verdict

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1100px;margin:auto;padding:1.2em 2em 3em;background:#fff}
h1{font-size:1.6em;margin:.4em 0 .2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}h3{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0}
th,td{border-bottom:1px solid #e4e4e4;padding:.25em .7em;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.ref td{font-weight:600}.verdict{background:#eef6ee;border-left:4px solid #2e7d32;padding:.5em .9em;margin:.6em 0}
.planted{color:#b71c1c;font-weight:600}.muted{color:#777;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
code{background:#f3f3f3;padding:0 .25em}details{margin:.4em 0}nav a{margin-right:1em}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def img_tag(path: Path, alt: str) -> str:
    """An <img> holding the PNG at ``path`` as a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure(path: Path, caption: str, shown=None) -> str:
    """A figure with its caption and the file it came from (``shown``: the name to print)."""
    return f"<figure>{img_tag(path, caption)}<figcaption>{_e(caption)} <span class=muted>" \
           f"({_e(shown if shown is not None else path)})</span></figcaption></figure>"


def markdown_table_html(md: str) -> str:
    """The pipe tables of a markdown text as HTML tables, other lines as paragraphs."""
    out, rows = [], []

    def flush():
        if rows:
            head, body = rows[0], [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            out.append("<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            rows.clear()

    for line in md.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            rows.append([c.strip().replace("**", "") for c in s[1:-1].split("|")])
            continue
        flush()
        if s.startswith("#"):
            continue                      # the section has its own heading
        if s:
            out.append(f"<p class=muted>{_e(s.replace('`', ''))}</p>")
    flush()
    return "\n".join(out)


def _models_table(df: pd.DataFrame) -> str:
    head = ["model", "type", "AUC mean ± sd", "worst fold", "folds", "p vs best additive", "parameters"]
    rows = []
    for r in df.itertuples():
        p = "ref" if r.reference else fmt_p(r.p_vs_best_additive)
        rows.append(f"<tr{' class=ref' if r.reference else ''}><td>{_e(r.model)}</td><td>{_e(r.type)}</td>"
                    f"<td class=num>{r.auc_mean:.3f} ± {r.auc_sd:.3f}</td>"
                    f"<td class=num>{fmt_auc(getattr(r, 'auc_min', None))}</td><td class=num>{int(r.n_folds)}</td>"
                    f"<td class=num>{_e(p)}</td><td class=num>{int(r.n_parameters):,}</td></tr>")
    settings = ""
    if "params" in df:
        settings = ("<details><summary>settings of each model</summary><table><tr><th>model</th><th>settings"
                    "</th></tr>" + "".join(f"<tr><td>{_e(r.model)}</td><td><code>{_e(r.params)}</code></td></tr>"
                                           for r in df.itertuples()) + "</table></details>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
            + "<p class=muted>ref: the additive model with the highest mean AUC; p: Nadeau-Bengio corrected "
              "resampled t-test against it over the shared folds (two-sided, not corrected for the number of "
              "models).</p>" + settings)


def _snp_pairs_html(sp: dict) -> str:
    cols = ["rank", "SNP 1", "SNP 2", sp["value"] or "value"] + (["planted?"] if sp["n_planted"] else [])
    body = []
    for r in sp["rows"]:
        v = fmt_p(r["value"]) if sp["value"] == "p" else f"{r['value']:.3g}"
        mark = r["planted"]
        cls = " class=planted" if mark.startswith("planted") else ""
        body.append(f"<tr><td class=num>{r['rank']}</td><td>{_e(r['snp1'])}</td><td>{_e(r['snp2'])}</td>"
                    f"<td class=num>{_e(v)}</td>" + (f"<td{cls}>{_e(mark)}</td>" if sp["n_planted"] else "") + "</tr>")
    txt = ""
    if sp["n_planted"]:
        within = f" within the top {sp['found_within']} pairs" if sp.get("found_within") else ""
        txt = (f"<p class=verdict>Planted pairs recovered at the locus level: {sp['n_found']} of {sp['n_planted']}"
               f"{_e(within)} of {sp['n_reported']:,} reported (truth: <code>{_e(sp['truth'])}</code>).</p>")
    npairs = f"{sp['n_pairs']:,} pairs" if sp.get("n_pairs") else "all pairs"
    return (f"<p>{_e(sp['method'] or 'pair')} scan of {_e(npairs)}; LD copies (both SNPs within "
            f"{sp['window']} SNPs of a better pair) merged.</p>{txt}<table><tr>"
            + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>" + "".join(body) + "</table>")


def _genes_html(name: str, g: dict) -> str:
    auc = f" (AUC {g['auc']:.3f})" if isinstance(g.get("auc"), (int, float)) else ""
    genes = ", ".join(f"<span class=planted>{_e(x)}*</span>" if p else _e(x) for x, p in g["genes"])
    out = [f"<h3>{_e(name)}{_e(auc)}</h3><p>top genes: {genes}</p>"]
    if g["pairs"] is None:
        out.append("<p class=muted>no gene pairs: an additive model cannot make genes interact.</p>")
    elif g["pairs"]:
        out.append("<table><tr><th>gene pair</th><th>net p (random-pair null)</th><th>held-out burden x burden p"
                   "</th></tr>" + "".join(
                       f"<tr><td{' class=planted' if p['planted'] else ''}>{_e(p['a'])} x {_e(p['b'])}"
                       f"{' (planted)' if p['planted'] else ''}</td><td class=num>{fmt_p(p['p'])}</td>"
                       f"<td class=num>{fmt_p(p['burden_p'])}</td></tr>" for p in g["pairs"]) + "</table>")
    return "\n".join(out)


# figure files (relative to the project) shown under each section, with their captions
NGG_FIGURES = (
    ("work/ngg_1d/manhattan.png", "1D exact scan: -log10 p per SNP (red: top SNPs; dashed: Bonferroni)"),
    ("work/ngg_2d/map_overview.png", "All SNP pairs: max -log10 p per cell, top pairs circled"),
    ("work/ngg_2d/manhattan.png", "Best interaction partner per SNP (red: SNPs of the top pairs; dashed: "
                                  "Bonferroni over all pairs)"),
    ("work/ngg_2d/map_zoom.png", "Pair statistics around the top pair"),
    ("work/ngg_2d/pair_boxplots.png", "Phenotype by two-locus genotype for the top pairs"),
    ("work/heritability/heritability.png", "Variance explained by the top SNPs and pairs (in-sample)"),
    ("work/heritability/heritability_holdout.png", "Variance explained, pairs selected on other samples"),
)
INTERPRET_FIGURES = (("gene_importance.png", "gene importance along the genome"),
                     ("pathways.png", "most important pathways / hidden units"),
                     ("interactions.png", "interaction scores among the top genes"))


def render(f: Findings, report_dir: Path, root: Path = Path("."), extras: dict | None = None,
           report_name: str = "reports") -> str:
    """The page for findings ``f``; figures from ``report_dir`` (Table 1's folder, possibly the
    temporary folder of an atomic write; shown as ``report_name``) and the project ``root``;
    ``extras``: :func:`pipelines.report.collect_extras` of the report folder."""
    report_dir, root = Path(report_dir), Path(root)
    parts = [f"<h1>{_e(f.study)}: results</h1>",
             "<nav><a href='#models'>models</a><a href='#curve'>learning curve</a><a href='#pairs'>SNP pairs</a>"
             "<a href='#genes'>genes</a><a href='#files'>files</a></nav>"]
    glance = []
    if f.models is not None:
        glance.append(model_verdict(f))
    if f.learning_curve:
        glance.append(learning_verdict(f.learning_curve))
    if f.snp_pairs and f.snp_pairs["rows"]:
        r = f.snp_pairs["rows"][0]
        glance.append(f"Strongest SNP pair: {r['snp1']} x {r['snp2']}"
                      + (f" ({r['planted']})" if r["planted"] else "") + ".")
    if glance:
        parts.append("<h2>At a glance</h2>" + "".join(f"<p class=verdict>{_e(t)}</p>" for t in glance))
    parts.append("<h2 id=models>Do networks beat additive models? (Table 1)</h2>")
    if f.models is not None:
        parts.append(_models_table(f.models))
        for name, cap in (("roc.png", "ROC curves, out-of-fold predictions of repeat 0 (dashed: additive models)"),
                          ("fold_auc.png", "AUC of every CV fold per model")):
            if (report_dir / name).is_file():
                parts.append(_figure(report_dir / name, cap, f"{report_name}/{name}"))
    else:
        parts.append("<p class=muted>no trained models (run <code>make repro</code>).</p>")
    parts.append("<h2 id=curve>Learning curve and sparsity</h2>")
    if f.learning_curve:
        parts.append(f"<p class=verdict>{_e(learning_verdict(f.learning_curve))}</p>")
    for name, ex in sorted((extras or {}).items()):
        parts.append(f"<h3>{_e(name.replace('_', ' '))}</h3>")
        if ex.get("table"):
            parts.append(markdown_table_html(ex["table"]))
        for p in ex.get("files", []):
            if Path(p).suffix == ".png":
                parts.append(_figure(Path(p), Path(p).stem.replace('_', ' '),
                                     f"{report_name}/{name}/{Path(p).name}"))
    parts.append("<h2 id=pairs>Which SNP pairs interact</h2>")
    if f.snp_pairs:
        parts.append(_snp_pairs_html(f.snp_pairs))
    else:
        parts.append("<p class=muted>no 2D scan (run <code>. .venv/bin/activate &amp;&amp; dvc repro ngg_2d</code>)."
                     "</p>")
    for rel, cap in NGG_FIGURES:
        if (root / rel).is_file():
            parts.append(_figure(root / rel, cap, rel))
    parts.append("<h2 id=genes>Which genes the networks use and pair</h2>")
    if f.genes:
        parts.append("<p class=muted>epiflow interpret; * and red: planted in the simulated cohort. A net's p says "
                     "\"this net couples the two genes\"; the held-out burden test is the evidence in the data."
                     "</p>")
        for name, g in f.genes.items():
            parts.append(_genes_html(name, g))
            for fig, cap in INTERPRET_FIGURES:
                path = root / "work/interpret" / name / fig
                if path.is_file():
                    parts.append(_figure(path, f"{name}: {cap}", f"work/interpret/{name}/{fig}"))
    else:
        parts.append("<p class=muted>not run: <code>. .venv/bin/activate &amp;&amp; dvc repro interpret &amp;&amp; "
                     "dvc repro -f report</code> adds them here.</p>")
    parts.append("<h2 id=files>Where everything is</h2><table>" + "".join(
        f"<tr><td><code>{_e(p)}</code></td><td>{_e(w)}</td></tr>" for p, w in f.outputs) + "</table>")
    if f.not_run:
        parts.append("<p class=muted>not run yet: " + "; ".join(f"{_e(w)} (<code>{_e(c)}</code>)"
                                                                for w, c in f.not_run) + "</p>")
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><meta name=viewport "
            f"content='width=device-width, initial-scale=1'><title>{_e(f.study)}: results</title>"
            f"<style>{CSS}</style></head><body><main>\n{body}\n</main></body></html>\n")


def write(path, f: Findings, report_dir, root=".", extras: dict | None = None, report_name: str = "reports") -> Path:
    """Render :func:`render` into ``path`` (inside an atomic output folder) and return it."""
    path = Path(path)
    path.write_text(render(f, report_dir, root, extras, report_name), encoding="utf-8")
    return path


__all__ = ["render", "write", "img_tag", "markdown_table_html"]
