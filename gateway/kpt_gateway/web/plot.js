// Small SVG plots drawn by hand (no library): latency histograms and grouped bars.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  // bounded: a span of a few ulps (samples 0.3 and 0.30000000000000004) gives a step that does not move t
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9 && ticks.length <= 2 * count + 2; t += step) {
    ticks.push(+t.toPrecision(12));
  }
  return ticks;
}

function logTicks(lo, hi) {
  const ticks = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const t = m * 10 ** e;
      if (t >= lo && t <= hi) ticks.push(+t.toPrecision(3));
    }
  }
  return ticks;
}

function quantile(sorted, q) {
  const i = (sorted.length - 1) * q, lo = Math.floor(i), hi = Math.ceil(i);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (i - lo);
}

// series: [{label, color, samples: [ms...]}]; draws overlaid histograms (share of runs per bin)
// with a dashed line at each series' median.
function latencyHistogram(series, opts = {}) {
  // proto3 JSON writes NaN and Infinity as strings: only finite numbers are drawn; a series without any is left out
  series = series.map((s) => ({ ...s, samples: s.samples.map(Number).filter(Number.isFinite) }))
    .filter((s) => s.samples.length);
  const W = opts.width || 1000, H = opts.height || 300, M = { l: 56, r: 16, t: 28, b: 40 };
  const all = series.flatMap((s) => s.samples);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "plot", role: "img",
    id: opts.id || "", "aria-label": "latency distribution" });
  if (!all.length) {
    svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no latency samples"));
    return svg;
  }
  // Latency tails span orders of magnitude (a scheduler hiccup is 100x the median): past a 20x range
  // the x axis is logarithmic so the bulk of the runs is not squeezed into one bin.
  const positive = all.every((v) => v > 0);
  const log = positive && Math.max(...all) / Math.min(...all) > 20;
  const f = log ? Math.log10 : (v) => v, inv = log ? (v) => 10 ** v : (v) => v;
  let lo = f(Math.min(...all)), hi = f(Math.max(...all));
  const pad = (hi - lo) * 0.04 || Math.abs(hi) * 0.05 || 1;
  lo = log ? lo - pad : Math.max(0, lo - pad); hi += pad;
  const bins = opts.bins || 40, width = (hi - lo) / bins;
  const hists = series.map((s) => {
    const counts = new Array(bins).fill(0);
    for (const v of s.samples) counts[Math.min(bins - 1, Math.floor((f(v) - lo) / width))] += 1;
    return counts.map((n) => n / s.samples.length);
  });
  const ymax = Math.max(...hists.flat()) * 1.1 || 1;
  const x = (v) => M.l + ((f(v) - lo) / (hi - lo)) * (W - M.l - M.r);  // v in ms
  const y = (q) => H - M.b - (q / ymax) * (H - M.t - M.b);
  for (const t of niceTicks(0, ymax, 4)) {
    svg.appendChild(svgEl("line", { x1: M.l, x2: W - M.r, y1: y(t), y2: y(t), class: "grid" }));
    svg.appendChild(svgEl("text", { x: M.l - 6, y: y(t) + 4, "text-anchor": "end" }, `${Math.round(t * 100)}%`));
  }
  const xticks = log ? logTicks(inv(lo), inv(hi)) : niceTicks(lo, hi, 6);
  for (const t of xticks) {
    if (f(t) < lo || f(t) > hi) continue;
    svg.appendChild(svgEl("line", { x1: x(t), x2: x(t), y1: H - M.b, y2: H - M.b + 4, class: "axis" }));
    svg.appendChild(svgEl("text", { x: x(t), y: H - M.b + 16, "text-anchor": "middle" }, `${+t.toPrecision(4)}`));
  }
  svg.appendChild(svgEl("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: "axis" }));
  svg.appendChild(svgEl("text", { x: (M.l + W - M.r) / 2, y: H - 6, "text-anchor": "middle" }, `latency per call (ms${log ? ", log scale" : ""})`));
  svg.appendChild(svgEl("text", { x: 12, y: (M.t + H - M.b) / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${(M.t + H - M.b) / 2})` }, "share of runs"));
  series.forEach((s, i) => {
    const g = svgEl("g", { "data-series": s.label });
    hists[i].forEach((f, b) => {
      if (!f) return;
      const x0 = x(inv(lo + b * width)), x1 = x(inv(lo + (b + 1) * width));
      g.appendChild(svgEl("rect", { x: x0 + 0.5, width: Math.max(1, x1 - x0 - 1), y: y(f), height: y(0) - y(f),
        fill: s.color, "fill-opacity": 0.55 }));
    });
    const p50 = quantile([...s.samples].sort((a, b) => a - b), 0.5);
    g.appendChild(svgEl("line", { x1: x(p50), x2: x(p50), y1: M.t - 4, y2: H - M.b, stroke: s.color,
      "stroke-width": 2, "stroke-dasharray": "5 3" }));
    svg.appendChild(g);
    const lx = M.l + 8 + i * 250;
    svg.appendChild(svgEl("rect", { x: lx, y: 8, width: 10, height: 10, fill: s.color, "fill-opacity": 0.7 }));
    svg.appendChild(svgEl("text", { x: lx + 14, y: 17 },
      `${s.label}: p50 ${p50.toPrecision(3)} ms (n=${s.samples.length})`));
  });
  return svg;
}

// groups: [{label, values: [number|null per series]}], series: [{label, color}]; bars per group.
function groupedBars(groups, series, opts = {}) {
  const W = opts.width || 1000, H = opts.height || 240, M = { l: 56, r: 16, t: 28, b: 36 };
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "plot", id: opts.id || "" });
  const vmax = Math.max(0, ...groups.flatMap((g) => g.values.filter((v) => v != null))) * 1.1 || 1;
  const y = (v) => H - M.b - (v / vmax) * (H - M.t - M.b);
  const gw = (W - M.l - M.r) / Math.max(1, groups.length), bw = Math.min(48, (gw * 0.7) / series.length);
  for (const t of niceTicks(0, vmax, 4)) {
    svg.appendChild(svgEl("line", { x1: M.l, x2: W - M.r, y1: y(t), y2: y(t), class: "grid" }));
    svg.appendChild(svgEl("text", { x: M.l - 6, y: y(t) + 4, "text-anchor": "end" }, `${+t.toPrecision(3)}`));
  }
  groups.forEach((g, i) => {
    const cx = M.l + gw * (i + 0.5), x0 = cx - (bw * series.length) / 2;
    g.values.forEach((v, j) => {
      if (v == null) return;
      svg.appendChild(svgEl("rect", { x: x0 + j * bw + 1, width: bw - 2, y: y(v), height: y(0) - y(v), fill: series[j].color }));
    });
    svg.appendChild(svgEl("text", { x: cx, y: H - M.b + 16, "text-anchor": "middle" }, g.label));
  });
  svg.appendChild(svgEl("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: "axis" }));
  series.forEach((s, i) => {
    svg.appendChild(svgEl("rect", { x: M.l + 8 + i * 180, y: 8, width: 10, height: 10, fill: s.color }));
    svg.appendChild(svgEl("text", { x: M.l + 22 + i * 180, y: 17 }, s.label));
  });
  svg.appendChild(svgEl("text", { x: 12, y: (M.t + H - M.b) / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${(M.t + H - M.b) / 2})` }, opts.ylabel || ""));
  return svg;
}

window.kptPlot = { latencyHistogram, groupedBars };
