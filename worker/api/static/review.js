"use strict";
// The Review and Patient views: a worklist of flagged rows, the measured frame with the ellipse as an SVG overlay
// whose handles drag (the HC follows, by Ramanujan's perimeter as models.geometry.ellipse computes it), decisions
// by key or button, and a patient's rows with thumbnails over the growth standard's centile curves.
// Uses page.js's helpers ($, el, authHeaders, mm, gaText, statusText, statusClass, scoreText).

const SVG_NS = document.getElementById("rv-svg").namespaceURI;  // SVG's, from the page's own <svg>
const MODEL_COLOUR = "#ff4d2e", EDIT_COLOUR = "#36d36c";
const review = { rows: [], index: -1, row: null, model: null, edit: null, dragged: false, frameMm: null,
                 imageUrl: null, busy: false, who: null };

function svg(tag, attrs, parent) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

// Ramanujan's second approximation, as models.geometry.ellipse.ramanujan_perimeter (HC18's own HC).
function ramanujan(a, b) {
  const h = ((a - b) / (a + b)) ** 2;
  return Math.PI * (a + b) * (1 + 3 * h / (10 + Math.sqrt(4 - 3 * h)));
}
function normalised(e) {  // a >= b, angle in [0, pi), as Ellipse.make
  let { cx, cy, a, b, angle } = e;
  if (b > a) { [a, b] = [b, a]; angle += Math.PI / 2; }
  angle = ((angle % Math.PI) + Math.PI) % Math.PI;
  return { cx, cy, a, b, angle };
}
function ellipseOf(row) {
  const keys = ["center_x_mm", "center_y_mm", "semi_axis_a_mm", "semi_axis_b_mm", "angle_rad"];
  if (keys.some((k) => row[k] === null || row[k] === undefined)) return null;
  return { cx: row.center_x_mm, cy: row.center_y_mm, a: row.semi_axis_a_mm, b: row.semi_axis_b_mm, angle: row.angle_rad };
}

// -- views ----------------------------------------------------------------------------------------------------
function showView() {
  const name = (location.hash || "#measure").slice(1).split("/")[0];
  const view = ["measure", "review", "patient"].includes(name) ? name : "measure";
  for (const v of ["measure", "review", "patient"]) {
    $("view-" + v).classList.toggle("hidden", v !== view);
    $("nav-" + v).classList.toggle("current", v === view);
  }
  if (view === "review" && !review.rows.length) loadWorklist();
  if (view === "patient") {
    const id = decodeURIComponent((location.hash.split("/")[1] || ""));
    if (id && id !== $("pt-id").value) { $("pt-id").value = id; loadPatient(); }
  }
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = Object.assign({}, opts.headers || {}, authHeaders());
  return fetch(path, opts);
}

async function loadWho() {
  const pill = $("reviewer");
  try {
    const r = await api("/api/whoami");
    if (!r.ok) { review.who = null; pill.textContent = r.status === 401 ? "enter a token" : "unknown"; pill.className = "pill muted"; return; }
    const who = await r.json();
    review.who = who.name;
    pill.textContent = who.can_review ? "reviewing as " + who.name : "read only: a review needs a named token";
    pill.className = "pill " + (who.can_review ? "ok" : "warn");
  } catch (e) { pill.textContent = "server unreachable"; pill.className = "pill bad"; }
}

// -- worklist -------------------------------------------------------------------------------------------------
async function loadWorklist() {
  loadWho();
  const body = $("wl-body"), note = $("wl-note");
  body.replaceChildren();
  note.textContent = "Loading\u2026";
  const params = new URLSearchParams({ status: $("wl-status").value, limit: "200" });
  const reason = $("wl-reason").value.trim();
  if (reason) params.set("reason", reason);
  try {
    const r = await api("/api/review?" + params.toString());
    if (r.status === 401) { note.textContent = "Enter the API token (a named one to review)."; return; }
    if (!r.ok) { const b = await r.json().catch(() => ({})); note.textContent = b.message || "Worklist unavailable (" + r.status + ")."; return; }
    review.rows = await r.json();
  } catch (e) { note.textContent = "Worklist unavailable."; return; }
  renderWorklist();
  note.textContent = review.rows.length ? "" : "Nothing to review.";
  select(review.rows.length ? 0 : -1);
}

function renderWorklist() {
  const body = $("wl-body");
  body.replaceChildren();
  review.rows.forEach((row, i) => {
    const tr = el("tr");
    tr.id = "wl-row-" + row.id;
    if (i === review.index) tr.className = "selected";
    if (row.review_decision) tr.classList.add("decided");
    const cells = [[row.id], [row.study_date || "-"], [row.patient_id || "-"], [mm(row.effective_hc_mm), "num"],
                   [row.review_decision ? row.review_decision.replace(/_/g, " ") : (row.flags || row.reason || "").replace(/,/g, ", ")]];
    for (const [text, cls] of cells) tr.appendChild(el("td", text, cls));
    tr.addEventListener("click", () => select(i));
    body.appendChild(tr);
  });
}

function select(i) {
  review.index = i;
  review.row = i >= 0 ? review.rows[i] : null;
  renderWorklist();
  $("rv-msg").textContent = "";
  $("rv-typed-hc").value = "";
  $("rv-note").value = "";
  if (!review.row) { $("rv-panel").classList.add("hidden"); $("rv-empty").classList.remove("hidden"); return; }
  $("rv-panel").classList.remove("hidden");
  $("rv-empty").classList.add("hidden");
  const selected = $("wl-row-" + review.row.id);
  if (selected && selected.scrollIntoView) selected.scrollIntoView({ block: "nearest" });
  showRow();
}

// -- one row: image, ellipse, facts ------------------------------------------------------------------------------
async function showRow() {
  const row = review.row;
  $("rv-title").textContent = "Measurement " + row.id + (row.patient_id ? " \u00b7 patient " + row.patient_id : "");
  $("rv-status").replaceChildren(el("span", statusText(row.effective_status || row.status),
                                    "pill " + statusClass(row.effective_status || row.status)));
  review.model = ellipseOf(row);
  review.edit = null;
  review.dragged = false;
  renderFacts(row);
  const box = $("rv-svg");
  box.replaceChildren();
  box.removeAttribute("data-ready");
  if (review.imageUrl) { URL.revokeObjectURL(review.imageUrl); review.imageUrl = null; }
  try {
    const r = await api("/api/measurements/" + row.id + "/image.png?overlay=0");
    if (row !== review.row) return;  // moved on meanwhile
    if (!r.ok) {
      const b = await r.json().catch(() => ({}));
      $("rv-msg").textContent = "No image: " + (b.message || ("the server answered " + r.status));
      drawOverlay(null);
      return;
    }
    const blob = await r.blob();
    review.imageUrl = URL.createObjectURL(blob);
    const size = await imageSize(review.imageUrl);
    if (row !== review.row) return;
    const sx = row.spacing_mm_x || 1, sy = row.spacing_mm_y || sx;
    review.frameMm = { w: size.w * sx, h: size.h * sy };
    box.setAttribute("viewBox", "0 0 " + review.frameMm.w + " " + review.frameMm.h);
    svg("image", { href: review.imageUrl, x: 0, y: 0, width: review.frameMm.w, height: review.frameMm.h,
                   preserveAspectRatio: "none" }, box);
    drawOverlay(review.model);
    box.setAttribute("data-ready", String(row.id));
  } catch (e) { $("rv-msg").textContent = "The image could not be loaded."; }
}

function imageSize(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve({ w: img.naturalWidth, h: img.naturalHeight });
    img.onerror = reject;
    img.src = url;
  });
}

function renderFacts(row) {
  const shown = review.edit ? sizesOf(review.edit) : { hc: row.effective_hc_mm, bpd: row.effective_bpd_mm, ofd: row.effective_ofd_mm };
  $("rv-hc").textContent = mm(shown.hc);
  $("rv-bpd").textContent = mm(shown.bpd);
  $("rv-ofd").textContent = mm(shown.ofd);
  $("rv-hc").classList.toggle("edited", !!review.edit);
  const dl = $("rv-facts");
  dl.replaceChildren();
  dlRow(dl, "Model HC", mm(row.hc_mm) + " mm" + (row.quality !== null && row.quality !== undefined ? " \u00b7 quality " + Number(row.quality).toFixed(2) : ""));
  dlRow(dl, "GA used", row.ga_days === null || row.ga_days === undefined ? "not known" : gaText(row.ga_days) + " (" + row.ga_source + ")");
  dlRow(dl, "GA from HC", gaText(row.effective_ga_estimate_days));
  dlRow(dl, "HC centile", row.effective_hc_centile === null || row.effective_hc_centile === undefined ? (row.centile_reason || "-")
        : Number(row.effective_hc_centile).toFixed(1) + " (z " + Number(row.effective_hc_z_score).toFixed(2) + ")");
  const flags = el("span");
  const names = (row.flags || "").split(",").filter(Boolean);
  if (row.reason) names.push(row.reason);
  names.forEach((f) => flags.appendChild(el("span", f.replace(/_/g, " "), "chip")));
  if (!names.length) flags.textContent = "none";
  dlRow(dl, "Flags", flags);
  dlRow(dl, "Head-plane score", scoreText(row.head_plane_score));
  const plane = planeFacts(row);
  if (plane) dlRow(dl, "Plane", plane);
  if (row.review_decision) dlRow(dl, "Reviewed", row.review_decision.replace(/_/g, " ") + " by " + row.reviewed_by);
  dlRow(dl, "Study date", row.study_date || "-");
}

// Plane label and probabilities when the row has them (the plane classifier's columns), shown as they come.
function planeFacts(row) {
  const keys = Object.keys(row).filter((k) => k.startsWith("plane") && row[k] !== null && row[k] !== undefined);
  if (!keys.length) return null;
  const box = el("span");
  for (const k of keys) {
    let v = row[k];
    if (typeof v === "string" && v.trim().startsWith("{")) {
      try { v = JSON.parse(v); } catch (e) { /* shown as text */ }
    }
    if (v && typeof v === "object") {  // class -> probability: the four likeliest
      const top = Object.entries(v).sort((x, y) => y[1] - x[1]).slice(0, 4);
      v = top.map(([name, p]) => name + " " + Number(p).toFixed(2)).join(", ");
    } else if (typeof v === "number") v = Number(v).toFixed(3);
    box.appendChild(el("div", k.replace(/_/g, " ") + ": " + v));
  }
  return box;
}

function sizesOf(e) {
  return { hc: ramanujan(e.a, e.b), bpd: 2 * Math.min(e.a, e.b), ofd: 2 * Math.max(e.a, e.b) };
}

function handlePoints(e) {
  const c = Math.cos(e.angle), s = Math.sin(e.angle);
  const reach = e.a * 1.12 + 3;
  return { centre: [e.cx, e.cy], major: [e.cx + e.a * c, e.cy + e.a * s], minor: [e.cx - e.b * s, e.cy + e.b * c],
           rotate: [e.cx - reach * c, e.cy - reach * s] };
}

function drawOverlay(model) {
  const box = $("rv-svg");
  for (const old of Array.from(box.querySelectorAll(".overlay"))) old.remove();
  const frame = review.frameMm || { w: 100, h: 100 };
  const r = Math.max(frame.w, frame.h) / 90;  // handle radius, mm
  const layer = svg("g", { class: "overlay" }, box);
  if (model) {
    const g = svg("g", { transform: rotation(model) }, layer);
    svg("ellipse", { cx: model.cx, cy: model.cy, rx: model.a, ry: model.b, fill: "none", stroke: MODEL_COLOUR,
                     "stroke-width": r / 2.5, "stroke-dasharray": review.edit ? (r + " " + r) : "none",
                     id: "rv-model" }, g);
  }
  const e = review.edit || model || defaultEllipse();  // no ellipse yet (a not_head row): one to drag into place
  if (!review.edit && !model) {
    const g = svg("g", { transform: rotation(e) }, layer);
    svg("ellipse", { cx: e.cx, cy: e.cy, rx: e.a, ry: e.b, fill: "none", stroke: EDIT_COLOUR, "stroke-width": r / 4,
                     "stroke-dasharray": (r / 2) + " " + r, id: "rv-placeholder" }, g);
  }
  if (review.edit) {
    const g = svg("g", { transform: rotation(e) }, layer);
    svg("ellipse", { cx: e.cx, cy: e.cy, rx: e.a, ry: e.b, fill: "none", stroke: EDIT_COLOUR, "stroke-width": r / 2.5,
                     id: "rv-edit" }, g);
  }
  const p = handlePoints(e);
  const axis = { stroke: "#ffd60a", "stroke-width": r / 4 };
  svg("line", Object.assign({ x1: p.centre[0], y1: p.centre[1], x2: p.major[0], y2: p.major[1] }, axis), layer);
  svg("line", Object.assign({ x1: p.centre[0], y1: p.centre[1], x2: p.minor[0], y2: p.minor[1] }, axis), layer);
  for (const [name, [x, y]] of Object.entries(p)) {
    const h = svg(name === "rotate" ? "circle" : "rect", name === "rotate"
      ? { cx: x, cy: y, r: r * 1.1 } : { x: x - r, y: y - r, width: 2 * r, height: 2 * r },
    layer);
    h.setAttribute("class", "handle handle-" + name);
    h.setAttribute("id", "rv-handle-" + name);
    h.addEventListener("pointerdown", (ev) => startDrag(ev, name));
  }
}

function rotation(e) { return "rotate(" + (e.angle * 180 / Math.PI) + " " + e.cx + " " + e.cy + ")"; }

function pointerMm(ev) {
  const box = $("rv-svg");
  const pt = box.createSVGPoint();
  pt.x = ev.clientX; pt.y = ev.clientY;
  const m = box.getScreenCTM();
  const q = pt.matrixTransform(m.inverse());
  return [q.x, q.y];
}

function startDrag(ev, name) {
  ev.preventDefault();
  const start = review.edit || review.model || defaultEllipse();
  review.edit = Object.assign({}, start);
  const box = $("rv-svg");
  const move = (e2) => {
    const [x, y] = pointerMm(e2);
    const e = review.edit;
    const c = Math.cos(e.angle), s = Math.sin(e.angle);
    if (name === "centre") { e.cx = x; e.cy = y; }
    else if (name === "major") { e.a = Math.max(1, Math.abs((x - e.cx) * c + (y - e.cy) * s)); }
    else if (name === "minor") { e.b = Math.max(1, Math.abs(-(x - e.cx) * s + (y - e.cy) * c)); }
    else if (name === "rotate") { e.angle = Math.atan2(e.cy - y, e.cx - x); }
    review.dragged = true;
    drawOverlay(review.model);
    renderFacts(review.row);
    $("rv-msg").textContent = "Corrected ellipse: press S (or Save correction) to record it, Esc to undo.";
  };
  const stop = () => {
    box.removeEventListener("pointermove", move);
    window.removeEventListener("pointerup", stop);
  };
  box.addEventListener("pointermove", move);
  window.addEventListener("pointerup", stop);
}

function defaultEllipse() {  // a row without an ellipse (not_head): a head-sized ellipse in the middle
  const f = review.frameMm || { w: 100, h: 80 };
  const a = Math.min(f.w, f.h) / 3;
  return { cx: f.w / 2, cy: f.h / 2, a: a, b: a * 0.8, angle: 0 };
}

function undoDrag() {
  review.edit = null;
  review.dragged = false;
  drawOverlay(review.model);
  renderFacts(review.row);
  $("rv-msg").textContent = "";
}

// -- decisions ------------------------------------------------------------------------------------------------
async function decide(decision, extra) {
  const row = review.row;
  if (!row || review.busy) return;
  const body = Object.assign({ decision: decision }, extra || {});
  const note = $("rv-note").value.trim();
  if (note) body.note = note;
  review.busy = true;
  $("rv-msg").textContent = "Saving\u2026";
  try {
    const r = await api("/api/measurements/" + row.id + "/review", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) { $("rv-msg").textContent = "Not recorded: " + (answer.message || ("the server answered " + r.status)); return; }
    review.rows[review.index] = answer.measurement;
    $("rv-msg").textContent = "Recorded: " + decision.replace(/_/g, " ") + " (measurement " + row.id + ")";
    next(true);
  } catch (e) { $("rv-msg").textContent = "Not recorded: the server could not be reached."; }
  finally { review.busy = false; }
}

function saveCorrection() {
  const typed = $("rv-typed-hc").value.trim();
  if (typed && !review.dragged) {
    const hc = Number(typed.replace(",", "."));
    if (!isFinite(hc)) { $("rv-msg").textContent = "HC: type a number of millimetres."; return; }
    decide("corrected", { hc_mm: hc });
    return;
  }
  if (!review.edit) { $("rv-msg").textContent = "Drag a handle of the ellipse, or type the HC, first."; return; }
  const e = normalised(review.edit);
  decide("corrected", { center_x_mm: e.cx, center_y_mm: e.cy, semi_axis_a_mm: e.a, semi_axis_b_mm: e.b, angle_rad: e.angle });
}

function next(afterDecision) {
  if (!review.rows.length) return;
  if (afterDecision) {  // the next row still undecided, after this one, then from the top
    const n = review.rows.length;
    for (let k = 1; k <= n; k++) {
      const i = (review.index + k) % n;
      if (!review.rows[i].review_decision) { select(i); return; }
    }
    renderWorklist();
    $("rv-msg").textContent += " \u00b7 the worklist is done";
    return;
  }
  select(Math.min(review.index + 1, review.rows.length - 1));
}

function previous() { if (review.index > 0) select(review.index - 1); }

function onKey(ev) {
  if ((location.hash || "").slice(1).split("/")[0] !== "review" || !review.row) return;
  const target = ev.target;
  const typing = target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA");
  if (typing) {
    if (target.id === "rv-typed-hc" && ev.key === "Enter") { ev.preventDefault(); saveCorrection(); }
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const key = ev.key.toLowerCase();
  const actions = { a: () => decide("accepted"), r: () => decide("rejected_not_head"),
                    u: () => decide("rejected_unusable"), s: saveCorrection, n: () => next(false),
                    arrowright: () => next(false), p: previous, arrowleft: previous, escape: undoDrag,
                    h: () => { location.hash = "#patient/" + encodeURIComponent(review.row.patient_id || ""); } };
  const action = actions[key];
  if (action) { ev.preventDefault(); action(); }
}

// -- patient view -----------------------------------------------------------------------------------------------
async function loadPatient() {
  const id = $("pt-id").value.trim();
  const note = $("pt-note"), list = $("pt-rows"), chart = $("pt-chart");
  list.replaceChildren();
  chart.classList.add("hidden");
  if (!id) { note.textContent = "Type a patient ID."; return; }
  note.textContent = "Loading\u2026";
  let rows, curves;
  try {
    const r = await api("/api/results?" + new URLSearchParams({ patient_id: id, limit: "500" }).toString());
    if (r.status === 401) { note.textContent = "Enter the API token to see stored results."; return; }
    if (!r.ok) { note.textContent = "Results unavailable (" + r.status + ")."; return; }
    rows = await r.json();
    const c = await api("/api/growth-curves");
    curves = c.ok ? await c.json() : null;
  } catch (e) { note.textContent = "Results unavailable."; return; }
  note.textContent = rows.length ? rows.length + " stored row(s)" : "No rows for this patient.";
  if (curves) drawChart(chart, curves, rows);
  for (const row of rows) list.appendChild(patientCard(row));
}

function patientCard(row) {
  const card = el("div", null, "thumb");
  card.id = "pt-row-" + row.id;
  const img = el("img");
  img.alt = "measurement " + row.id;
  card.appendChild(img);
  api("/api/measurements/" + row.id + "/image.png?width=240").then(async (r) => {
    if (r.ok) img.src = URL.createObjectURL(await r.blob());
    else { img.remove(); card.insertBefore(el("div", "no image (" + r.status + ")", "empty"), card.firstChild); }
  }).catch(() => {});
  const hc = row.effective_hc_mm;
  card.appendChild(el("b", (hc === null || hc === undefined ? "no HC" : mm(hc) + " mm") +
                            (row.confirmed ? " \u2713" : "")));
  card.appendChild(el("div", (row.study_date || "-") + " \u00b7 GA " + gaText(row.ga_days) + " \u00b7 centile " +
                            (row.effective_hc_centile === null || row.effective_hc_centile === undefined ? "-" : Number(row.effective_hc_centile).toFixed(1)), "hint"));
  card.appendChild(el("span", statusText(row.effective_status || row.status), "pill " + statusClass(row.effective_status || row.status)));
  if (row.reviewed_by) card.appendChild(el("div", row.review_decision.replace(/_/g, " ") + " by " + row.reviewed_by, "hint"));
  return card;
}

function drawChart(box, curves, rows) {
  box.replaceChildren();
  box.classList.remove("hidden");
  const W = 640, H = 360, L = 48, R = 30, T = 14, B = 36;
  box.setAttribute("viewBox", "0 0 " + W + " " + H);
  const weeks = curves.ga_days.map((d) => d / 7);
  const all = Object.values(curves.centiles).flat().filter((v) => v !== null);
  const x0 = weeks[0], x1 = weeks[weeks.length - 1], y0 = 0, y1 = Math.max(...all) * 1.05;
  const X = (w) => L + (w - x0) / (x1 - x0) * (W - L - R), Y = (v) => H - B - (v - y0) / (y1 - y0) * (H - T - B);
  svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#dde3ea" }, box);
  for (let w = 15; w <= 40; w += 5) {
    svg("line", { x1: X(w), y1: T, x2: X(w), y2: H - B, stroke: "#eef1f5" }, box);
    const t = svg("text", { x: X(w), y: H - B + 16, "text-anchor": "middle", class: "axis" }, box);
    t.textContent = String(w);
  }
  for (let v = 50; v < y1; v += 50) {
    const t = svg("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end", class: "axis" }, box);
    t.textContent = String(v);
  }
  const xl = svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "axis" }, box);
  xl.textContent = "gestational age (weeks) \u00b7 HC (mm), " + curves.standard;
  for (const [c, values] of Object.entries(curves.centiles)) {
    const d = values.map((v, i) => (i ? "L" : "M") + X(weeks[i]).toFixed(1) + " " + Y(v).toFixed(1)).join(" ");
    svg("path", { d: d, fill: "none", stroke: "#8a96a3", "stroke-width": c === "50" ? 1.6 : 1,
                  "stroke-dasharray": c === "50" ? "none" : (c === "10" || c === "90" ? "5 3" : "2 3") }, box);
    const t = svg("text", { x: X(x1) + 3, y: Y(values[values.length - 1]) + 3, class: "axis" }, box);
    t.textContent = "P" + c;
  }
  let shown = 0;
  for (const row of rows) {
    const hc = row.effective_hc_mm;
    if (hc === null || hc === undefined || row.ga_days === null || row.ga_days === undefined) continue;
    const dot = svg("circle", { cx: X(row.ga_days / 7), cy: Y(hc), r: 5, class: "point" + (row.confirmed ? " confirmed" : "") }, box);
    const title = svg("title", {}, dot);
    title.textContent = "measurement " + row.id + ": " + mm(hc) + " mm at " + gaText(row.ga_days);
    shown++;
  }
  box.setAttribute("data-points", String(shown));
}

// -- wiring -----------------------------------------------------------------------------------------------------
window.addEventListener("hashchange", showView);
document.addEventListener("keydown", onKey);
$("token").addEventListener("change", () => { if (!$("view-review").classList.contains("hidden")) loadWorklist(); else loadWho(); });
$("wl-refresh").addEventListener("click", loadWorklist);
$("wl-status").addEventListener("change", loadWorklist);
$("rv-accept").addEventListener("click", () => decide("accepted"));
$("rv-reject").addEventListener("click", () => decide("rejected_not_head"));
$("rv-unusable").addEventListener("click", () => decide("rejected_unusable"));
$("rv-save").addEventListener("click", saveCorrection);
$("rv-next").addEventListener("click", () => next(false));
$("pt-load").addEventListener("click", () => { location.hash = "#patient/" + encodeURIComponent($("pt-id").value.trim()); loadPatient(); });
$("pt-id").addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); $("pt-load").click(); } });
showView();
