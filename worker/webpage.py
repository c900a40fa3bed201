"""The web page of ``fetalhc serve``: try one scan, see the overlay and growth facts, list the latest results.

One self-contained HTML document (inline CSS and JavaScript, no external resources: hospital
networks often have no internet). Its script talks to the JSON API with ``fetch``, sending the
API token typed into the page (kept in ``sessionStorage``), and builds every piece of text with
``textContent``, never ``innerHTML``, so values from the database cannot inject markup.
``PAGE_HEADERS`` carries a Content-Security-Policy that allows exactly this script and style
(by hash), images from ``data:`` URLs and requests to the same origin.
"""

from __future__ import annotations

import base64
import hashlib

_CSS = """
:root { --ink:#1d2733; --muted:#5b6b7c; --line:#dde3ea; --bg:#f4f6f9; --card:#fff; --accent:#0b6e8a;
        --ok:#17804a; --warn:#a86200; --bad:#b3261e; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
       color:var(--ink); background:var(--bg); }
header { display:flex; align-items:center; justify-content:space-between; gap:16px; padding:14px 28px;
         background:var(--card); border-bottom:1px solid var(--line); }
header h1 { margin:0; font-size:20px; letter-spacing:.2px; }
header h1 span { color:var(--muted); font-weight:400; font-size:15px; margin-left:10px; }
main { max-width:1180px; margin:22px auto; padding:0 20px; display:grid; gap:20px;
       grid-template-columns: minmax(300px, 360px) 1fr; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:18px 20px; }
.card h2 { margin:0 0 12px; font-size:16px; }
.wide { grid-column: 1 / -1; }
label { display:block; font-size:13px; font-weight:600; margin:12px 0 4px; }
.hint { font-size:12px; color:var(--muted); margin-top:3px; }
input[type=text], input[type=password], input[type=file] { width:100%; padding:7px 9px; font:inherit;
       border:1px solid var(--line); border-radius:6px; background:#fff; }
input[type=file] { padding:6px; }
.check { display:flex; align-items:center; gap:8px; font-weight:400; font-size:14px; }
button { font:inherit; font-weight:600; border-radius:6px; padding:8px 16px; cursor:pointer;
         border:1px solid var(--accent); background:var(--accent); color:#fff; }
button.secondary { background:#fff; color:var(--accent); }
button:disabled { opacity:.55; cursor:progress; }
.actions { margin-top:16px; display:flex; gap:10px; align-items:center; }
.pill { display:inline-block; border-radius:999px; padding:2px 10px; font-size:12px; font-weight:600;
        border:1px solid currentColor; white-space:nowrap; }
.ok { color:var(--ok); } .warn { color:var(--warn); } .bad { color:var(--bad); } .muted { color:var(--muted); }
.hidden { display:none; }
.result { display:grid; grid-template-columns: minmax(0, 3fr) minmax(240px, 2fr); gap:18px; align-items:start; }
.result img { width:100%; border-radius:6px; border:1px solid var(--line); background:#000; }
.metrics { display:grid; grid-template-columns:repeat(3, 1fr); gap:8px; margin-bottom:12px; }
.metric { border:1px solid var(--line); border-radius:8px; padding:8px 10px; }
.metric b { display:block; font-size:22px; }
.metric small { color:var(--muted); font-size:12px; }
dl { display:grid; grid-template-columns: 110px 1fr; gap:6px 10px; margin:0; font-size:14px; }
dt { color:var(--muted); } dd { margin:0; overflow-wrap:anywhere; }
.chip { display:inline-block; background:#fff4e0; color:var(--warn); border-radius:4px; padding:0 6px;
        margin:0 4px 2px 0; font-size:12px; font-weight:600; }
.error { border-left:4px solid var(--bad); background:#fdf0ef; padding:10px 12px; border-radius:4px; margin-bottom:12px; }
.error code { font-weight:700; }
.notice { border-left:4px solid var(--muted); background:#f1f3f6; padding:10px 12px; border-radius:4px; margin-bottom:12px; }
.empty { color:var(--muted); padding:28px 0; text-align:center; }
.empty:empty { display:none; }
table { width:100%; border-collapse:collapse; font-size:13.5px; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.3px; }
td.num { text-align:right; font-variant-numeric: tabular-nums; } th.num { text-align:right; }
.tablewrap { overflow-x:auto; }
.headrow { display:flex; justify-content:space-between; align-items:center; margin-bottom:10px; }
.headrow h2 { margin:0; }
footer { max-width:1180px; margin:0 auto 28px; padding:0 20px; color:var(--muted); font-size:12.5px; }
@media (max-width: 860px) { main, .result { grid-template-columns: 1fr; } }
"""

_JS = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "fetalhc.token";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function authHeaders() {
  const token = $("token").value.trim();
  return token ? { "Authorization": "Bearer " + token } : {};
}
function mm(v) { return (v === null || v === undefined) ? "-" : Number(v).toFixed(1); }
function gaText(days) {
  if (days === null || days === undefined) return "-";
  let weeks = Math.floor(days / 7), rest = Math.round(days - weeks * 7);
  if (rest === 7) { weeks += 1; rest = 0; }
  return weeks + "+" + rest + " wk";
}
function statusClass(status) {
  if (status === "not_head") return "muted";
  return status === "measured" ? "ok" : (status === "needs_review" ? "warn" : "bad");
}
function statusText(status) {
  return status === "not_head" ? "not a head plane" : status.replace("_", " ");
}
function scoreText(v) { return (v === null || v === undefined) ? "-" : Number(v).toFixed(3); }
function fileKind(file) {
  const name = file.name.toLowerCase();
  if (file.type === "image/png" || name.endsWith(".png")) return "image/png";
  if (file.type === "image/jpeg" || /\.jpe?g$/.test(name)) return "image/jpeg";
  return "application/dicom";
}
function parseGA(text) {
  text = text.trim();
  if (!text) return null;
  let m = /^(\d{1,2})\s*\+\s*([0-6])$/.exec(text);
  if (m) return Number(m[1]) * 7 + Number(m[2]);
  m = /^(\d{1,2}(?:\.\d+)?)$/.exec(text);
  if (m) return Math.round(Number(m[1]) * 7);
  throw new Error("GA: write weeks+days, e.g. 20+3");
}

async function loadHealth() {
  const pill = $("health");
  try {
    const r = await fetch("/healthz");
    const h = await r.json();
    if (r.ok) {
      pill.textContent = h.model_loaded ? "ready \u00b7 model loaded" : "ready";
      pill.className = "pill ok";
    } else {
      pill.textContent = "unavailable: database " + h.database + ", model file " + h.model_file
        + ", head-plane gate " + h.gate_file;
      pill.className = "pill bad";
    }
  } catch (e) { pill.textContent = "server unreachable"; pill.className = "pill bad"; }
}

function onFileChange() {
  const file = $("file").files[0];
  const image = file && fileKind(file) !== "application/dicom";
  $("spacing-row").classList.toggle("hidden", !image);
  $("spacing").required = !!image;
}

function dlRow(dl, term, value) {
  dl.appendChild(el("dt", term));
  const dd = el("dd");
  if (value instanceof Node) dd.appendChild(value); else dd.textContent = value;
  dl.appendChild(dd);
}

function renderResult(res) {
  const box = $("result");
  box.replaceChildren();
  $("result-card").classList.remove("hidden");
  $("result-placeholder").classList.add("hidden");
  const status = el("span", statusText(res.status), "pill " + statusClass(res.status));
  $("result-status").replaceChildren(status);
  if (res.status === "failed") {
    const err = el("div", null, "error");
    err.appendChild(el("code", res.reason || "failed"));
    err.appendChild(document.createTextNode(": " + (res.message || "the scan could not be measured")));
    box.appendChild(err);
  }
  if (res.status === "not_head") {
    const note = el("div", null, "notice");
    note.appendChild(el("b", "not a head plane"));
    note.appendChild(document.createTextNode(" (head-plane score " + scoreText(res.head_plane_score) + "): "
      + "no HC is measured on an image that is not a fetal head biometry plane."));
    if (res.message) note.appendChild(el("div", res.message, "hint"));
    box.appendChild(note);
  }
  const grid = el("div", null, "result");
  const left = el("div");
  if (res.overlay_png) {
    const img = el("img");
    img.src = res.overlay_png;
    img.alt = "scan with the fitted head ellipse";
    left.appendChild(img);
  } else {
    left.appendChild(el("div", "no image to show", "empty"));
  }
  grid.appendChild(left);
  const right = el("div");
  const metrics = el("div", null, "metrics");
  for (const [name, value] of [["HC", res.hc_mm], ["BPD", res.bpd_mm], ["OFD", res.ofd_mm]]) {
    const m = el("div", null, "metric");
    m.appendChild(el("small", name + " (mm)"));
    m.appendChild(el("b", mm(value)));
    metrics.appendChild(m);
  }
  if (res.status !== "not_head") right.appendChild(metrics);
  const dl = el("dl");
  if (res.head_plane_score !== null && res.head_plane_score !== undefined)
    dlRow(dl, "Head-plane score", scoreText(res.head_plane_score));
  dlRow(dl, "Quality", res.quality === null || res.quality === undefined ? "-" : Number(res.quality).toFixed(2));
  const flags = el("span");
  if (res.flags && res.flags.length) res.flags.forEach((f) => flags.appendChild(el("span", f.replace(/_/g, " "), "chip")));
  else flags.textContent = (res.status === "failed" || res.status === "not_head") ? "-" : "none";
  dlRow(dl, "Flags", flags);
  const sp = res.spacing || {};
  dlRow(dl, "Spacing", sp.x_mm ? Number(sp.x_mm).toFixed(3) + " \u00d7 " + Number(sp.y_mm).toFixed(3) + " mm/px (" + sp.source + ")" : "-");
  const ga = res.ga || {};
  if (res.hc_mm !== null && res.hc_mm !== undefined) {
    dlRow(dl, "GA used", ga.days === null ? "not known (give GA for a centile)" : gaText(ga.days) + " (" + ga.source + ")");
    if (ga.hc_centile !== null && ga.hc_centile !== undefined) {
      const c = el("span");
      c.appendChild(el("b", Number(ga.hc_centile).toFixed(1)));
      c.appendChild(document.createTextNode(" (z " + Number(ga.hc_z_score).toFixed(2) + ", " + ga.standard + ")"));
      (ga.flags || []).forEach((f) => c.appendChild(el("span", " " + f.replace(/_/g, " "), "chip")));
      dlRow(dl, "HC centile", c);
    } else if (ga.centile_reason && ga.days !== null) {
      dlRow(dl, "HC centile", ga.centile_reason);
    }
    dlRow(dl, "GA from HC", gaText(ga.estimate_days) + " (" + (ga.formula || "-") + ")");
  }
  const scan = res.scan || {};
  if (scan.sop_instance_uid) {
    const uid = el("span", "\u2026" + scan.sop_instance_uid.slice(-16) + (scan.frame ? " \u00b7 frame " + scan.frame : ""));
    uid.title = scan.sop_instance_uid;
    dlRow(dl, "Instance", uid);
  }
  if (scan.study_date) dlRow(dl, "Study date", scan.study_date);
  const model = res.model || {};
  if (model.version) dlRow(dl, "Model", model.name + " " + model.version.slice(0, 12));
  dlRow(dl, "Stored", res.stored ? "yes (job " + res.job_id + ")" : "no");
  if (res.timing_ms && res.timing_ms.total) dlRow(dl, "Time", Math.round(res.timing_ms.total) + " ms");
  right.appendChild(dl);
  grid.appendChild(right);
  box.appendChild(grid);
}

function renderError(status, body) {
  renderResult({ status: "failed", reason: (body && body.reason) || ("http_" + status),
                 message: (body && body.message) || "the server answered " + status, flags: [] });
}

async function measure(event) {
  event.preventDefault();
  const file = $("file").files[0];
  const note = $("form-note");
  note.textContent = "";
  if (!file) { note.textContent = "Choose a DICOM, PNG or JPEG file first."; return; }
  const kind = fileKind(file);
  const params = new URLSearchParams();
  if (kind !== "application/dicom") {
    const spacing = $("spacing").value.trim();
    if (!spacing) { note.textContent = "A PNG or JPEG needs its pixel spacing in mm."; return; }
    params.set("spacing_mm", spacing);
  }
  try {
    const ga = parseGA($("ga").value);
    if (ga !== null) params.set("ga_days", String(ga));
  } catch (e) { note.textContent = e.message; return; }
  if ($("store").checked) params.set("store", "1");
  const button = $("measure");
  button.disabled = true;
  button.textContent = "Measuring\u2026";
  try {
    const r = await fetch("/api/measure?" + params.toString(), {
      method: "POST", headers: Object.assign({ "Content-Type": kind }, authHeaders()), body: file });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (body && (r.ok || r.status === 422) && body.status) renderResult(body);
    else renderError(r.status, body);
    if (r.ok && $("store").checked) loadResults();
  } catch (e) {
    renderError(0, { reason: "network", message: "the server could not be reached" });
  } finally {
    button.disabled = false;
    button.textContent = "Measure";
    loadHealth();
  }
}

async function loadResults() {
  const body = $("results-body"), note = $("results-note");
  body.replaceChildren();
  note.textContent = "Loading\u2026";
  try {
    const r = await fetch("/api/results?order=newest&limit=15", { headers: authHeaders() });
    if (r.status === 401) { note.textContent = "Enter the API token to see stored results."; return; }
    if (!r.ok) { note.textContent = "Results unavailable (" + r.status + ")."; return; }
    const rows = await r.json();
    note.textContent = rows.length ? "" : "No results stored yet.";
    for (const row of rows) {
      const tr = el("tr");
      const when = row.updated_at ? row.updated_at.slice(0, 16).replace("T", " ") : "-";
      const cells = [[when], [row.study_date || "-"], [row.patient_id || "-"], [mm(row.hc_mm), "num"],
                     [gaText(row.ga_days)], [row.hc_centile === null ? "-" : Number(row.hc_centile).toFixed(1), "num"]];
      for (const [text, cls] of cells) tr.appendChild(el("td", text, cls));
      const st = el("td");
      st.appendChild(el("span", statusText(row.status), "pill " + statusClass(row.status)));
      tr.appendChild(st);
      tr.appendChild(el("td", row.flags ? row.flags.replace(/,/g, ", ") : (row.reason || "")));
      body.appendChild(tr);
    }
  } catch (e) { note.textContent = "Results unavailable."; }
}

async function downloadCsv() {
  const r = await fetch("/api/results.csv", { headers: authHeaders() });
  if (!r.ok) {
    $("results-note").textContent = r.status === 401 ? "Enter the API token to download results."
                                                     : "Download failed (" + r.status + ").";
    return;
  }
  const url = URL.createObjectURL(await r.blob());
  const a = el("a");
  a.href = url;
  a.download = "fetalhc-results.csv";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

$("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
$("token").addEventListener("change", () => { sessionStorage.setItem(TOKEN_KEY, $("token").value.trim()); loadResults(); });
$("file").addEventListener("change", onFileChange);
$("form").addEventListener("submit", measure);
$("refresh").addEventListener("click", loadResults);
$("csv").addEventListener("click", downloadCsv);
loadHealth();
loadResults();
"""

_BODY = """
<header>
  <h1>fetalhc<span>fetal head circumference from ultrasound</span></h1>
  <span id="health" class="pill muted">checking\u2026</span>
</header>
<main>
  <section class="card">
    <h2>Measure one scan</h2>
    <form id="form" autocomplete="off">
      <label for="file">Scan</label>
      <input id="file" name="file" type="file" accept=".dcm,.dicom,application/dicom,.png,.jpg,.jpeg,image/png,image/jpeg">
      <div class="hint">A DICOM file (calibrated by its own header), or a PNG/JPEG with its pixel spacing.</div>
      <div id="spacing-row" class="hidden">
        <label for="spacing">Pixel spacing (mm per pixel)</label>
        <input id="spacing" name="spacing_mm" type="text" inputmode="decimal" placeholder="e.g. 0.15">
      </div>
      <label for="ga">Gestational age at the scan (optional)</label>
      <input id="ga" name="ga" type="text" placeholder="weeks+days, e.g. 20+3">
      <div class="hint">Known from dating; gives the HC centile. DICOMs with a Last Menstrual Date need none.</div>
      <label class="check"><input id="store" name="store" type="checkbox"> Store the result in the results database</label>
      <label for="token">API token</label>
      <input id="token" name="token" type="password" placeholder="only if the server requires one">
      <div class="actions"><button id="measure" type="submit">Measure</button><span id="form-note" class="bad"></span></div>
    </form>
  </section>
  <section id="result-card" class="card hidden">
    <div class="headrow"><h2>Result</h2><span id="result-status"></span></div>
    <div id="result"></div>
  </section>
  <section id="result-placeholder" class="card">
    <h2>Result</h2>
    <div class="empty">Choose a scan and press Measure. Nothing is stored unless you tick Store.</div>
  </section>
  <section class="card wide">
    <div class="headrow"><h2>Latest results</h2>
      <span class="actions"><button id="refresh" class="secondary" type="button">Refresh</button>
      <button id="csv" class="secondary" type="button">Download CSV</button></span></div>
    <div class="tablewrap"><table>
      <thead><tr><th>Measured (UTC)</th><th>Study date</th><th>Patient ID</th><th class="num">HC mm</th>
        <th>GA</th><th class="num">Centile</th><th>Status</th><th>Flags / reason</th></tr></thead>
      <tbody id="results-body"></tbody>
    </table></div>
    <div id="results-note" class="empty"></div>
  </section>
</main>
<footer>A measurement aid: every value carries a quality score and flags; review flagged measurements.</footer>
"""

def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE_HTML = ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
             "<title>fetalhc</title>\n<style>" + _CSS + "</style>\n</head>\n<body>" + _BODY
             + "<script>" + _JS + "</script>\n</body>\n</html>\n")

PAGE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_sha256(_JS)}; style-src {_sha256(_CSS)}; img-src data: blob:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
