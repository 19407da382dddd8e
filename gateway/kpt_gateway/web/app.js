// The gateway's web page: plain JS over the HTTP API (/v1/...), no build step.
// Job progress arrives as server-sent events read with fetch (EventSource cannot send a bearer token).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const COLORS = { base: "#8a8f98", opt: "#1f77b4" };
const state = { token: localStorage.getItem("kpt-token") || "", jobs: new Map(), watchers: new Map(), waiting: new Set(),
  targets: [] };
// A browser opens at most 6 HTTP/1.1 connections to one host and each event stream holds one for the
// job's whole run: past this many, jobs wait their turn, so API calls always find a connection.
const MAX_WATCHES = 4;

// -- small helpers ----------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== undefined && c !== null) el.append(c instanceof Node ? c : String(c));
  return el;
}
const short = (v, prefix) => (v || "").replace(prefix, "").toLowerCase();
const stateOf = (job) => short(job.state || "JOB_STATE_UNSPECIFIED", "JOB_STATE_");
const targetOf = (t) => short(t, "TARGET_");
const levelOf = (l) => (l || "").replace("LEVEL_", "");
const ms = (v) => (v ? Number(v).toFixed(3) : "-");
const sci = (v) => (v !== undefined ? Number(v).toExponential(2) : "-");
function bytes(v) {
  const n = Number(v || 0);
  if (!n) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log2(n) / 10));
  return `${(n / 2 ** (10 * i)).toFixed(i ? 1 : 0)} ${units[i]}`;
}
const modelOf = (job) => { const m = (job.spec || {}).model || {}; return m.name || (m.sha256 || "").slice(0, 12); };
const table = (heads, rows, attrs) => h("table", attrs || {},
  h("thead", {}, h("tr", {}, heads.map((c) => h("th", {}, c)))),
  h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c)))))));

class ApiError extends Error {
  constructor(code, message, status) { super(`${code}: ${message}`); this.code = code; this.status = status; }
}

async function call(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
  const r = await fetch(path, { ...opts, headers });
  if (!r.ok) {
    let e = null;
    try { e = (await r.json()).error; } catch (_) { /* not JSON */ }
    throw new ApiError(e ? e.code : `HTTP_${r.status}`, e ? e.message : r.statusText, r.status);
  }
  return r;
}
const json = async (path, opts) => (await call(path, opts)).json();

function showError(err) {
  const box = $("#error");
  box.textContent = err.code ? `${err.code}: ${err.message}` : String(err.message || err);
  box.hidden = false;
}
function clearError() { $("#error").hidden = true; }
const guard = (fn) => async (...args) => { try { await fn(...args); } catch (e) { showError(e); } };

// -- server-sent events -------------------------------------------------------------------------
function parseFrame(raw) {
  let event = "message", data = "";
  for (const line of raw.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":"), field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data += value;
  }
  return data ? { event, data: JSON.parse(data) } : null;
}

async function watch(id, delay = 1000) {
  if (state.watchers.has(id)) return;
  if (state.watchers.size >= MAX_WATCHES) { state.waiting.add(id); return; }
  state.waiting.delete(id);
  const ctl = new AbortController();
  state.watchers.set(id, ctl);
  let again = true, got = false;
  try {
    const r = await call(`/v1/jobs/${encodeURIComponent(id)}/events`, { signal: ctl.signal });
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const frame = parseFrame(buf.slice(0, i));
        buf = buf.slice(i + 2);
        if (frame) { got = true; onFrame(id, frame); }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") again = false;
    else {
      showError(e);
      if (e instanceof ApiError && e.status < 500) again = false;  // refused (token, unknown job): not retried
    }
  } finally {
    if (state.watchers.get(id) === ctl) state.watchers.delete(id);
  }
  // The stream ended before the job did (a dropped connection, a gateway restart): re-open it, backing off.
  const live = (j) => state.jobs.has(j) && !TERMINAL.has(stateOf(state.jobs.get(j)));
  if (again && !ctl.signal.aborted && live(id)) {
    const next = got ? 1000 : Math.min(2 * delay, 30000);
    setTimeout(() => { if (live(id)) watch(id, next); }, delay);
  }
  for (const w of state.waiting) {
    state.waiting.delete(w);
    if (live(w)) { watch(w); break; }
  }
}

function watchFirst(id) {  // the job on screen gets a stream even when all are taken: another one waits
  if (!state.watchers.has(id) && state.watchers.size >= MAX_WATCHES) {
    const [other, ctl] = state.watchers.entries().next().value;
    state.watchers.delete(other);
    ctl.abort();
    state.waiting.add(other);
  }
  watch(id);
}

function onFrame(id, { event, data }) {
  const job = state.jobs.get(id) || { id };
  if (event === "event") {
    job._progress = data.progress || 0;
    job._message = data.message ? `${data.phase}: ${data.message}` : data.phase;
    if (data.state) job.state = data.state;
    state.jobs.set(id, job);
  } else if (event === "job") {
    state.jobs.set(id, Object.assign(data, { _progress: 1, _message: job._message }));
  } else if (event === "error") {
    showError(data);
  }
  renderJobs();
  rerender(id);
}

function rerender(id) {  // the open view, if it shows this job, from what is known (no fetch)
  const [, view, vid] = (location.hash || "#/").split("/");
  if (view === "job" && vid === id && state.jobs.get(id).spec) renderJob(state.jobs.get(id));
  else if (view === "group" && state.jobs.get(id).group_id === vid) {
    renderGroup(vid, [...state.jobs.values()].filter((j) => j.group_id === vid));
  }
}

// -- home: targets, submit, jobs ---------------------------------------------------------------------
async function refreshTargets() {
  state.targets = (await json("/v1/targets")).targets || [];
  const rows = state.targets.map((t) => [
    targetOf(t.target), t.service_id, `${t.device_name || "-"} (${t.device_kind || "?"}${t.device_count > 1 ? ` x${t.device_count}` : ""})`,
    bytes(t.memory_bytes), (t.precisions || []).map((p) => short(p, "PRECISION_")).join(" "),
    (t.formats || []).map((f) => short(f, "ARTIFACT_FORMAT_")).join(" "),
    Object.entries(t.toolchain || {}).map(([k, v]) => `${k} ${v}`).join(", "),
    t.available ? h("span", { class: "state state-succeeded" }, "ready") : h("span", { class: "state state-failed" }, t.unavailable_reason || "unavailable"),
  ]);
  $("#targets tbody").replaceChildren(...(rows.length ? rows.map((r) => h("tr", { "data-target": r[0] }, r.map((c) => h("td", {}, c))))
    : [h("tr", {}, h("td", { colspan: 8, class: "muted" }, "no service online: start one with `kpt up`"))]));
  const boxes = $("#target-boxes"), checked = new Set([...boxes.querySelectorAll("input:checked")].map((b) => b.value));
  const names = [...new Set(state.targets.filter((t) => t.available).map((t) => t.target))];
  if (!checked.size && names.length) checked.add(names[0]);
  boxes.replaceChildren(...names.map((n) => h("label", {}, h("input", { type: "checkbox", name: "target", value: n, checked: checked.has(n) }), ` ${targetOf(n)}`)));
  if (!names.length) boxes.append(h("span", { class: "muted" }, "no target online"));
}

async function refreshZoo() {
  const models = (await json("/v1/zoo")).models;
  $("#zoo").replaceChildren(...models.map((m) => h("option", { value: m.name, title: m.description }, `${m.name} — ${m.description}`)));
}

async function refreshJobs() {
  const jobs = (await json("/v1/jobs?page_size=50")).jobs || [];
  for (const j of jobs) {
    const old = state.jobs.get(j.id) || {};
    state.jobs.set(j.id, Object.assign(j, { _progress: TERMINAL.has(stateOf(j)) ? 1 : old._progress, _message: old._message }));
    if (!TERMINAL.has(stateOf(j))) watch(j.id);
  }
  renderJobs();
}

function progress(job) {
  const p = Math.round(100 * (job._progress || 0));
  return h("span", { class: "progress" }, h("span", { class: "bar" }, h("span", { style: `width:${p}%` })),
    h("span", { class: "msg" }, job._message || ""));
}

function renderJobs() {
  const jobs = [...state.jobs.values()].sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
  const groupSize = {};
  for (const j of jobs) groupSize[j.group_id] = (groupSize[j.group_id] || 0) + 1;
  $("#jobs tbody").replaceChildren(...jobs.map((j) => h("tr", { "data-job-id": j.id, "data-state": stateOf(j) },
    h("td", {}, h("a", { href: `#/job/${j.id}`, class: "job-link" }, j.id)),
    h("td", {}, modelOf(j)), h("td", {}, targetOf(j.target)), h("td", {}, levelOf((j.spec || {}).level)),
    h("td", {}, h("span", { class: `state state-${stateOf(j)}` }, stateOf(j))),
    h("td", {}, progress(j)),
    h("td", {}, groupSize[j.group_id] > 1 ? h("a", { href: `#/group/${j.group_id}` }, `side by side (${groupSize[j.group_id]})`) : ""))));
}

async function submit(ev) {
  ev.preventDefault();
  clearError();
  const status = $("#submit-status");
  let model;
  if (document.querySelector("input[name=source]:checked").value === "file") {
    const file = $("#file").files[0];
    if (!file) throw new ApiError("INVALID_ARGUMENT", "choose a model file (.pt2 or .onnx) to upload");
    const form = new FormData();
    form.append("file", file, file.name);
    status.textContent = `uploading ${file.name}…`;
    const up = await json(`/v1/models?size_bytes=${file.size}`, { method: "POST", body: form });
    model = { sha256: up.model.sha256, name: up.model.name };
  } else {
    model = { format: "MODEL_FORMAT_ZOO", name: $("#zoo").value };
  }
  const spec = { kind: $("#kind").value, model, level: `LEVEL_${$("#level").value}` };
  const benchmark = {};
  if ($("#budget").value) benchmark.time_budget_s = Number($("#budget").value);
  if ($("#min-iters").value) benchmark.min_iters = Number($("#min-iters").value);
  if (Object.keys(benchmark).length) spec.benchmark = benchmark;
  const targets = [...document.querySelectorAll("#target-boxes input:checked")].map((b) => b.value);
  const res = await json("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ spec, targets }) });
  for (const j of res.jobs) {
    state.jobs.set(j.id, j);
    if (!TERMINAL.has(stateOf(j))) watch(j.id);
  }
  status.textContent = `submitted ${res.jobs.length} job(s), group ${res.group_id}`;
  renderJobs();
}

// -- result view -----------------------------------------------------------------------------------
function variantsOf(job) {
  const r = job.result || {}, by = Object.fromEntries((r.variants || []).map((v) => [v.variant, v]));
  const base = by.kpt_O0 || by.eager_fp32;
  const opt = (r.achieved_level && by[`kpt_${levelOf(r.achieved_level)}`]) || null;
  return { by, base, opt: opt !== base ? opt : null };
}

async function download(job, art) {
  const r = await call(`/v1/jobs/${encodeURIComponent(job.id)}/artifacts/${art.sha256}`);
  const url = URL.createObjectURL(await r.blob());
  const a = h("a", { href: url, download: art.name || art.sha256 });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function renderJob(job) {
  const r = job.result || {}, st = stateOf(job), { base, opt } = variantsOf(job);
  const summary = [
    ["state", h("span", { class: `state state-${st}`, id: "job-state" }, st), job.cache_hit ? ` (cache hit: result of ${job.cached_from})` : ""],
    ["model", modelOf(job)], ["kind / target", `${short(job.spec.kind, "JOB_KIND_")} on ${targetOf(job.target)}`],
    ["device", r.device ? `${r.device} (backend ${r.backend})` : "-"],
    ["level", r.requested_level ? `requested ${levelOf(r.requested_level)}, delivered ${levelOf(r.achieved_level)}${r.fallback_reason ? ` (${r.fallback_reason})` : ""}` : levelOf(job.spec.level)],
    ["speedup", r.speedup ? `${Number(r.speedup).toFixed(2)}x (baseline p50 / optimized p50)` : "-"],
    ["service", job.service_id || "-"],
  ];
  if (job.error && job.error.code) summary.push(["error", h("span", { class: "state state-failed" }, `${job.error.code}: ${job.error.message}`)]);
  const parts = [h("h2", {}, `Job ${job.id} `, h("a", { href: "#/", class: "muted" }, "← all jobs"),
    job.group_id ? [" ", h("a", { href: `#/group/${job.group_id}`, class: "muted" }, "group")] : ""),
  h("dl", { class: "summary" }, summary.flatMap(([k, ...v]) => [h("dt", {}, k), h("dd", {}, ...v)]))];
  if (!TERMINAL.has(st)) {
    parts.push(progress(job), " ", h("button", { onclick: guard(async () => { await json(`/v1/jobs/${job.id}/cancel`, { method: "POST" }); }) }, "cancel"));
  }
  const sections = [h("section", {}, ...parts)];
  if (base) {
    const series = [{ label: `baseline ${base.variant}`, color: COLORS.base, samples: (base.latency || {}).samples_ms || [] }];
    if (opt) series.push({ label: `optimized ${opt.variant}`, color: COLORS.opt, samples: (opt.latency || {}).samples_ms || [] });
    sections.push(h("section", {}, h("h3", {}, "Latency distribution"), kptPlot.latencyHistogram(series, { id: "latency-plot" })));
  }
  if ((r.variants || []).length) {
    sections.push(h("section", {}, h("h3", {}, "Variants"), table(
      ["variant", "p50 ms", "p90 ms", "p99 ms", "iterations", "throughput/s", "peak memory", "compile s", "max abs err", "note"],
      r.variants.map((v) => { const l = v.latency || {}, a = v.accuracy || {};
        return [v.variant, ms(l.p50_ms), ms(l.p90_ms), ms(l.p99_ms), l.iterations || "-",
          v.throughput_per_s ? Number(v.throughput_per_s).toFixed(1) : "-", bytes(v.peak_memory_bytes),
          v.compile_s ? Number(v.compile_s).toFixed(1) : "-", a.samples ? sci(a.max_abs_err || 0) : "-", v.error || ""]; }),
      { id: "variants" })));
  }
  if ((r.passes || []).length) {
    sections.push(h("section", {}, h("h3", {}, "Passes"), table(["level", "pass", "applied", "seconds", "what / why"],
      r.passes.map((p) => [levelOf(p.level), p.name, p.applied ? "yes" : "skipped", Number(p.seconds || 0).toFixed(2), p.reason || ""]),
      { id: "passes" })));
  }
  if (r.accuracy) {
    const a = r.accuracy, t = a.tolerances || {};
    sections.push(h("section", {}, h("h3", {}, "Accuracy against eager fp32"), table(
      ["max abs err", "rel L2", "cosine", "SQNR dB", "samples", "verdict", "tolerances"],
      [[sci(a.max_abs_err || 0), sci(a.rel_l2 || 0), Number(a.cosine || 0).toFixed(6), a.sqnr_db ? Number(a.sqnr_db).toFixed(1) : "-",
        a.samples || 0, h("span", { class: `state ${a.passed ? "state-succeeded" : "state-failed"}` }, a.passed ? "pass" : "fail"),
        Object.entries(t).map(([k, v]) => `${k} ${v}`).join(", ") || "defaults"]], { id: "accuracy" }),
      (r.attempts || []).length ? table(["level tried", "passed", "note"], r.attempts.map((x) => [levelOf(x.level), x.passed ? "yes" : "no", x.note || ""])) : ""));
  }
  if ((r.artifacts || []).length) {
    sections.push(h("section", {}, h("h3", {}, "Artifacts"), table(["name", "format", "size", "sha256", ""],
      r.artifacts.map((art) => [art.name, short(art.format, "ARTIFACT_FORMAT_"), bytes(art.size_bytes), h("code", {}, art.sha256.slice(0, 16) + "…"),
        h("button", { class: "download", "data-sha256": art.sha256, onclick: guard(() => download(job, art)) }, "download")]),
      { id: "artifacts" })));
  }
  $("#job-view").replaceChildren(...sections);
}

// -- side by side ----------------------------------------------------------------------------------
function renderGroup(gid, jobs) {
  jobs.sort((a, b) => (a.target || "").localeCompare(b.target || ""));
  const cols = jobs.map((j) => ({ j, r: j.result || {}, ...variantsOf(j) }));
  const row = (label, f) => [label, ...cols.map(f)];
  const rows = [
    row("state", (c) => h("span", { class: `state state-${stateOf(c.j)}` }, stateOf(c.j))),
    row("progress", (c) => (TERMINAL.has(stateOf(c.j)) ? "" : progress(c.j))),
    row("device", (c) => c.r.device || "-"),
    row("level delivered", (c) => levelOf(c.r.achieved_level) || "-"),
    row("baseline p50 ms", (c) => ms(c.base?.latency?.p50_ms)),
    row("optimized p50 ms", (c) => ms(c.opt?.latency?.p50_ms)),
    row("optimized p99 ms", (c) => ms(c.opt?.latency?.p99_ms)),
    row("speedup", (c) => (c.r.speedup ? `${Number(c.r.speedup).toFixed(2)}x` : "-")),
    row("max abs err", (c) => (c.r.accuracy && c.r.accuracy.samples ? sci(c.r.accuracy.max_abs_err || 0) : (c.j.error || {}).code || "-")),
    row("result", (c) => h("a", { href: `#/job/${c.j.id}` }, c.j.id)),
  ];
  const chart = kptPlot.groupedBars(cols.map((c) => ({ label: targetOf(c.j.target), values: [
    c.base?.latency ? Number(c.base.latency.p50_ms) : null, c.opt?.latency ? Number(c.opt.latency.p50_ms) : null] })),
  [{ label: "baseline p50", color: COLORS.base }, { label: "optimized p50", color: COLORS.opt }], { id: "group-plot", ylabel: "p50 latency (ms)" });
  $("#group-view").replaceChildren(h("section", {}, h("h2", {}, `Group ${gid} `, h("a", { href: "#/", class: "muted" }, "← all jobs")),
    table(["", ...cols.map((c) => targetOf(c.j.target))], rows, { id: "side-by-side" }), h("h3", {}, "p50 latency per target"), chart));
}

// -- routing ---------------------------------------------------------------------------------------
async function route() {
  const [, view, id] = (location.hash || "#/").split("/");
  $("#home").hidden = !!view;
  $("#job-view").hidden = view !== "job";
  $("#group-view").hidden = view !== "group";
  if (view === "job") {
    let job = state.jobs.get(id);
    if (!job || !job.spec) {
      job = Object.assign((await json(`/v1/jobs/${encodeURIComponent(id)}`)).job, state.jobs.get(id) ? { _message: state.jobs.get(id)._message } : {});
      state.jobs.set(id, job);
    }
    if (!TERMINAL.has(stateOf(job))) watchFirst(id);
    renderJob(job);
  } else if (view === "group") {
    const jobs = (await json(`/v1/jobs?group_id=${encodeURIComponent(id)}`)).jobs || [];
    for (const j of jobs) {
      const old = state.jobs.get(j.id) || {};
      state.jobs.set(j.id, Object.assign(j, { _progress: old._progress, _message: old._message }));
      if (!TERMINAL.has(stateOf(j))) watch(j.id);
    }
    renderGroup(id, jobs.map((j) => state.jobs.get(j.id)));
  }
}

async function refreshAll() {
  clearError();
  await Promise.all([refreshTargets(), refreshZoo(), refreshJobs()]);
  await route();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#token").value = state.token;
  $("#token-form").addEventListener("submit", guard(async (ev) => {
    ev.preventDefault();
    state.token = $("#token").value.trim();
    localStorage.setItem("kpt-token", state.token);
    for (const ctl of state.watchers.values()) ctl.abort();
    state.waiting.clear();
    state.jobs.clear();
    await refreshAll();
  }));
  $("#submit-form").addEventListener("submit", guard(submit));
  window.addEventListener("hashchange", guard(() => route()));
  guard(refreshAll)();
  setInterval(guard(async () => { if (!$("#home").hidden) await Promise.all([refreshTargets(), refreshJobs()]); }), 5000);
});
