
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
  return (status === "measured" || status === "reviewed") ? "ok" : (status === "needs_review" ? "warn" : "bad");
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

function planeText(label, probability) {
  // SonoNet-16's standard plane (FETALHC_PLANE_CLASSIFIER); none without the classifier, never guessed
  if (!label) return "-";
  return label.replace(/_/g, " ") + (probability === null || probability === undefined ? ""
    : " (" + Number(probability).toFixed(2) + ")");
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
        + ", head-plane gate " + h.gate_file + ", plane classifier " + h.plane_classifier;
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
  dlRow(dl, "Standard plane", planeText(res.plane_label, res.plane_probability));
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
      // the values to use: a reviewer's correction replaces the model's, a rejection leaves none
      const hc = row.effective_hc_mm === undefined ? row.hc_mm : row.effective_hc_mm;
      const centile = row.effective_hc_centile === undefined ? row.hc_centile : row.effective_hc_centile;
      const status = row.effective_status || row.status;
      const cells = [[when], [row.study_date || "-"], [row.patient_id || "-"],
                     [mm(hc) + (row.confirmed ? " \u2713" : ""), "num"],
                     [gaText(row.ga_days)], [centile === null ? "-" : Number(centile).toFixed(1), "num"]];
      for (const [text, cls] of cells) tr.appendChild(el("td", text, cls));
      const st = el("td");
      st.appendChild(el("span", statusText(status), "pill " + statusClass(status)));
      tr.appendChild(st);
      tr.appendChild(el("td", row.flags ? row.flags.replace(/,/g, ", ") : (row.reason || "")));
      tr.appendChild(el("td", planeText(row.plane_label, row.plane_probability), "plane"));
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
