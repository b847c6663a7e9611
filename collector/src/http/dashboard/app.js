// The Server Logger dashboard: every number comes from the collector's own API (/metrics/*, /api/logs,
// /api/status, /api/tail) with the key the user gives once per tab. No library, no network beyond the collector.
"use strict";

const FILTERS = ["service", "protocol", "host", "producer", "src", "dst", "dst_port", "status_class"];
const RANGES = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800 };
const TOP_HEADS = { src_ip: "source", dst_ip: "destination", pair: "source → destination", dst_port: "port", service: "service" };
const COLORS = ["#2864c8", "#27a37b", "#d9822b", "#8a4fc8", "#c8373b", "#3ba3c8", "#7a8597", "#b8a12b"];
const KEY_STORE = "server-logger-key";
const $ = (id) => document.getElementById(id);

const state = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  view: readView(),
  cursor: null,
  lastStatus: null,
  timer: null,
  tail: null,
  tailPaused: false,
  refreshing: false,
  again: false,
};

// ---- the view, kept in the URL so that it can be linked -------------------------------------------------

function readView() {
  const q = new URLSearchParams(location.search);
  const v = { range: q.get("range") || "1h", from: q.get("from") || "", to: q.get("to") || "", top: q.get("top") || "src_ip", metric: q.get("metric") || "events" };
  if (!RANGES[v.range] && v.range !== "custom") v.range = "1h";
  for (const f of FILTERS) v[f] = q.get(f) || "";
  return v;
}

function writeView() {
  const q = new URLSearchParams();
  const v = state.view;
  if (v.range !== "1h") q.set("range", v.range);
  if (v.range === "custom") { if (v.from) q.set("from", v.from); if (v.to) q.set("to", v.to); }
  if (v.top !== "src_ip") q.set("top", v.top);
  if (v.metric !== "events") q.set("metric", v.metric);
  for (const f of FILTERS) if (v[f]) q.set(f, v[f]);
  const s = q.toString();
  history.replaceState(null, "", location.pathname + (s ? "?" + s : ""));
}

function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function showView() {
  const v = state.view;
  $("f-range").value = v.range;
  $("f-from").value = toLocalInput(v.from);
  $("f-to").value = toLocalInput(v.to);
  $("controls").classList.toggle("custom-range", v.range === "custom");
  for (const f of FILTERS) $("f-" + f).value = v[f];
  $("top-metric").value = v.metric;
  for (const b of document.querySelectorAll(".tabs [data-by]")) b.setAttribute("aria-selected", String(b.dataset.by === v.top));
  $("top-key-head").textContent = TOP_HEADS[v.top] || v.top;
  const chips = $("chips");
  chips.textContent = "";
  for (const f of FILTERS) {
    if (!v[f]) continue;
    const chip = el("span", { class: "chip" }, `${f.replace("_", " ")} = ${f === "status_class" ? v[f] + "xx" : v[f]}`);
    const x = el("button", { type: "button", "aria-label": `remove the ${f} filter` }, "×");
    x.addEventListener("click", () => { state.view[f] = ""; changed(); });
    chip.append(x);
    chips.append(chip);
  }
}

/// The window asked for: [from, to) as Date objects.
function windowOf(v) {
  if (v.range === "custom" && v.from) {
    return { from: new Date(v.from), to: v.to ? new Date(v.to) : new Date() };
  }
  const to = new Date();
  return { from: new Date(to.getTime() - (RANGES[v.range] || 3600) * 1000), to };
}

/// Query parameters every read takes: the window and the filters.
function params(extra, win) {
  const v = state.view;
  const w = win || windowOf(v);
  const q = new URLSearchParams({ from: w.from.toISOString(), to: w.to.toISOString() });
  for (const f of FILTERS) if (v[f]) q.set(f, v[f]);
  for (const [k, val] of Object.entries(extra || {})) if (val !== undefined && val !== "") q.set(k, val);
  return q;
}

function changed() {
  writeView();
  showView();
  refresh();
  restartTail();
}

// ---- talking to the collector -------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, detail) { super(detail || code || String(status)); this.status = status; this.code = code; }
}

async function api(path, query) {
  let r;
  try {
    r = await fetch(path + (query ? "?" + query.toString() : ""), { headers: { "X-API-KEY": state.key } });
  } catch (e) {
    throw new ApiError(0, "unreachable", "The collector cannot be reached (is it running?). Retrying at the next refresh.");
  }
  if (!r.ok) {
    let body = {};
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    throw new ApiError(r.status, body.code, body.detail);
  }
  return r.json();
}

function banner(text, kind) {
  const b = $("banner");
  if (!text) { b.hidden = true; b.textContent = ""; return; }
  b.hidden = false;
  b.className = kind || "";
  b.textContent = text;
}

function askKey(message, isError) {
  const m = $("key-message");
  m.textContent = message;
  m.classList.toggle("error", !!isError);
  const d = $("key-dialog");
  if (!d.open) d.showModal();
  $("key-input").focus();
}

/// Handles a failed read: true when the failure is the key's (the refresh stops).
function failed(e) {
  if (e.status === 401) {
    stopTail();
    askKey("That key was refused: it is wrong, revoked, or has expired. Enter another.", true);
    return true;
  }
  if (e.status === 403) {
    banner("This key cannot read events: it lacks the read scope (" + e.message + ").");
    return true;
  }
  if (e.status === 0) { banner(e.message); return true; }
  banner("The collector answered " + e.status + " (" + (e.code || "error") + "): " + e.message);
  return false;
}

// ---- formatting -------------------------------------------------------------------------------------

const nf = new Intl.NumberFormat();
function num(n) { return n === null || n === undefined ? "–" : nf.format(n); }
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0; let x = n;
  while (x >= 1000 && i < u.length - 1) { x /= 1000; i++; }
  return (i ? x.toFixed(1) : String(x)) + " " + u[i];
}
function pct(r) { return r === null || r === undefined || isNaN(r) ? "–" : (r * 100).toFixed(2) + "%"; }
function ms(v) { return v === null || v === undefined ? "–" : (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ms"; }
function timeLabel(t, span) {
  const d = new Date(t);
  return span > 2 * 86400 ? d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

// ---- charts (SVG, drawn here) -------------------------------------------------------------------------

/// An SVG filling `container`, less a line for the legend when there is one.
function frame(container, withLegend) {
  container.textContent = "";
  const w = Math.max(container.clientWidth, 200);
  const h = Math.max(container.clientHeight - (withLegend ? 20 : 0), 60);
  const s = svg("svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none" });
  s.style.height = h + "px";
  container.append(s);
  return { s, w, h, left: 52, right: 8, top: 8, bottom: 18 };
}

function axes(f, max, times, fmt) {
  const { s, w, h, left, right, top, bottom } = f;
  for (const frac of [0, 0.5, 1]) {
    const y = top + (h - top - bottom) * (1 - frac);
    s.append(svg("line", { x1: left, x2: w - right, y1: y, y2: y, class: "grid-line" }));
    const t = svg("text", { x: left - 4, y: y + 3, "text-anchor": "end", class: "axis" });
    t.textContent = fmt(max * frac);
    s.append(t);
  }
  if (times.length) {
    const span = (new Date(times[times.length - 1]) - new Date(times[0])) / 1000;
    for (const [i, anchor] of [[0, "start"], [Math.floor(times.length / 2), "middle"], [times.length - 1, "end"]]) {
      const x = left + (w - left - right) * (times.length === 1 ? 0.5 : i / (times.length - 1));
      const t = svg("text", { x, y: h - 4, "text-anchor": anchor, class: "axis" });
      t.textContent = timeLabel(times[i], span);
      s.append(t);
    }
  }
}

function legend(container, names) {
  const l = el("div", { class: "legend" });
  names.forEach((n, i) => { const s = el("span"); const sw = el("i"); sw.style.background = COLORS[i % COLORS.length]; s.append(sw, document.createTextNode(n)); l.append(s); });
  container.append(l);
}

/// Stacked bars: `points` with a time `t`, `stacks` the keys stacked; a click on a bar calls `onPick(t)`.
function barChart(container, points, stacks, fmt, onPick) {
  const f = frame(container, stacks.length > 1);
  const totals = points.map((p) => stacks.reduce((a, s) => a + (p[s.key] || 0), 0));
  const max = Math.max(1, ...totals);
  axes(f, max, points.map((p) => p.t), fmt);
  const { s, w, h, left, right, top, bottom } = f;
  const bw = (w - left - right) / Math.max(points.length, 1);
  points.forEach((p, i) => {
    let y = h - bottom;
    stacks.forEach((st, j) => {
      const v = p[st.key] || 0;
      const bh = (h - top - bottom) * v / max;
      y -= bh;
      const r = svg("rect", { x: left + i * bw + bw * 0.1, y, width: Math.max(bw * 0.8, 0.5), height: bh, fill: COLORS[j % COLORS.length], class: "bar" });
      const title = svg("title");
      title.textContent = `${new Date(p.t).toLocaleString()}: ${st.name} ${fmt(v)}`;
      r.append(title);
      if (onPick) r.addEventListener("click", () => onPick(p.t));
      s.append(r);
    });
  });
  if (stacks.length > 1) legend(container, stacks.map((st) => st.name));
}

/// Lines: each series `{name, points: [{t, v}]}`; gaps where `v` is null.
function lineChart(container, series, fmt) {
  const f = frame(container, true);
  const all = series.flatMap((se) => se.points.map((p) => p.v)).filter((v) => v !== null && v !== undefined);
  const max = Math.max(all.length ? Math.max(...all) : 0, 1e-9) * 1.05;
  const times = series.length ? series[0].points.map((p) => p.t) : [];
  axes(f, max, times, fmt);
  const { s, w, h, left, right, top, bottom } = f;
  series.forEach((se, j) => {
    let d = "";
    let pen = false;
    se.points.forEach((p, i) => {
      if (p.v === null || p.v === undefined) { pen = false; return; }
      const x = left + (w - left - right) * (se.points.length === 1 ? 0.5 : i / (se.points.length - 1));
      const y = top + (h - top - bottom) * (1 - p.v / max);
      d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      pen = true;
    });
    s.append(svg("path", { d, fill: "none", stroke: COLORS[j % COLORS.length], "stroke-width": 1.6 }));
  });
  legend(container, series.map((se) => se.name));
}

// ---- panels ------------------------------------------------------------------------------------------

function narrowTo(t, bucket) {
  const secs = { "1m": 60, "5m": 300, "1h": 3600, "1d": 86400 }[bucket] || 60;
  const from = new Date(t);
  state.view.range = "custom";
  state.view.from = from.toISOString();
  state.view.to = new Date(from.getTime() + secs * 1000).toISOString();
  changed();
}

function emptyText(status, what) {
  if (status && status.has_events === false) {
    const host = location.origin;
    return { html: true, text: `Nothing has been ingested yet. Send a first event:`, code: `curl -X POST ${host}/ingest -H 'X-API-KEY: <an ingest key>' -H 'Content-Type: application/json' -d '[{"src_ip":"10.0.0.1","dst_ip":"10.0.0.2","dst_port":443,"protocol":"tcp","service":"web","status":200,"latency_ms":12}]'` };
  }
  return { text: `No ${what} in this range with these filters.` };
}

function showEmpty(id, on, status, what) {
  const p = $(id);
  p.hidden = !on;
  if (!on) return;
  const e = emptyText(status, what);
  p.textContent = e.text;
  if (e.code) p.append(el("code", {}, e.code));
}

function drawVolume(v, status) {
  $("total-events").textContent = num(v.total.events);
  $("total-events").dataset.value = v.total.events;
  $("total-bytes-in").textContent = bytes(v.total.bytes_in);
  $("total-bytes-out").textContent = bytes(v.total.bytes_out);
  const empty = v.total.events === 0;
  showEmpty("volume-empty", empty, status, "events");
  barChart($("events-chart"), v.series, [{ key: "events", name: "events" }], (x) => num(Math.round(x)), (t) => narrowTo(t, v.bucket));
  barChart($("bytes-chart"), v.series, [{ key: "bytes_in", name: "bytes in" }, { key: "bytes_out", name: "bytes out" }], bytes, (t) => narrowTo(t, v.bucket));
}

function drawErrors(e, previous) {
  const o = e.overall;
  $("error-rate").textContent = pct(o.error_ratio);
  $("error-rate").dataset.value = o.error_ratio;
  $("client-error-rate").textContent = pct(o.total ? o.client_errors / o.total : 0);
  $("client-error-rate").dataset.value = o.total ? o.client_errors / o.total : 0;
  $("server-errors").textContent = num(o.errors);
  $("error-total").textContent = num(o.total) + " events";
  const trend = $("error-trend");
  trend.className = "";
  if (previous && previous.overall.total > 0 && o.total > 0) {
    const d = (o.error_ratio - previous.overall.error_ratio) * 100;
    trend.textContent = (d >= 0 ? "▲ " : "▼ ") + Math.abs(d).toFixed(2) + " points vs the window before";
    trend.className = d > 0 ? "up" : "down";
  } else {
    trend.textContent = "";
  }
  lineChart($("errors-chart"), [
    { name: "5xx share", points: (e.series || []).map((p) => ({ t: p.t, v: p.total ? p.error_ratio : null })) },
    { name: "4xx share", points: (e.series || []).map((p) => ({ t: p.t, v: p.total ? p.client_errors / p.total : null })) },
  ], pct);
}

function drawLatency(l, status) {
  let series;
  if (l.groups) {
    series = l.groups.slice(0, COLORS.length).map((g) => ({ name: (g.service || "(none)") + " p99", points: g.series.map((p) => ({ t: p.t, v: p.p99 })) }));
  } else {
    const pts = l.series || [];
    series = ["p50", "p90", "p99"].map((k) => ({ name: k, points: pts.map((p) => ({ t: p.t, v: p[k] })) }));
  }
  const any = series.some((se) => se.points.some((p) => p.v !== null && p.v !== undefined));
  showEmpty("latency-empty", !any, status, "events with a latency");
  lineChart($("latency-chart"), series, ms);
}

function talkerName(by, t) {
  if (by === "pair") return `${t.src_ip || "?"} → ${t.dst_ip || "?"}`;
  const v = t[by];
  return v === null || v === undefined ? "(none)" : String(v);
}

function pickTalker(by, t) {
  const v = state.view;
  if (by === "src_ip") v.src = t.src_ip || "";
  else if (by === "dst_ip") v.dst = t.dst_ip || "";
  else if (by === "pair") { v.src = t.src_ip || ""; v.dst = t.dst_ip || ""; }
  else if (by === "dst_port") v.dst_port = t.dst_port || "";
  else if (by === "service") v.service = t.service || "";
  changed();
}

function drawTop(top, status) {
  const body = $("top-table").tBodies[0];
  body.textContent = "";
  const by = state.view.top;
  top.top.forEach((t, i) => {
    const tr = el("tr", { tabindex: "0", "data-key": talkerName(by, t) });
    const share = el("td", { class: "share" });
    const bar = el("i");
    bar.style.width = (t.share * 100).toFixed(1) + "%";
    share.append(bar, el("span", {}, pct(t.share)));
    tr.append(el("td", { class: "num" }, String(i + 1)), el("td", {}, talkerName(by, t)), el("td", { class: "num" }, num(t.events)),
      el("td", { class: "num" }, bytes(t.bytes)), el("td", { class: "num" }, num(t.errors)), share);
    const go = () => pickTalker(by, t);
    tr.addEventListener("click", go);
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
    body.append(tr);
  });
  showEmpty("top-empty", top.top.length === 0, status, "talkers");
}

function logRow(e) {
  const tr = el("tr", { tabindex: "0" });
  const hostPort = (ip, port) => (ip || "–") + (port !== null && port !== undefined ? ":" + port : "");
  tr.append(el("td", {}, new Date(e.timestamp).toLocaleString()), el("td", {}, hostPort(e.src_ip, e.src_port)), el("td", {}, hostPort(e.dst_ip, e.dst_port)),
    el("td", {}, e.protocol || ""), el("td", {}, e.service || ""), el("td", { class: "num" }, e.status ?? ""), el("td", { class: "num" }, ms(e.latency_ms)),
    el("td", { class: "msg" }, e.message || ""));
  const toggle = () => {
    const next = tr.nextSibling;
    if (next && next.classList && next.classList.contains("detail")) { next.remove(); return; }
    const d = el("tr", { class: "detail" });
    const td = el("td", { colspan: "8" });
    td.append(el("pre", {}, JSON.stringify(e, null, 2)));
    d.append(td);
    tr.after(d);
  };
  tr.addEventListener("click", toggle);
  tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") toggle(); });
  return tr;
}

async function loadLogs(reset, win, status) {
  const body = $("logs-table").tBodies[0];
  if (reset) { body.textContent = ""; state.cursor = null; }
  const page = await api("/api/logs", params({ limit: 50, cursor: reset ? "" : state.cursor }, win));
  for (const e of page.events) body.append(logRow(e));
  state.cursor = page.next_cursor;
  $("more").hidden = !state.cursor;
  showEmpty("logs-empty", reset && page.events.length === 0, status, "events");
}

function drawStatus(st) {
  const prev = state.lastStatus;
  if (st.ingest) {
    if (prev && prev.ingest) {
      const secs = (new Date(st.now) - new Date(prev.now)) / 1000;
      const rate = secs > 0 ? (st.ingest.events_accepted - prev.ingest.events_accepted) / secs : 0;
      $("ingest-rate").textContent = num(Math.round(rate)) + " events/s";
    } else {
      $("ingest-rate").textContent = "measured at the next refresh";
    }
    $("ingest-accepted").textContent = num(st.ingest.events_accepted);
    $("ingest-rejected").textContent = num(st.ingest.events_rejected) + " (dead letters: " + num(st.ingest.dead_letters) + ")";
    $("queue-depth").textContent = num(st.queue.depth) + " of " + num(st.queue.capacity) + " events";
    $("spool-state").textContent = st.spool ? bytes(st.spool.bytes) + (st.spool.backlog ? ", backlog (database behind)" : ", no backlog") : "off (memory durability)";
  } else {
    for (const id of ["ingest-rate", "ingest-accepted", "ingest-rejected", "queue-depth", "spool-state"]) $(id).textContent = "not shown to a tenant's key";
  }
  $("tails-open").textContent = st.tails.open + " of " + st.tails.max;
  state.lastStatus = st;
}

async function refresh() {
  if (!state.key) { askKey("Enter a key with the read scope. It is kept for this tab only.", false); return; }
  // A change while a refresh runs is shown by another one right after it.
  if (state.refreshing) { state.again = true; return; }
  state.refreshing = true;
  const v = state.view;
  const win = windowOf(v);
  const span = win.to - win.from;
  const before = { from: new Date(win.from.getTime() - span), to: win.from };
  try {
    const status = await api("/api/status");
    drawStatus(status);
    const byService = $("latency-by-service").checked;
    const [vol, err, prevErr, lat, top] = await Promise.all([
      api("/metrics/volume", params({}, win)),
      api("/metrics/error-rate", params({}, win)),
      api("/metrics/error-rate", params({}, before)).catch(() => null),
      api("/metrics/latency", params({ group_by: byService ? "service" : "" }, win)),
      api("/metrics/top-talkers", params({ by: v.top, metric: v.metric, limit: 10 }, win)),
    ]);
    drawVolume(vol, status);
    drawErrors(err, prevErr);
    drawLatency(lat, status);
    drawTop(top, status);
    await loadLogs(true, win, status);
    banner("");
    $("asof").textContent = "as of " + new Date().toLocaleTimeString();
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    failed(e);
  } finally {
    state.refreshing = false;
    if (state.again) { state.again = false; refresh(); }
  }
}

// ---- live tail ---------------------------------------------------------------------------------------

function stopTail() {
  if (state.tail) { state.tail.abort(); state.tail = null; }
}

function restartTail() {
  stopTail();
  if (!state.tailPaused && state.key) startTail();
}

function tailLine(e) {
  const hp = (ip, port) => (ip || "–") + (port !== null && port !== undefined ? ":" + port : "");
  const parts = [new Date(e.ts_us / 1000).toLocaleTimeString(), e.producer, hp(e.src_ip, e.src_port) + " → " + hp(e.dst_ip, e.dst_port),
    e.protocol || "", e.service || "", e.status ?? "", e.latency_ms !== null && e.latency_ms !== undefined ? ms(e.latency_ms) : "", e.message || ""];
  return parts.filter((p) => p !== "").join("  ");
}

async function startTail() {
  const ctl = new AbortController();
  state.tail = ctl;
  const q = params({});
  q.delete("from"); q.delete("to");
  const list = $("tail-list");
  let missed = 0;
  $("tail-missed").textContent = "";
  $("tail-state").textContent = "connecting…";
  let r;
  try {
    r = await fetch("/api/tail?" + q.toString(), { headers: { "X-API-KEY": state.key }, signal: ctl.signal });
  } catch (e) {
    if (ctl.signal.aborted) return;
    $("tail-state").textContent = "the collector cannot be reached; retrying in 5 s";
    setTimeout(() => { if (state.tail === ctl) restartTail(); }, 5000);
    return;
  }
  if (!r.ok) {
    let body = {};
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    $("tail-state").textContent = r.status === 429 ? "not following: " + (body.detail || "too many live tails are open") : "not following (" + r.status + ")";
    if (r.status === 401) failed(new ApiError(401, body.code, body.detail));
    state.tail = null;
    return;
  }
  $("tail-state").textContent = "following committed events";
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const msg = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let event = "message"; let data = "";
        for (const line of msg.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (event === "events") {
          for (const e of JSON.parse(data)) {
            const li = el("li", { class: "new" }, tailLine(e));
            list.prepend(li);
            setTimeout(() => li.classList.remove("new"), 1500);
          }
          while (list.children.length > 200) list.lastChild.remove();
        } else if (event === "missed") {
          missed += JSON.parse(data).events;
          $("tail-missed").textContent = num(missed) + " events were skipped: this browser fell behind the ingest rate";
        }
      }
    }
    if (state.tail === ctl) { $("tail-state").textContent = "the stream ended; reconnecting in 5 s"; setTimeout(() => { if (state.tail === ctl) restartTail(); }, 5000); }
  } catch (e) {
    if (!ctl.signal.aborted) { $("tail-state").textContent = "the stream broke; reconnecting in 5 s"; setTimeout(() => { if (state.tail === ctl) restartTail(); }, 5000); }
  }
}

// ---- wiring ------------------------------------------------------------------------------------------

function readControls() {
  const v = state.view;
  v.range = $("f-range").value;
  if (v.range === "custom") {
    const from = $("f-from").value; const to = $("f-to").value;
    v.from = from ? new Date(from).toISOString() : "";
    v.to = to ? new Date(to).toISOString() : "";
    if (!v.from) { const w = windowOf({ range: "1h" }); v.from = w.from.toISOString(); v.to = w.to.toISOString(); }
  } else { v.from = ""; v.to = ""; }
  for (const f of FILTERS) v[f] = $("f-" + f).value.trim();
}

function schedule() {
  clearInterval(state.timer);
  state.timer = null;
  if ($("auto").checked) state.timer = setInterval(refresh, 10000);
}

function start() {
  // A key in the fragment (#key=...) is taken and removed from the address bar.
  const m = location.hash.match(/key=([^&]+)/);
  if (m) {
    state.key = decodeURIComponent(m[1]);
    sessionStorage.setItem(KEY_STORE, state.key);
    history.replaceState(null, "", location.pathname + location.search);
  }
  showView();
  $("controls").addEventListener("submit", (e) => { e.preventDefault(); readControls(); changed(); });
  $("f-range").addEventListener("change", () => { $("controls").classList.toggle("custom-range", $("f-range").value === "custom"); if ($("f-range").value !== "custom") { readControls(); changed(); } });
  $("clear").addEventListener("click", () => { for (const f of FILTERS) state.view[f] = ""; changed(); });
  $("refresh").addEventListener("click", refresh);
  $("auto").addEventListener("change", schedule);
  $("latency-by-service").addEventListener("change", refresh);
  $("top-metric").addEventListener("change", () => { state.view.metric = $("top-metric").value; changed(); });
  for (const b of document.querySelectorAll(".tabs [data-by]")) b.addEventListener("click", () => { state.view.top = b.dataset.by; writeView(); showView(); refresh(); });
  $("more").addEventListener("click", () => loadLogs(false, windowOf(state.view), state.lastStatus).catch((e) => failed(e)));
  $("change-key").addEventListener("click", () => askKey("Enter a key with the read scope. It is kept for this tab only.", false));
  $("tail-toggle").addEventListener("click", () => {
    state.tailPaused = !state.tailPaused;
    $("tail-toggle").textContent = state.tailPaused ? "Resume" : "Pause";
    if (state.tailPaused) { stopTail(); $("tail-state").textContent = "paused"; } else restartTail();
  });
  $("key-form").addEventListener("submit", () => {
    state.key = $("key-input").value.trim();
    sessionStorage.setItem(KEY_STORE, state.key);
    $("key-input").value = "";
    refresh();
    restartTail();
  });
  let resized = null;
  window.addEventListener("resize", () => { clearTimeout(resized); resized = setTimeout(refresh, 300); });
  schedule();
  refresh();
  restartTail();
}

start();
