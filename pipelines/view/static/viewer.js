// The epistasis map viewer: pan and zoom over the max pyramid of a 2D scan.
// Map coordinates are SNP positions along the scan's axis: x = second SNP (columns), y = first SNP
// (rows); the tested pairs fill the upper triangle (x > y). Level k pixels cover cell * 2^k SNPs and
// hold the maximum statistic of the pairs under them, so a peak keeps its value at every zoom.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("map"), ctx = canvas.getContext("2d");
  const M = { left: 78, top: 64, right: 12, bottom: 12 };   // axis margins, CSS px
  const state = {
    meta: null, s: 1, ox: 0, oy: 0, level: 0, colour: "nlp", vmax: null, bp: null,
    tiles: new Map(), pending: new Map(), hover: null, band: null, mark: null, dpr: 1,
  };
  const stats = { t0: performance.now(), firstViewMs: null, zooms: [], ready: false, tilesFetched: 0 };
  let zoomStart = null, idleWaiters = [];

  // ---------------------------------------------------------------------------------------------
  // values and colours: a tile is little-endian float16; every half value maps to one colour
  const HALF = new Float32Array(65536);
  (function () {
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      HALF[h] = e === 0 ? s * f * Math.pow(2, -24) : e === 31 ? (f ? NaN : s * Infinity)
        : s * (1 + f / 1024) * Math.pow(2, e - 15);
    }
  })();

  // -log10 of the chi-square (1 df) upper tail: p = erfc(sqrt(x/2)); log erfc by the Chebyshev
  // fit of Numerical Recipes (relative error < 1.2e-7 everywhere), so no underflow at huge x
  function nlp(x) {
    if (!(x >= 0)) return NaN;
    const z = Math.sqrt(x / 2), t = 1 / (1 + 0.5 * z);
    const ln = Math.log(t) - z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
      t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    return Math.max(0, -ln / Math.LN10);
  }
  const transform = (v) => (state.colour === "nlp" ? nlp(v) : v);
  // colour "effect" draws the second map (max |effect| per pixel, when the scan wrote one)
  const layerQuery = () => (state.colour === "effect" ? "layer=effect" : "");

  // ColorBrewer YlOrRd extended to near-black: white for nothing, dark red for the strongest pairs
  const STOPS = [[255, 255, 255], [255, 255, 204], [255, 237, 160], [254, 217, 118], [254, 178, 76],
    [253, 141, 60], [252, 78, 42], [227, 26, 28], [189, 0, 38], [128, 0, 38], [60, 0, 20]];
  function ramp(u) {
    u = Math.min(1, Math.max(0, u)) * (STOPS.length - 1);
    const a = Math.floor(u), b = Math.min(a + 1, STOPS.length - 1), w = u - a;
    return STOPS[a].map((c, k) => Math.round(c + (STOPS[b][k] - c) * w));
  }
  let HALF_RGBA = new Uint32Array(65536);
  function buildColours() {
    const vmax = state.vmax > 0 ? state.vmax : 1;
    const lut = new Uint32Array(256);
    for (let k = 0; k < 256; k++) { const c = ramp(k / 255); lut[k] = (255 << 24) | (c[2] << 16) | (c[1] << 8) | c[0]; }
    for (let h = 0; h < 65536; h++) {
      const v = HALF[h];
      if (Number.isNaN(v)) { HALF_RGBA[h] = 0; continue; }
      HALF_RGBA[h] = lut[Math.min(255, Math.max(0, Math.round(transform(v) / vmax * 255)))];
    }
    for (const t of state.tiles.values()) if (t) t.img = null;
    drawLegend();
  }
  function tileImage(t) {
    if (!t.img) {
      const n = state.meta.tile, c = document.createElement("canvas");
      c.width = n; c.height = n;
      const c2 = c.getContext("2d"), im = c2.createImageData(n, n), out = new Uint32Array(im.data.buffer);
      for (let k = 0; k < t.u16.length; k++) out[k] = HALF_RGBA[t.u16[k]];
      c2.putImageData(im, 0, 0);
      t.img = c;
    }
    return t.img;
  }

  // ---------------------------------------------------------------------------------------------
  // geometry
  const mapW = () => canvas.clientWidth - M.left - M.right;
  const mapH = () => canvas.clientHeight - M.top - M.bottom;
  const toScreen = (x, y) => [M.left + (x - state.ox) * state.s, M.top + (y - state.oy) * state.s];
  const toWorld = (sx, sy) => [(sx - M.left) / state.s + state.ox, (sy - M.top) / state.s + state.oy];
  const fitScale = () => Math.min(mapW(), mapH()) / state.meta.n_snps;
  const maxScale = () => 64 / state.meta.cell;
  const MIN_PX = 2;   // a drawn map pixel covers at least this many device pixels
  function levelFor(s) {
    // the finest level whose pixels are at least MIN_PX device pixels: no map pixel (and so no
    // peak, the levels being max-pooled) is skipped or averaged away, and a lone pair stays visible
    const m = state.meta, px = s * m.cell * state.dpr;
    let k = 0;
    while (k < m.n_levels - 1 && px * Math.pow(2, k) < MIN_PX) k++;
    return k;
  }
  function clampView() {
    const p = state.meta.n_snps, w = mapW() / state.s, h = mapH() / state.s;
    state.ox = w >= p ? (p - w) / 2 : Math.min(Math.max(state.ox, 0), p - w);
    state.oy = h >= p ? (p - h) / 2 : Math.min(Math.max(state.oy, 0), p - h);
  }
  function visibleTiles(k) {
    const m = state.meta, lv = m.levels[k], span = m.tile * lv.cell;
    const [x0, y0] = toWorld(M.left, M.top), [x1, y1] = toWorld(M.left + mapW(), M.top + mapH());
    const out = [], n = lv.tiles_per_side;
    for (let r = Math.max(0, Math.floor(y0 / span)); r <= Math.min(n - 1, Math.floor(y1 / span)); r++)
      for (let c = Math.max(r, Math.floor(x0 / span)); c <= Math.min(n - 1, Math.floor(x1 / span)); c++)
        out.push([k, r, c]);
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // tiles
  const key = (k, r, c) => (state.colour === "effect" ? "e/" : "") + k + "/" + r + "/" + c;
  const PREFETCH = new URLSearchParams(location.search).get("prefetch") !== "0";
  const background = new Map();   // prefetches: not waited for by the idle check
  function fetchTile(k, r, c, quiet) {
    const id = key(k, r, c);
    if (state.tiles.has(id) || state.pending.has(id)) return;
    if (background.has(id)) { if (!quiet) { state.pending.set(id, background.get(id)); } return; }
    const lq = layerQuery();
    const p = fetch(`/api/tile/${k}/${r}/${c}` + (lq ? "?" + lq : "")).then(async (res) => {
      if (res.status === 204) state.tiles.set(id, null);
      else if (res.ok) state.tiles.set(id, { u16: new Uint16Array(await res.arrayBuffer()), img: null });
      else throw new Error(`tile ${id}: HTTP ${res.status}`);
      stats.tilesFetched++;
    }).catch((e) => { console.error(e); state.tiles.set(id, null); })
      .finally(() => { state.pending.delete(id); background.delete(id); schedule(); });
    (quiet ? background : state.pending).set(id, p);
  }
  function drawTile(k, r, c, t) {
    const m = state.meta, span = m.tile * m.levels[k].cell;
    const [sx, sy] = toScreen(c * span, r * span);
    ctx.drawImage(tileImage(t), sx, sy, span * state.s, span * state.s);
  }
  function drawFallback(k, r, c) {
    // a coarser cached tile stretched over the missing one while it loads
    const m = state.meta;
    for (let q = k + 1; q < m.n_levels; q++) {
      const f = Math.pow(2, q - k), rr = Math.floor(r / f), cc = Math.floor(c / f);
      const t = state.tiles.get(key(q, rr, cc));
      if (t === undefined) continue;
      if (t === null) return;
      const n = m.tile, sub = n / f, span = n * m.levels[k].cell;
      const [sx, sy] = toScreen(c * span, r * span);
      ctx.drawImage(tileImage(t), (c % f) * sub, (r % f) * sub, sub, sub, sx, sy, span * state.s, span * state.s);
      return;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // drawing
  let scheduled = false;
  function schedule() { if (!scheduled) { scheduled = true; requestAnimationFrame(render); } }
  function render() {
    scheduled = false;
    const m = state.meta;
    if (!m) return;
    const W = canvas.clientWidth, H = canvas.clientHeight;
    ctx.setTransform(state.dpr, 0, 0, state.dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    ctx.save();
    ctx.beginPath(); ctx.rect(M.left, M.top, mapW(), mapH()); ctx.clip();
    // the tested triangle in light grey (pairs without a value stay grey)
    const p = m.n_snps, [ax, ay] = toScreen(0, 0), [bx, by] = toScreen(p, p);
    ctx.fillStyle = "#efefef";
    ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(bx, ay); ctx.lineTo(bx, by); ctx.closePath(); ctx.fill();
    ctx.imageSmoothingEnabled = false;
    const k = state.level, want = visibleTiles(k);
    let missing = 0;
    for (const [q, r, c] of want) {
      const t = state.tiles.get(key(q, r, c));
      if (t === undefined) { missing++; fetchTile(q, r, c); drawFallback(q, r, c); }
      else if (t) drawTile(q, r, c, t);
    }
    drawOverlays();
    ctx.restore();
    drawAxes();
    if (missing === 0 && state.pending.size === 0) onIdle();
    $("status").textContent = `level ${k} of ${m.n_levels - 1} · pixel = ${m.levels[k].cell.toLocaleString()} SNP` +
      (m.levels[k].cell > 1 ? "s" : "") + ` · ${m.n_snps.toLocaleString()} SNPs`;
  }
  function onIdle() {
    const now = performance.now();
    if (!stats.ready) {
      stats.firstViewMs = now;   // since the navigation started
      stats.ready = true;
      // what the first view does not need comes after it
      fetch("/api/warm", { method: "POST" }).catch(() => {});
      loadTop();
      fetch("/api/axis.bin").then((r) => r.arrayBuffer()).then((b) => { state.bp = new Int32Array(b); schedule(); });
    }
    if (zoomStart) {
      stats.zooms.push({ level: state.level, ms: now - zoomStart.t, tiles: stats.tilesFetched - zoomStart.n });
      zoomStart = null;
    }
    const w = idleWaiters; idleWaiters = [];
    w.forEach((f) => f());
    prefetch();
  }
  function prefetch() {
    // the next finer level under the whole view, fetched while the user looks: a zoom step
    // anywhere in the view then finds its tiles in memory (?prefetch=0 turns this off)
    if (!PREFETCH || state.level === 0) return;
    const want = visibleTiles(state.level - 1).filter(([q, r, c]) => !state.tiles.has(key(q, r, c)));
    if (want.length <= 48) for (const [q, r, c] of want) fetchTile(q, r, c, true);
  }
  function drawOverlays() {
    const m = state.meta, p = m.n_snps;
    ctx.lineWidth = 1;
    // chromosome boundaries
    ctx.strokeStyle = "rgba(90,90,90,0.45)";
    ctx.beginPath();
    for (const seg of m.chromosomes.slice(1)) {
      const [x] = toScreen(seg.start, 0), [, y] = toScreen(0, seg.start);
      const [, y0] = toScreen(0, 0), [x1] = toScreen(p, 0);
      ctx.moveTo(Math.round(x) + 0.5, y0); ctx.lineTo(Math.round(x) + 0.5, y);   // column boundary, above the diagonal
      ctx.moveTo(x, Math.round(y) + 0.5); ctx.lineTo(x1, Math.round(y) + 0.5);   // row boundary, right of the diagonal
    }
    ctx.stroke();
    // diagonal
    const [ax, ay] = toScreen(0, 0), [bx, by] = toScreen(p, p);
    ctx.strokeStyle = "#888"; ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(bx, by); ctx.stroke();
    if (state.band) {
      const [x0, y0] = toScreen(state.band.start, state.band.start), [x1, y1] = toScreen(state.band.end, state.band.end);
      ctx.fillStyle = "rgba(30,100,200,0.12)";
      ctx.fillRect(x0, M.top, Math.max(2, x1 - x0), mapH());
      ctx.fillRect(M.left, y0, mapW(), Math.max(2, y1 - y0));
    }
    if (state.mark) {
      const [i, j] = state.mark, w = Math.max(state.s, 1);
      const [x, y] = toScreen(j, i);
      ctx.strokeStyle = "#1463c8"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(x + w / 2, y + w / 2, Math.max(9, w * 0.8), 0, 2 * Math.PI); ctx.stroke();
    }
  }
  function niceStep(span, target) {
    const raw = span / target, pow = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const f of [1, 2, 5, 10]) if (f * pow >= raw) return f * pow;
    return 10 * pow;
  }
  function fmtBp(v, step) {
    if (step >= 1e6) return (v / 1e6).toFixed(0) + " Mb";
    if (step >= 1e5) return (v / 1e6).toFixed(1) + " Mb";
    if (step >= 1e4) return (v / 1e6).toFixed(2) + " Mb";
    if (step >= 1e3) return (v / 1e3).toFixed(0) + " kb";
    return v.toLocaleString() + " bp";
  }
  function lowerBound(a, lo, hi, v) { while (lo < hi) { const mid = (lo + hi) >> 1; if (a[mid] < v) lo = mid + 1; else hi = mid; } return lo; }
  function drawAxes() {
    const m = state.meta, W = canvas.clientWidth, H = canvas.clientHeight;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, M.top - 1); ctx.fillRect(0, 0, M.left - 1, H);
    ctx.fillStyle = "#222"; ctx.strokeStyle = "#444"; ctx.lineWidth = 1;
    ctx.font = "12px DejaVu Sans, Helvetica, Arial, sans-serif";
    ctx.textAlign = "left"; ctx.textBaseline = "alphabetic";
    ctx.fillText("second SNP", M.left, 14);
    ctx.save(); ctx.translate(14, M.top); ctx.rotate(-Math.PI / 2); ctx.textAlign = "right"; ctx.fillText("first SNP", 0, 0); ctx.restore();
    const x0 = M.left, x1 = M.left + mapW(), y0 = M.top, y1 = M.top + mapH();
    for (const seg of m.chromosomes) {
      const name = String(seg.chrom).replace(/^chr/i, "");
      const [sa, ta] = toScreen(seg.start, seg.start), [sb, tb] = toScreen(seg.end, seg.end);
      const wide = sb - sa;
      // boundaries as long ticks
      ctx.beginPath();
      if (sa >= x0 && sa <= x1) { ctx.moveTo(Math.round(sa) + 0.5, M.top - 26); ctx.lineTo(Math.round(sa) + 0.5, M.top); }
      if (ta >= y0 && ta <= y1) { ctx.moveTo(M.left - 26, Math.round(ta) + 0.5); ctx.lineTo(M.left, Math.round(ta) + 0.5); }
      ctx.stroke();
      const label = wide > 60 ? "chr" + name : name;
      ctx.font = "bold 12px DejaVu Sans, Helvetica, Arial, sans-serif";
      if (wide >= ctx.measureText(label).width + 4) {
        const cx = (Math.max(sa, x0) + Math.min(sb, x1)) / 2, cy = (Math.max(ta, y0) + Math.min(tb, y1)) / 2;
        if (sb > x0 && sa < x1) { ctx.textAlign = "center"; ctx.fillText(label, cx, M.top - 30); }
        if (tb > y0 && ta < y1) { ctx.save(); ctx.translate(M.left - 30, cy); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center"; ctx.fillText(label, 0, 0); ctx.restore(); }
      }
      ctx.font = "11px DejaVu Sans, Helvetica, Arial, sans-serif";
      if (state.bp && wide > 220) drawBpTicks(seg, sa, sb, ta, tb);
    }
    ctx.strokeStyle = "#444";
    ctx.strokeRect(M.left - 0.5, M.top - 0.5, mapW() + 1, mapH() + 1);
  }
  function drawBpTicks(seg, sa, sb, ta, tb) {
    // bp positions inside one chromosome once it is wide on screen, on each axis where it shows
    const bp = state.bp;
    const axes = [[sa, sb, M.left, M.left + mapW(), true], [ta, tb, M.top, M.top + mapH(), false]];
    for (const [a, b, lo, hi, horiz] of axes) {
      if (b <= lo || a >= hi) continue;
      const w0 = (Math.max(a, lo) - (horiz ? M.left : M.top)) / state.s + (horiz ? state.ox : state.oy);
      const w1 = (Math.min(b, hi) - (horiz ? M.left : M.top)) / state.s + (horiz ? state.ox : state.oy);
      const ia = Math.max(seg.start, Math.floor(w0)), ib = Math.min(seg.end - 1, Math.ceil(w1) - 1);
      if (ib <= ia) continue;
      const step = niceStep(Math.max(bp[ib] - bp[ia], 1), Math.max(2, (Math.min(b, hi) - Math.max(a, lo)) / 110));
      ctx.textAlign = "center";
      for (let v = Math.ceil(bp[ia] / step) * step; v <= bp[ib]; v += step) {
        const k = lowerBound(bp, seg.start, seg.end, v);
        if (k >= seg.end) break;
        const [x, y] = toScreen(k, k), t = horiz ? x : y;
        if (t < lo || t > hi || t > b - 16) continue;   // not on top of the next chromosome's boundary
        ctx.beginPath();
        if (horiz) { ctx.moveTo(x, M.top - 6); ctx.lineTo(x, M.top); ctx.stroke(); ctx.fillText(fmtBp(v, step), x, M.top - 9); }
        else {
          ctx.moveTo(M.left - 6, y); ctx.lineTo(M.left, y); ctx.stroke();
          ctx.save(); ctx.translate(M.left - 9, y); ctx.rotate(-Math.PI / 2); ctx.fillText(fmtBp(v, step), 0, 0); ctx.restore();
        }
      }
    }
  }
  function drawLegend() {
    const c = $("legend"), g = c.getContext("2d"), w = c.width - 20, vmax = state.vmax;
    g.clearRect(0, 0, c.width, c.height);
    for (let x = 0; x < w; x++) { const col = ramp(x / (w - 1)); g.fillStyle = `rgb(${col})`; g.fillRect(10 + x, 4, 1, 18); }
    g.strokeStyle = "#444"; g.strokeRect(9.5, 3.5, w + 1, 19);
    g.fillStyle = "#222"; g.font = "11px DejaVu Sans, Helvetica, Arial, sans-serif"; g.textAlign = "center";
    const step = niceStep(vmax, 5);
    for (let v = 0; v <= vmax + 1e-9; v += step) {
      const x = 10 + (v / vmax) * (w - 1);
      g.fillRect(Math.round(x), 23, 1, 4); g.fillText(+v.toFixed(6) + "", x, 38);
    }
    g.textAlign = "left";
    const eff = state.meta ? state.meta.effect.toUpperCase() : "effect";
    g.fillText(state.meta && state.meta.effect_only ? "NGG score of the pair (max over the pixel)"
      : state.colour === "nlp" ? "−log10 p of the pair (max over the pixel)" : state.colour === "effect"
      ? `|${eff}| of the pair (max over the pixel)` : "interaction χ² (max over the pixel)", 10, 54);
    $("legend-note").textContent = "grey: no tested pair; the lower triangle mirrors the upper one and is left empty.";
  }

  // ---------------------------------------------------------------------------------------------
  // navigation
  function setScale(s, sx, sy) {
    const [wx, wy] = toWorld(sx, sy);
    state.s = Math.min(maxScale(), Math.max(fitScale(), s));
    state.ox = wx - (sx - M.left) / state.s; state.oy = wy - (sy - M.top) / state.s;
    clampView();
    const k = levelFor(state.s);
    if (k !== state.level || !zoomStart) zoomStart = { t: performance.now(), n: stats.tilesFetched };
    state.level = k;
    schedule();
  }
  function zoomBy(steps, sx, sy) {
    if (sx === undefined) { sx = M.left + mapW() / 2; sy = M.top + mapH() / 2; }
    setScale(state.s * Math.pow(2, steps), sx, sy);
  }
  function centerOn(i, j, level) {
    // centre the pair (i = first SNP row, j = second SNP column) at a given level's zoom
    const m = state.meta;
    let s = state.s;
    if (level !== undefined) s = MIN_PX / (m.cell * Math.pow(2, level) * state.dpr);
    if (level === 0) s = Math.max(s, Math.min(maxScale(), 24 / m.cell));
    state.s = Math.min(maxScale(), Math.max(fitScale(), s));
    state.ox = j + 0.5 - mapW() / 2 / state.s; state.oy = i + 0.5 - mapH() / 2 / state.s;
    clampView();
    state.level = levelFor(state.s);
    zoomStart = { t: performance.now(), n: stats.tilesFetched };
    schedule();
  }
  function fitRange(a, b) {
    const n = Math.max(b - a, 1), s = Math.min(mapW(), mapH()) / (n * 1.15);
    state.s = Math.min(maxScale(), Math.max(fitScale(), s));
    state.ox = (a + b) / 2 - mapW() / 2 / state.s; state.oy = (a + b) / 2 - mapH() / 2 / state.s;
    clampView(); state.level = levelFor(state.s);
    zoomStart = { t: performance.now(), n: stats.tilesFetched };
    schedule();
  }
  function home() { state.s = fitScale(); state.ox = 0; state.oy = 0; clampView(); state.level = levelFor(state.s); schedule(); }

  let wheelAcc = 0;
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    wheelAcc += e.deltaY;
    if (Math.abs(wheelAcc) < 40) return;
    const steps = wheelAcc < 0 ? 1 : -1;
    wheelAcc = 0;
    const r = canvas.getBoundingClientRect();
    zoomBy(steps, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, ox: state.ox, oy: state.oy, moved: false }; });
  window.addEventListener("mouseup", (e) => {
    if (drag && !drag.moved && e.target === canvas) click(e);
    drag = null; canvas.classList.remove("dragging");
  });
  window.addEventListener("mousemove", (e) => {
    if (drag) {
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) {
        canvas.classList.add("dragging");
        state.ox = drag.ox - dx / state.s; state.oy = drag.oy - dy / state.s; clampView(); schedule();
      }
      return;
    }
    if (e.target === canvas) hover(e); else hideTooltip();
  });
  canvas.addEventListener("mouseleave", hideTooltip);
  canvas.addEventListener("dblclick", (e) => { const r = canvas.getBoundingClientRect(); zoomBy(1, e.clientX - r.left, e.clientY - r.top); });
  $("zoom-in").onclick = () => zoomBy(1);
  $("zoom-out").onclick = () => zoomBy(-1);
  $("home").onclick = home;
  $("colour").onchange = (e) => { state.colour = e.target.value; state.hover = null; state.vmax = autoVmax(); $("vmax").value = +state.vmax.toPrecision(3); buildColours(); schedule(); };
  $("vmax").onchange = (e) => { const v = parseFloat(e.target.value); state.vmax = v > 0 ? v : autoVmax(); buildColours(); schedule(); };
  $("card-close").onclick = () => { $("card-box").hidden = true; state.mark = null; schedule(); };
  window.addEventListener("resize", resize);

  // ---------------------------------------------------------------------------------------------
  // details on demand
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const fmt = (v, d = 4) => (v === null || v === undefined || Number.isNaN(v) ? "NA" : Math.abs(v) >= 1e5 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(d - 1) : (+v.toPrecision(d)).toString());
  const snpText = (s) => `${esc(s.snp)} <span class="small">(chr${esc(String(s.chrom).replace(/^chr/i, ""))}:${s.bp.toLocaleString()})</span>`;
  function pixelAt(sx, sy) {
    const [x, y] = toWorld(sx, sy), m = state.meta, w = m.levels[state.level].cell;
    if (sx < M.left || sy < M.top || x < 0 || y < 0 || x >= m.n_snps || y >= m.n_snps) return null;
    return { level: state.level, row: Math.floor(y / w), col: Math.floor(x / w) };
  }
  let hoverTimer = null, hoverSeq = 0;
  function hover(e) {
    const r = canvas.getBoundingClientRect(), sx = e.clientX - r.left, sy = e.clientY - r.top;
    const px = pixelAt(sx, sy);
    const tip = $("tooltip");
    if (!px || px.col < px.row) { hideTooltip(); return; }
    tip.style.left = Math.min(sx + 16, canvas.clientWidth - 300) + "px"; tip.style.top = (sy + 16) + "px";
    const id = `${px.level}/${px.row}/${px.col}`;
    if (state.hover && state.hover.id === id) return;
    state.hover = { id, px, info: null };
    clearTimeout(hoverTimer);
    const seq = ++hoverSeq;
    hoverTimer = setTimeout(async () => {
      const res = await fetch(`/api/pixel?level=${px.level}&row=${px.row}&col=${px.col}&` + layerQuery());
      const info = await res.json();
      if (seq !== hoverSeq) return;
      state.hover.info = info;
      showHover(info);
    }, 30);
  }
  function showHover(info) {
    const tip = $("tooltip");
    let h;
    if (info.value === null) {
      h = "no tested pair here";
    } else if (state.meta.effect_only) {   // an NGG map: scores, the exact statistic of the named pair
      const m = state.meta, w = m.levels[info.level].cell, P = info.pair;
      h = `<b>${P ? "best pair" : "pixel"}</b> · NGG score ${fmt(info.value)}`;
      if (P) {
        h += `<div class="hover-pair">${snpText(P.snp1)} × ${snpText(P.snp2)}</div>`;
        if (P.stat !== null && P.stat !== undefined) h += `<div class="small">exact χ² ${fmt(P.stat)} · −log10 p ${fmt(P.neg_log10_p, 3)}${P.score === null ? " (best exact pair of the cell: its top NGG pair is not listed)" : ""}</div>`;
      }
      if (w > 1 && info.rows) h += `<div class="small">pixel: ${w.toLocaleString()} × ${w.toLocaleString()} SNPs, rows ${esc(info.rows.first.snp)}…${esc(info.rows.last.snp)}, columns ${esc(info.cols.first.snp)}…${esc(info.cols.last.snp)}</div>`;
      if (!P && w > 1) h += `<div class="small note">the pair needs the scan's genotypes or a listed top pair</div>`;
    } else {
      const m = state.meta, w = m.levels[info.level].cell;
      h = `<b>${info.pair ? "best pair" : "pixel"}</b> · χ² ${fmt(info.value)} · −log10 p ${fmt(nlp(info.value), 3)}`;
      if (info.effect !== undefined && info.effect !== null) h += ` · max |${esc(m.effect.toUpperCase())}| ${fmt(info.effect)}`;
      if (info.pair) h += `<div class="hover-pair">${snpText(info.pair.snp1)} × ${snpText(info.pair.snp2)}</div>`;
      if (w > 1 && info.rows) h += `<div class="small">pixel: ${w.toLocaleString()} × ${w.toLocaleString()} SNPs, rows ${esc(info.rows.first.snp)}…${esc(info.rows.last.snp)}, columns ${esc(info.cols.first.snp)}…${esc(info.cols.last.snp)}</div>`;
      if (!info.pair && w > 1) h += `<div class="small note">best pair needs the scan's genotypes</div>`;
    }
    tip.innerHTML = h; tip.hidden = false;
    $("hover").innerHTML = h;
  }
  function hideTooltip() { $("tooltip").hidden = true; state.hover = null; hoverSeq++; }
  async function click(e) {
    const r = canvas.getBoundingClientRect(), px = pixelAt(e.clientX - r.left, e.clientY - r.top);
    if (!px || px.col < px.row) return;
    const info = await (await fetch(`/api/pixel?level=${px.level}&row=${px.row}&col=${px.col}&` + layerQuery())).json();
    if (info.pair) openCard(info.pair.snp1.pos, info.pair.snp2.pos);
  }
  async function openCard(i, j) {
    state.mark = [i, j]; schedule();
    const box = $("card-box"), el = $("card");
    box.hidden = false; el.innerHTML = "loading…";
    const res = await fetch(`/api/pair?i=${i}&j=${j}`), c = await res.json();
    if (c.error) { el.innerHTML = `<p class="note">${esc(c.error)}</p>`; return; }
    const v = c.computed || {}, L = c.listed || {};
    const stat = v.stat ?? L.stat, p = v.p ?? L.p, eff = v.effect ?? L[c.effect_name], n = v.n ?? L.n;
    let h = `<div class="snps"><div class="snp">${snpText(c.snp1)}</div><div>×</div><div class="snp">${snpText(c.snp2)}</div></div>`;
    if (c.ngg) {   // an NGG scan: its own numbers (top_pairs.tsv), then the exact pair model recomputed
      h += `<table class="stats"><tr><th>NGG score</th><td data-field="score" data-value="${L.score}">${fmt(L.score, 6)}</td></tr>`;
      h += `<tr><th>NGG support</th><td data-field="support">${fmt(L.support, 3)}</td></tr>`;
      h += `<tr><th>NGG mean effect</th><td data-field="ngg-effect">${fmt(L.effect)}</td></tr>`;
      if (!c.listed) h += `<tr><td colspan="2" class="small">not among the listed top pairs of top_pairs.tsv</td></tr>`;
      h += `</table><p class="small">exact pair model, recomputed from the genotypes:</p>`;
    }
    h += `<table class="stats"><tr><th>${esc(c.effect_name.toUpperCase())}</th><td data-field="effect" data-value="${eff}">${fmt(eff)}</td></tr>`;
    h += `<tr><th>STAT (χ², 1 df)</th><td data-field="stat" data-value="${stat}">${fmt(stat, 6)}</td></tr>`;
    h += `<tr><th>p</th><td data-field="p" data-value="${p}">${fmt(p, 3)}</td></tr>`;
    h += `<tr><th>n</th><td data-field="n" data-value="${n}">${n ?? "NA"}</td></tr>`;
    if (c.listed && !c.ngg) h += `<tr><th>rank in top_pairs.tsv</th><td data-field="rank">${c.listed.rank}</td></tr>`;
    h += `</table>`;
    if (c.note) h += `<p class="note small">${esc(c.note)}${c.computed ? "" : "; numbers from top_pairs.tsv"}</p>`;
    else if (!c.listed) h += `<p class="small">recomputed from the genotypes (not among the listed top pairs)</p>`;
    if (c.table) h += genoTable(c) + boxPlot(c);
    el.innerHTML = h;
  }
  function genoLabels(al) { return [al[1] + al[1], al[0] + al[1], al[0] + al[0]]; }
  function genoTable(c) {
    const a1 = genoLabels(c.alleles.snp1), a2 = genoLabels(c.alleles.snp2), bin = c.trait === "binary";
    let h = `<h2>two-locus genotypes (${bin ? "n, % cases" : "n, mean phenotype"})</h2><table class="geno"><tr><th>${esc(c.snp1.snp)} \\ ${esc(c.snp2.snp)}</th>`;
    for (let v = 0; v < 3; v++) h += `<th>${esc(a2[v])}</th>`;
    h += "</tr>";
    for (let u = 0; u < 3; u++) {
      h += `<tr><th>${esc(a1[u])}</th>`;
      for (let v = 0; v < 3; v++) {
        const q = c.table[u * 3 + v];
        h += `<td>${q.n}<br><span class="small">${q.n ? (bin ? fmt(100 * q.mean, 3) + "%" : fmt(q.mean, 3)) : "–"}</span></td>`;
      }
      h += "</tr>";
    }
    return h + "</table>";
  }
  function boxPlot(c) {
    // phenotype by two-locus genotype: groups = first SNP's genotype, colour = second SNP's
    const cells = c.table.filter((q) => q.n > 0);
    if (!cells.length) return "";
    const bin = c.trait === "binary";
    const lo = bin ? 0 : Math.min(...cells.map((q) => Math.min(q.lo, ...q.outliers)));
    const hi = bin ? 1 : Math.max(...cells.map((q) => Math.max(q.hi, ...q.outliers)));
    const W = 330, H = 210, L = 44, B = 40, T = 10, ph = H - B - T, pw = W - L - 6;
    const yS = (v) => T + ph - ((v - lo) / (hi - lo || 1)) * ph;
    const cols = ["#4477aa", "#ee8833", "#228833"], a1 = genoLabels(c.alleles.snp1), a2 = genoLabels(c.alleles.snp2);
    let s = `<h2>${bin ? "fraction of cases" : "phenotype"} by genotype</h2><svg width="${W}" height="${H + 18}" class="box">`;
    const step = niceStep(hi - lo || 1, 5);
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) {
      s += `<line x1="${L}" x2="${W - 6}" y1="${yS(v)}" y2="${yS(v)}" stroke="#eee"/><text x="${L - 4}" y="${yS(v) + 4}" font-size="10" text-anchor="end">${+v.toPrecision(4)}</text>`;
    }
    const gw = pw / 3, bw = gw / 4;
    for (let u = 0; u < 3; u++) {
      s += `<text x="${L + gw * u + gw / 2}" y="${H - B + 16}" font-size="11" text-anchor="middle">${esc(a1[u])}</text>`;
      for (let v = 0; v < 3; v++) {
        const q = c.table[u * 3 + v], x = L + gw * u + bw * (v + 0.5), col = cols[v];
        if (!q.n) continue;
        if (bin) {
          s += `<rect x="${x}" y="${yS(q.mean)}" width="${bw * 0.8}" height="${yS(0) - yS(q.mean)}" fill="${col}" opacity="0.8"/>`;
        } else {
          const m = x + bw * 0.4;
          s += `<line x1="${m}" x2="${m}" y1="${yS(q.lo)}" y2="${yS(q.hi)}" stroke="${col}"/>`;
          s += `<rect x="${x}" y="${yS(q.q3)}" width="${bw * 0.8}" height="${Math.max(1, yS(q.q1) - yS(q.q3))}" fill="${col}" fill-opacity="0.35" stroke="${col}"/>`;
          s += `<line x1="${x}" x2="${x + bw * 0.8}" y1="${yS(q.median)}" y2="${yS(q.median)}" stroke="${col}" stroke-width="2"/>`;
          for (const o of q.outliers) s += `<circle cx="${m}" cy="${yS(o)}" r="1.6" fill="${col}"/>`;
        }
        s += `<text x="${x + bw * 0.4}" y="${H - B + 4}" font-size="8" text-anchor="middle" fill="#555">${q.n}</text>`;
      }
    }
    s += `<text x="${L + pw / 2}" y="${H - 6}" font-size="11" text-anchor="middle">${esc(c.snp1.snp)} genotype (n under each box)</text>`;
    let lx = L;
    for (let v = 0; v < 3; v++) { s += `<rect x="${lx}" y="${H + 6}" width="10" height="10" fill="${cols[v]}"/><text x="${lx + 13}" y="${H + 15}" font-size="10">${esc(a2[v])}</text>`; lx += 42; }
    s += `<text x="${lx + 4}" y="${H + 15}" font-size="10">${esc(c.snp2.snp)} genotype</text>`;
    return s + "</svg>";
  }
  async function loadTop() {
    const rows = await (await fetch("/api/top?limit=200")).json();
    if (!rows.length) { $("top-box").hidden = true; return; }
    const ngg = state.meta && state.meta.effect_only;   // an NGG scan lists scores, not p-values
    let h = `<table><tr><th>#</th><th>pair</th><th>${ngg ? "NGG score" : "−log10 p"}</th></tr>`;
    for (const r of rows) {
      h += `<tr data-i="${r.i}" data-j="${r.j}"><td>${r.rank}</td><td class="small">${esc(r.snp1)} × ${esc(r.snp2)}</td><td>${fmt(ngg ? r.score : r.p > 0 ? -Math.log10(r.p) : nlp(r.stat), 3)}</td></tr>`;
    }
    $("top-list").innerHTML = h + "</table>";
    $("top-list").querySelectorAll("tr[data-i]").forEach((tr) => tr.addEventListener("click", () => {
      $("top-list").querySelectorAll("tr.sel").forEach((x) => x.classList.remove("sel"));
      tr.classList.add("sel");
      jumpToPair(+tr.dataset.i, +tr.dataset.j);
    }));
  }
  function jumpToPair(i, j) { centerOn(i, j, 0); openCard(i, j); }
  $("search-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const q = $("search").value;
    const r = await (await fetch("/api/search?q=" + encodeURIComponent(q))).json();
    if (r.error) { $("status").textContent = r.error; return; }
    state.band = { start: r.start, end: r.end };
    if (r.focus && r.focus[0] !== r.focus[1]) jumpToPair(r.focus[0], r.focus[1]);
    else fitRange(r.start, r.end);
  });

  // ---------------------------------------------------------------------------------------------
  // start
  function autoVmax() {
    const v = (state.colour === "effect" ? state.meta.vmax_effect : state.meta.vmax) || 1;
    return state.colour === "nlp" ? nlp(v) : v;
  }
  function resize() {
    state.dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(canvas.clientWidth * state.dpr); canvas.height = Math.round(canvas.clientHeight * state.dpr);
    if (state.meta) { const keep = state.s; state.s = Math.max(keep, fitScale()); clampView(); state.level = levelFor(state.s); schedule(); }
  }
  async function start() {
    const m = await (await fetch("/api/meta")).json();
    if (m.error) { $("title").textContent = m.error; return; }
    state.meta = m;
    $("title").textContent = m.title + (m.n_samples ? ` · ${m.n_samples.toLocaleString()} samples` : "") +
      (m.n_pairs ? ` · ${m.n_pairs.toLocaleString()} pairs` : "");
    const opt = $("colour").querySelector('option[value="effect"]');
    opt.textContent = `|${m.effect.toUpperCase()}|`;
    if (m.effect_only) {   // an NGG map: the score is its only layer
      opt.textContent = "NGG score"; state.colour = "effect"; $("colour").value = "effect";
      for (const o of $("colour").options) if (o.value !== "effect") { o.disabled = true; o.title = "an NGG scan has no test statistic"; }
    } else if (!m.has_effect) { opt.disabled = true; opt.title = "this scan has no effect map: rerun the exact scan with --effect-map"; }
    state.vmax = autoVmax(); $("vmax").value = +state.vmax.toPrecision(3);
    resize();
    buildColours();
    fetchTile(m.n_levels - 1, 0, 0);
    home();
  }

  window.epiflowMap = {
    stats, state,
    zoomBy, centerOn, openCard, jumpToPair, home,
    screenOf(i, j) { const [x, y] = toScreen(j + 0.5, i + 0.5); const r = canvas.getBoundingClientRect(); return [r.left + x, r.top + y]; },
    pixelScreen(i, j) {
      // the screen centre of the current level's pixel holding pair (i, j)
      const w = state.meta.levels[state.level].cell, r = Math.floor(i / w), c = Math.floor(j / w);
      const [x, y] = toScreen((c + 0.5) * w, (r + 0.5) * w), b = canvas.getBoundingClientRect();
      return [b.left + x, b.top + y];
    },
    idle() { return new Promise((res) => { if (state.meta && state.pending.size === 0 && !zoomStart && stats.ready) res(); else { idleWaiters.push(res); schedule(); } }); },
  };
  start();
})();
