// Live dashboard of one worker: polls its JSON endpoints every second, draws on canvas.
// No framework, no build step, nothing loaded from elsewhere (the machine may be offline).
"use strict";

const POLL_MS = 1000;
const WINDOW_S = 300; // the charts show the last five minutes
const FEED_LIMIT = 50;

// What the page knows; also read by the browser test (window.dashboard).
const state = {
  polls: 0,
  errors: 0,
  lastPollAt: null,
  samples: new Map(), // t (epoch s) -> per-second sample from /stats history
  alertIds: [],
  seen: new Set(),
  chartPoints: { throughput: 0, latency: 0 },
};
window.dashboard = state;

const $ = (id) => document.getElementById(id);

function fmtInt(n) {
  return n == null ? "–" : Math.round(n).toLocaleString("en-US");
}

function fmtMs(ms) {
  if (ms == null) return "–";
  if (ms >= 1000) return (ms / 1000).toFixed(ms >= 10000 ? 0 : 1) + " s";
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2);
}

// Axis ticks: as many decimals as the tick step needs, no more.
function fmtTick(v) {
  if (v === 0) return "0";
  if (v >= 1000) return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
  return String(Number(v.toPrecision(3)));
}

function fmtTime(date) {
  return date.toLocaleTimeString("en-GB", { hour12: false });
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "title") node.title = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    // textContent only: card ids and descriptions come from the wire.
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function replaceRows(tbody, rows, emptyText, columns) {
  tbody.replaceChildren(
    ...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText))])
  );
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
  const body = await response.json();
  return { status: response.status, body };
}

// ---------------------------------------------------------------- charts

function niceStep(max, ticks) {
  const raw = max / ticks;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const unit = raw / power;
  return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 2.5 ? 2.5 : unit <= 5 ? 5 : 10) * power;
}

function drawChart(canvas, series, opts) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const styles = getComputedStyle(document.documentElement);
  const muted = styles.getPropertyValue("--muted").trim();
  const line = styles.getPropertyValue("--line").trim();
  const pad = { left: 46, right: 10, top: 8, bottom: 20 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;

  const now = Date.now() / 1000;
  const t0 = now - WINDOW_S;
  let max = 0;
  for (const s of series) for (const [t, v] of s.points) if (t >= t0 && v != null) max = Math.max(max, v);
  const step = niceStep(max > 0 ? max * 1.1 : opts.minMax, 4);
  const top = Math.max(step * Math.ceil((max * 1.1) / step), step);

  const x = (t) => pad.left + ((t - t0) / WINDOW_S) * plotW;
  const y = (v) => pad.top + plotH - (v / top) * plotH;

  ctx.font = "11px system-ui, 'DejaVu Sans', sans-serif";
  ctx.lineWidth = 1;
  ctx.strokeStyle = line;
  ctx.fillStyle = muted;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let v = 0; v <= top + step / 2; v += step) {
    const py = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.left, py);
    ctx.lineTo(width - pad.right, py);
    ctx.stroke();
    ctx.fillText(opts.format(v), pad.left - 6, py);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (let ago = WINDOW_S; ago >= 0; ago -= 60) {
    const px = x(now - ago);
    ctx.fillText(ago === 0 ? "now" : `-${ago / 60}m`, Math.min(Math.max(px, pad.left + 12), width - pad.right - 12), height - pad.bottom + 5);
  }

  let drawn = 0;
  for (const s of series) {
    const visible = s.points.filter(([t]) => t >= t0);
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 1.6;
    ctx.lineJoin = "round";
    // A null value (a second without payments) breaks the line instead of faking a zero.
    let open = false;
    ctx.beginPath();
    for (const [t, v] of visible) {
      if (v == null) { open = false; continue; }
      if (open) ctx.lineTo(x(t), y(v)); else ctx.moveTo(x(t), y(v));
      open = true;
      drawn += 1;
    }
    ctx.stroke();
    if (s.fill) {
      ctx.fillStyle = s.fill;
      let run = [];
      const flush = () => {
        if (run.length > 1) {
          ctx.beginPath();
          ctx.moveTo(x(run[0][0]), y(0));
          for (const [t, v] of run) ctx.lineTo(x(t), y(v));
          ctx.lineTo(x(run[run.length - 1][0]), y(0));
          ctx.closePath();
          ctx.fill();
        }
        run = [];
      };
      for (const point of visible) { if (point[1] == null) flush(); else run.push(point); }
      flush();
    }
  }
  canvas.dataset.points = String(drawn);
  const last = series[0].points.length ? series[0].points[series[0].points.length - 1][0] : 0;
  canvas.dataset.lastT = String(last);
  canvas.dataset.max = String(max);
  return drawn;
}

function drawCharts() {
  const samples = [...state.samples.values()].sort((a, b) => a.t - b.t);
  const styles = getComputedStyle(document.documentElement);
  const accent = styles.getPropertyValue("--accent").trim();
  const p99 = styles.getPropertyValue("--p99").trim();
  state.chartPoints.throughput = drawChart($("chart-throughput"), [
    { points: samples.map((s) => [s.t, s.rate]), color: accent, fill: "rgba(74, 163, 255, 0.15)" },
  ], { minMax: 10, format: (v) => fmtTick(v) });
  state.chartPoints.latency = drawChart($("chart-latency"), [
    { points: samples.map((s) => [s.t, s.p50_ms]), color: accent },
    { points: samples.map((s) => [s.t, s.p99_ms]), color: p99 },
  ], { minMax: 10, format: (v) => fmtTick(v) });
}

// ---------------------------------------------------------------- panels

// A shadow rule's live alerts beside its backtest on the same archived payments (the
// evidence for promoting it), fetched at most once a minute per rule version.
//
// Evidence reads the archive, so the worker asks for its API token (FRAUD_API_TOKEN) as it
// does for backtests; everything else on this page needs none. The page asks for the token
// once, when the user opens the evidence, and keeps it in sessionStorage: this tab only,
// gone with it, never in a URL. Without it the rules table shows a button instead.
const EVIDENCE_MS = 60000;
const TOKEN_KEY = "fraud.apiToken";
const evidence = new Map();
let tokenRefused = ""; // why the worker refused the last token, shown on the button

function apiToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return ""; // storage blocked: no evidence, the rest of the page is unaffected
  }
}

function setApiToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage blocked: asked again next time */ }
  evidence.clear(); // fetch again with (or without) it
}

// What a reply means for the evidence cell: its text and title, and how long to wait
// before asking again (a refused token is forgotten: the cell becomes the button again).
function evidenceReply(status, body, retryAfter) {
  if (status === 200) {
    return { text: `live ${fmtInt(body.live_alerts)} · backtest ${fmtInt(body.backtest_alerts)}`, wait: EVIDENCE_MS };
  }
  if (status === 401) {
    // Wrong, or changed on the worker: forget it, and the button asks again.
    tokenRefused = `The worker refused the token (${body.error}); enter it again`;
    setApiToken("");
    return {};
  }
  if (status === 403) return { text: "evidence off", title: body.error, wait: EVIDENCE_MS };
  if (status === 429) {
    // The worker computes one backtest at a time: come back when it says.
    const seconds = Number(retryAfter);
    return { busy: true, wait: 1000 * (seconds > 0 ? seconds : 5) };
  }
  return { text: "no archive", title: body.error, wait: EVIDENCE_MS };
}

function shadowEvidence(rule) {
  const token = apiToken();
  if (!token) {
    return el("button", { class: "evidence token", type: "button", "data-action": "token",
      title: tokenRefused || "Show this shadow rule's evidence: needs the worker's API token" },
    "evidence…");
  }
  const key = `${rule.rule_id}@${rule.version}`;
  const known = evidence.get(key);
  if (!known || Date.now() >= known.due) {
    evidence.set(key, { due: Infinity, text: known ? known.text : "backtest…", title: known && known.title });
    fetch(`/rules/${encodeURIComponent(rule.rule_id)}/evidence`, {
      cache: "no-store",
      headers: { Accept: "application/json", Authorization: `Bearer ${token}` },
    })
      .then(async (response) => evidenceReply(response.status, await response.json(), response.headers.get("Retry-After")))
      .catch(() => ({ text: "no archive", wait: EVIDENCE_MS }))
      .then((reply) => {
        if (apiToken() !== token) return; // a reply for a token since replaced or refused
        const before = evidence.get(key) || {};
        evidence.set(key, {
          due: Date.now() + (reply.wait || 0),
          text: reply.busy ? before.text : reply.text,
          title: reply.title,
        });
      });
  }
  const shown = evidence.get(key);
  return el("div", { class: "evidence", title: shown.title || "live alerts of this version since it was published, beside a backtest of the same archived payments" },
    shown.text);
}

function askToken() {
  $("token-input").value = "";
  $("token-dialog").showModal();
}

$("rules").addEventListener("click", (event) => {
  if (event.target.closest("[data-action=token]")) askToken();
});

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (event.submitter && event.submitter.value === "cancel") {
    $("token-dialog").close();
    return;
  }
  if (!token) return;
  tokenRefused = "";
  setApiToken(token);
  $("token-dialog").close();
});

function renderStats(stats) {
  $("worker").textContent = stats.worker ? stats.worker.url : "";
  $("kpi-rate").textContent = fmtInt(stats.throughput ? stats.throughput.last_10s : null);
  const latency = stats.decision_latency_ms || {};
  $("kpi-p50").textContent = latency.count ? fmtMs(latency.p50) : "–";
  $("kpi-p99").textContent = latency.count ? fmtMs(latency.p99) : "–";
  $("kpi-processed").textContent = fmtInt(stats.processed);
  $("kpi-alerts").textContent = fmtInt(stats.alerts_total);
  $("kpi-dlq").textContent = fmtInt(stats.dlq_total);
  const reasons = Object.entries(stats.dlq || {}).sort((a, b) => b[1] - a[1]);
  $("kpi-dlq-reasons").textContent = reasons.length
    ? reasons.slice(0, 2).map(([r, n]) => `${r} ${n}`).join(", ")
    : "records";
  $("kpi-lag").textContent = fmtInt(stats.consumer ? stats.consumer.total_lag : null);

  for (const sample of stats.history || []) state.samples.set(sample.t, sample);
  const horizon = Date.now() / 1000 - WINDOW_S - 5;
  for (const t of state.samples.keys()) if (t < horizon) state.samples.delete(t);

  const rules = stats.rules || [];
  $("rules-count").textContent = rules.length ? `${rules.length} in force` : "";
  replaceRows($("rules"), rules.map((rule) => {
    const alerts = Object.values(rule.alerts || {}).reduce((a, b) => a + b, 0);
    return el("tr", {},
      el("td", { class: "mono", title: rule.description || rule.rule_id }, rule.rule_id),
      el("td", {}, el("span", { class: `badge ${rule.status}` }, rule.status)),
      el("td", { class: "num" }, `v${rule.version}`),
      el("td", { title: `${rule.kind || "aggregate"} rule; group by ${rule.group_by}; severity ${rule.severity}` },
        `${[rule.aggregate, rule.threshold].filter(Boolean).join(" ")} in ${rule.window_s} s `,
        el("span", { class: "sev" }, rule.severity)),
      el("td", { class: "num" }, fmtInt(alerts),
        rule.status === "shadow" ? shadowEvidence(rule) : ""));
  }), "No rules loaded yet", 5);

  // One row per topic: partitions held, committed offsets and lag summed over them.
  const topics = new Map();
  for (const p of (stats.consumer && stats.consumer.partitions) || []) {
    const row = topics.get(p.topic) || { partitions: [], committed: null, lag: null };
    row.partitions.push(p.partition);
    if (p.committed != null) row.committed = (row.committed || 0) + p.committed;
    if (p.lag != null) row.lag = (row.lag || 0) + p.lag;
    topics.set(p.topic, row);
  }
  replaceRows($("partitions"), [...topics].map(([topic, row]) => el("tr", {},
    el("td", { class: "mono", title: topic }, topic),
    el("td", {}, row.partitions.sort((a, b) => a - b).join(", ")),
    el("td", { class: "num" }, row.committed == null ? "–" : fmtInt(row.committed)),
    el("td", { class: "num" }, row.lag == null ? "–" : fmtInt(row.lag)))), "No partitions assigned", 4);
}

// What an alert of a kind other than an aggregate says about itself: the step each of
// its payments matched, or the facts of its kind (a first-seen field and value, ...).
function explain(alert) {
  if (alert.steps) {
    return alert.steps.map((step, i) => `step ${step}: ${(alert.txn_ids || [])[i]}`).join(", ");
  }
  return Object.entries(alert.explanation || {}).map(([name, value]) => `${name} ${value}`).join(", ");
}

function renderAlerts(body) {
  const alerts = body.alerts || [];
  const fresh = state.polls > 0; // everything on the first load is history, not news
  const rows = alerts.map((alert) => {
    const isNew = fresh && !state.seen.has(alert.alert_id);
    state.seen.add(alert.alert_id);
    const detected = alert.detected_at ? fmtTime(new Date(alert.detected_at)) : "–";
    return el("tr", { class: isNew ? "fresh" : "", "data-alert-id": alert.alert_id },
      el("td", {}, detected),
      el("td", { title: [alert.description, explain(alert)].filter(Boolean).join(" · ") },
        alert.rule_id, " ", el("span", { class: `badge ${alert.status}` }, alert.status)),
      el("td", { class: "mono card-link", title: `Inspect ${alert.group_key}`, "data-card": alert.group_key }, alert.group_key),
      el("td", { class: "num" }, (alert.txn_ids || []).length),
      el("td", { class: "num" }, alert.total_amount == null ? "–" : Number(alert.total_amount).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })),
      el("td", { class: "num" }, alert.latency_ms == null ? "–" : `${fmtMs(alert.latency_ms)} ms`));
  });
  replaceRows($("alerts"), rows, "Waiting for alerts…", 6);
  state.alertIds = alerts.map((a) => a.alert_id);
  $("feed-count").textContent = alerts.length ? `newest ${alerts.length}` : "";
  if (state.seen.size > 5000) state.seen = new Set(state.alertIds);
}

function renderProbe(id, label, result, okWord) {
  const node = $(id);
  const ok = result && result.status === 200;
  node.dataset.state = result ? (ok ? "ok" : "bad") : "unknown";
  node.textContent = `${label}: ${ok ? okWord : result ? "no" : "?"}`;
  if (result && !ok) node.title = JSON.stringify(result.body.checks || result.body);
}

// ---------------------------------------------------------------- one card

async function inspectCard(card) {
  const out = $("card-result");
  out.dataset.state = "loading";
  out.textContent = `Looking up ${card}…`;
  let result;
  try {
    result = await getJson(`/cards/${encodeURIComponent(card)}`);
  } catch (err) {
    out.dataset.state = "error";
    out.textContent = `Lookup failed: ${err}`;
    return;
  }
  const body = result.body;
  if (result.status !== 200) {
    out.dataset.state = "error";
    out.textContent = `${result.status}: ${body.error}`;
    return;
  }
  const lines = [
    el("p", {}, el("b", { class: "mono" }, body.card_id), ` · partition ${body.partition} · served by `,
      el("span", { class: "mono" }, body.served_by)),
    el("p", {}, `Newest event ${body.newest_event_ts ? fmtTime(new Date(body.newest_event_ts)) : "–"}`),
  ];
  for (const [ruleId, rule] of Object.entries(body.rules)) {
    const amounts = rule.pending.map((e) => e.amount).join(", ");
    lines.push(el("p", {}, el("b", {}, ruleId), ` v${rule.version}: ${rule.pending.length} pending`,
      amounts ? ` (${amounts})` : "", `, ${rule.alerted.length} in alerts`,
      rule.seen ? `, ${rule.seen.length} earlier values known` : ""));
  }
  const windows = body.high_value_windows.map((w) => `${fmtTime(new Date(w.start_ms)).slice(0, 5)} ×${w.count}`);
  lines.push(el("p", {}, `High-value payments per 5 min: ${windows.length ? windows.join(", ") : "none"}`));
  const last = body.alerts[body.alerts.length - 1];
  lines.push(el("p", {}, `Alerts: ${body.alerts.length}`,
    last ? ` (latest ${last.rule_id} at ${fmtTime(new Date(last.detected_at))})` : ""));
  out.replaceChildren(...lines);
  out.dataset.state = "ok";
}

$("card-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const card = $("card-input").value.trim();
  if (card) inspectCard(card);
});

$("alerts").addEventListener("click", (event) => {
  const cell = event.target.closest("td[data-card]");
  if (!cell) return;
  $("card-input").value = cell.dataset.card;
  inspectCard(cell.dataset.card);
});

// ---------------------------------------------------------------- cases

// The case queue (GET /cases: open cases first, filtered by status, rule and key), one
// case's alerts and payments, and closing it with a disposition (POST
// /cases/{id}/close, which needs the API token: asked for and kept as for evidence).
// Refreshed every CASES_MS while the panel is open, the open count (up to COUNT_LIMIT) always.
const CASES_MS = 5000;
const CASES_LIMIT = 100;
const COUNT_LIMIT = 100;
const CLOSER_KEY = "fraud.closedBy";
const cases = {
  open: false,
  count: null, // open cases, for the header button
  list: [],
  selected: null, // case id
  pendingClose: null, // a close waiting for the token dialog
  lastClose: null, // {status, case_id} of the last close answer (read by the browser test)
  refreshedAt: 0,
};
state.cases = cases;

function casesQuery(status) {
  const params = new URLSearchParams({ limit: String(CASES_LIMIT) });
  if (status) params.set("status", status);
  const rule = $("cases-rule").value.trim();
  const key = $("cases-key").value.trim();
  if (rule) params.set("rule", rule);
  if (key) params.set("key", key);
  return `/cases?${params}`;
}

async function refreshCases() {
  cases.refreshedAt = Date.now();
  const status = $("cases-status").value;
  // Open cases first: the open ones, then the closed ones (each newest first).
  const statuses = status ? [status] : ["open", "closed"];
  try {
    const answers = await Promise.all(statuses.map((s) => getJson(casesQuery(s))));
    const refused = answers.find((a) => a.status !== 200);
    if (refused) {
      replaceRows($("cases"), [], `${refused.status}: ${refused.body.error}`, 5);
      return;
    }
    cases.list = answers.flatMap((a) => a.body.cases);
  } catch (err) {
    replaceRows($("cases"), [], `Cases unavailable: ${err}`, 5);
    return;
  }
  renderCases();
  if (cases.selected) showCase(cases.selected, false);
}

async function refreshCaseCount() {
  try {
    // The API has no count of its own: at most COUNT_LIMIT open cases are fetched for it.
    const answer = await getJson(`/cases?status=open&limit=${COUNT_LIMIT}`);
    cases.count = answer.status === 200 ? answer.body.count : null;
  } catch {
    cases.count = null;
  }
  const shown = cases.count == null ? "–" : cases.count >= COUNT_LIMIT ? `${COUNT_LIMIT}+` : fmtInt(cases.count);
  $("cases-toggle").textContent = `cases: ${shown} open`;
}

function renderCases() {
  $("cases-count").textContent = cases.list.length ? `${cases.list.length} shown` : "";
  replaceRows($("cases"), cases.list.map((c) => el("tr", {
    "data-case-id": c.case_id, class: c.case_id === cases.selected ? "selected" : "",
    title: c.description || c.case_id,
  },
  el("td", {}, c.opened_at ? fmtTime(new Date(c.opened_at)) : "–"),
  el("td", {}, el("span", { class: `badge ${c.status}` }, c.disposition ? `${c.status}: ${c.disposition}` : c.status)),
  el("td", { class: "mono" }, c.rule_id),
  el("td", { class: "mono" }, c.group_key),
  el("td", { class: "num" }, fmtInt(c.alert_count)))), "No cases match", 5);
}

function openCases(open) {
  cases.open = open;
  $("cases-panel").hidden = !open;
  $("cases-toggle").dataset.open = String(open);
  $("cases-toggle").setAttribute("aria-expanded", String(open));
  if (open) refreshCases();
}

// The case's alerts as this worker last saw them (GET /alerts of its card and rule).
async function caseAlerts(c) {
  if (c.group_by !== "card_id") return [];
  const params = new URLSearchParams({ card: c.group_key, rule: c.rule_id, limit: "100" });
  try {
    const answer = await getJson(`/alerts?${params}`);
    const ids = new Set(c.alert_ids);
    return answer.status === 200 ? answer.body.alerts.filter((a) => ids.has(a.alert_id)) : [];
  } catch {
    return [];
  }
}

async function showCase(caseId, fresh = true) {
  cases.selected = caseId;
  renderCases();
  const out = $("case-detail");
  if (fresh) {
    out.dataset.state = "loading";
    out.textContent = `Loading case ${caseId}…`;
  }
  let answer;
  try {
    answer = await getJson(`/cases/${encodeURIComponent(caseId)}`);
  } catch (err) {
    out.dataset.state = "error";
    out.textContent = `Lookup failed: ${err}`;
    return;
  }
  if (answer.status !== 200) {
    out.dataset.state = "error";
    out.textContent = `${answer.status}: ${answer.body.error}`;
    return;
  }
  const c = answer.body;
  // Keep what the user is typing: a refresh redraws only a case without a close form.
  if (!fresh && out.dataset.caseId === c.case_id && out.dataset.status === c.status) return;
  const alerts = await caseAlerts(c);
  const parts = [
    el("p", {}, el("b", { class: "mono" }, c.case_id), " · ",
      el("span", { class: `badge ${c.status}` }, c.status), ` · ${c.rule_id} v${c.rule_version} · ${c.severity}`),
    el("p", {}, `${c.group_by} `, el("span", { class: "mono" }, c.group_key),
      ` · opened ${c.opened_at} · last alert ${c.last_alert_at}`),
    el("p", {}, `${c.alert_count} alert${c.alert_count === 1 ? "" : "s"}, ${c.txn_count} payment${c.txn_count === 1 ? "" : "s"}`),
  ];
  if (alerts.length) {
    parts.push(el("table", { class: "case-alerts" },
      el("thead", {}, el("tr", {}, el("th", {}, "Alert"), el("th", {}, "Detected"), el("th", {}, "Payments"), el("th", { class: "num" }, "Amount"))),
      el("tbody", {}, ...alerts.map((a) => el("tr", {},
        el("td", { class: "mono", title: [a.alert_id, explain(a)].filter(Boolean).join(" · ") }, a.alert_id),
        el("td", {}, a.detected_at ? fmtTime(new Date(a.detected_at)) : "–"),
        el("td", { class: "mono" }, (a.txn_ids || []).join(", ")),
        el("td", { class: "num" }, a.total_amount == null ? "–" : a.total_amount))))));
  } else {
    parts.push(el("p", {}, "Alerts: ", el("span", { class: "mono" }, c.alert_ids.join(", "))));
  }
  parts.push(el("p", {}, "Payments: ", el("span", { class: "mono case-txns" }, c.txn_ids.join(", "))));
  if (c.status === "closed") {
    parts.push(el("p", {}, el("b", {}, `Closed as ${c.disposition}`), ` by ${c.closed_by} at ${c.closed_at}: ${c.note}`));
  } else {
    parts.push(closeForm(c));
  }
  out.replaceChildren(...parts);
  out.dataset.state = "ok";
  out.dataset.caseId = c.case_id;
  out.dataset.status = c.status;
}

function closeForm(c) {
  let closer = "";
  try { closer = localStorage.getItem(CLOSER_KEY) || ""; } catch { /* storage blocked */ }
  const form = el("form", { class: "close-form", id: "close-form", "data-case-id": c.case_id, autocomplete: "off" },
    el("label", { for: "close-disposition" }, "Disposition"),
    el("select", { id: "close-disposition", name: "disposition", required: "" },
      el("option", { value: "" }, "choose…"),
      el("option", { value: "fraud" }, "fraud"),
      el("option", { value: "not_fraud" }, "not fraud"),
      el("option", { value: "inconclusive" }, "inconclusive")),
    el("label", { for: "close-note" }, "Note"),
    el("textarea", { id: "close-note", name: "note", required: "", maxlength: "2000", placeholder: "why (customer called, merchant confirmed, …)" }),
    el("label", { for: "close-by" }, "Closed by"),
    el("input", { id: "close-by", name: "closed_by", required: "", maxlength: "128", placeholder: "your name" }),
    el("button", { type: "submit" }, "Close case"),
    el("span", { class: "close-result", id: "close-result" }, ""));
  form.querySelector("#close-by").value = closer;
  return form;
}

async function closeCase(request) {
  const token = apiToken();
  if (!token) {
    cases.pendingClose = request;
    askToken();
    return;
  }
  const result = $("close-result");
  if (result) { result.dataset.state = "busy"; result.textContent = "closing…"; }
  let answer;
  try {
    const response = await fetch(`/cases/${encodeURIComponent(request.case_id)}/close`, {
      method: "POST",
      cache: "no-store",
      headers: { Accept: "application/json", "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ disposition: request.disposition, note: request.note, closed_by: request.closed_by }),
    });
    answer = { status: response.status, body: await response.json() };
  } catch (err) {
    answer = { status: 0, body: { error: String(err) } };
  }
  cases.lastClose = { status: answer.status, case_id: request.case_id };
  if (answer.status === 401) {
    tokenRefused = `The worker refused the token (${answer.body.error}); enter it again`;
    setApiToken("");
    cases.pendingClose = request;
    askToken();
  }
  const shown = $("close-result");
  if (answer.status !== 200) {
    if (shown) { shown.dataset.state = "error"; shown.textContent = `${answer.status}: ${answer.body.error}`; }
    return;
  }
  await showCase(request.case_id);
  refreshCases();
  refreshCaseCount();
}

$("cases-toggle").addEventListener("click", () => openCases(!cases.open));
$("cases-close").addEventListener("click", () => openCases(false));
$("cases-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  refreshCases();
});
$("cases-status").addEventListener("change", refreshCases);
$("cases").addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-case-id]");
  if (row) showCase(row.dataset.caseId);
});
$("case-detail").addEventListener("submit", (event) => {
  if (event.target.id !== "close-form") return;
  event.preventDefault();
  const form = event.target;
  const request = {
    case_id: form.dataset.caseId,
    disposition: form.querySelector("#close-disposition").value,
    note: form.querySelector("#close-note").value.trim(),
    closed_by: form.querySelector("#close-by").value.trim(),
  };
  try { localStorage.setItem(CLOSER_KEY, request.closed_by); } catch { /* storage blocked */ }
  closeCase(request);
});
// A close that waited for the token goes on once the dialog gave one.
$("token-dialog").addEventListener("close", () => {
  const request = cases.pendingClose;
  cases.pendingClose = null;
  if (request && apiToken()) closeCase(request);
});

// #case=<id> (the Slack message's "Open in dashboard") opens the panel on that case.
function caseFromHash() {
  const match = /(?:^#|&)case=([0-9a-f]{24})(?:&|$)/.exec(window.location.hash);
  if (!match) return;
  openCases(true);
  showCase(match[1]);
}
window.addEventListener("hashchange", caseFromHash);
caseFromHash();

function pollCases() {
  refreshCaseCount();
  if (cases.open && Date.now() - cases.refreshedAt >= CASES_MS) refreshCases();
}
setInterval(pollCases, CASES_MS);
pollCases();


// ---------------------------------------------------------------- rule outcomes

// Each rule version's alerts of the last day judged by the labels (GET /outcomes: cases
// closed, chargebacks imported): precision, recall against every labelled fraud, amount
// caught. Read from the archive in the worker's archive process (one computation at a
// time, kept a minute there), so asked for every half-minute, with the API token.
const OUTCOMES_MS = 30000;
const OUTCOMES_DAYS = 1;
const outcomes = { token: "", due: 0, body: null, note: "" };
state.outcomes = outcomes; // for the browser test

function fmtRatio(value) {
  return value == null ? "–" : `${Math.round(value * 100)} %`;
}

function fmtAmounts(amounts) {
  const entries = Object.entries(amounts || {});
  if (!entries.length) return "–";
  return entries.map(([currency, amount]) => `${Number(amount).toLocaleString("en-US", { maximumFractionDigits: 2 })} ${currency}`).join(", ");
}

function outcomeRow(o) {
  const labelled = o.fraud_alerts + o.not_fraud_alerts;
  return el("tr", { "data-rule": `${o.rule_id}@${o.rule_version}` },
    el("td", { class: "mono", title: `${o.rule_id} v${o.rule_version}` }, `${o.rule_id} v${o.rule_version}`),
    el("td", {}, el("span", { class: `badge ${o.status}` }, o.status)),
    el("td", { class: "num" }, fmtInt(o.alerts)),
    el("td", { class: "num", title: "closed cases holding these alerts" }, fmtInt(o.cases)),
    el("td", { class: "num" }, fmtInt(o.fraud_alerts)),
    el("td", { class: "num" }, fmtInt(o.not_fraud_alerts)),
    el("td", { class: "num", title: `${o.inconclusive_alerts} inconclusive besides` }, fmtInt(o.unlabelled_alerts)),
    el("td", { class: "num", title: `${o.fraud_alerts} fraud of ${labelled} labelled alerts` }, fmtRatio(o.precision)),
    el("td", { class: "num", title: `${o.fraud_payments_caught} of ${o.fraud_payments} labelled-fraud payments` }, fmtRatio(o.recall)),
    el("td", { class: "num caught", title: fmtAmounts(o.amount_caught) }, fmtAmounts(o.amount_caught)));
}

function renderOutcomes() {
  const tbody = $("outcomes");
  if (!apiToken()) {
    replaceRows(tbody, [el("tr", { class: "empty" }, el("td", { colspan: 10 },
      "Outcomes read the archive: they need the API token",
      el("button", { class: "evidence token", type: "button", "data-action": "token",
        title: tokenRefused || "Show the rules' outcomes: needs the worker's API token" }, "outcomes…")))], "", 10);
    $("outcomes-summary").textContent = "last 24 hours, judged by the labels";
    return;
  }
  const body = outcomes.body;
  if (!body) {
    replaceRows(tbody, [], outcomes.note || "Reading the archive…", 10);
    return;
  }
  replaceRows(tbody, body.rules.map(outcomeRow), "No alerts archived in the last 24 hours", 10);
  $("outcomes-summary").textContent = `last 24 h: ${fmtInt(body.labels)} labels, `
    + `${fmtInt(body.fraud_payments)} fraud payments, `
    + `${fmtInt(body.missed_by_active_rules)} missed by all active rules`
    + (outcomes.note ? ` (${outcomes.note})` : "");
}

function pollOutcomes() {
  const token = apiToken();
  if (outcomes.token !== token) Object.assign(outcomes, { token, due: 0, body: null, note: "" });
  if (!token || Date.now() < outcomes.due) return;
  outcomes.due = Infinity;
  fetch(`/outcomes?days=${OUTCOMES_DAYS}`, {
    cache: "no-store",
    headers: { Accept: "application/json", Authorization: `Bearer ${token}` },
  })
    .then(async (response) => ({ status: response.status, body: await response.json(), retry: response.headers.get("Retry-After") }))
    .catch(() => ({ status: 0, body: { error: "no answer" } }))
    .then(({ status, body, retry }) => {
      if (apiToken() !== token) return; // a reply for a token since replaced or refused
      if (status === 200) {
        Object.assign(outcomes, { body, note: "", due: Date.now() + OUTCOMES_MS });
      } else if (status === 401) {
        tokenRefused = `The worker refused the token (${body.error}); enter it again`;
        setApiToken("");
      } else if (status === 429) {
        const seconds = Number(retry);
        outcomes.due = Date.now() + 1000 * (seconds > 0 ? seconds : 5);
      } else {
        Object.assign(outcomes, { note: body.error || `HTTP ${status}`, due: Date.now() + OUTCOMES_MS });
      }
      renderOutcomes();
    });
}

$("outcomes-section").addEventListener("click", (event) => {
  if (event.target.closest("[data-action=token]")) askToken();
});

// ---------------------------------------------------------------- lists

// The named lists and the suppressions in force, as this worker's follower holds them
// (GET /lists, /lists/{name}, /suppressions?active=true: read freely). The header counts the
// lists; the panel shows each with its kind and entry count, the entries of the one picked
// (at most LIST_LIMIT of them) and the suppressions in force now.
const LISTS_MS = 5000;
const LIST_LIMIT = 200;
const lists = { open: false, selected: null, names: [], entries: null, suppressions: null, refreshedAt: 0 };
state.lists = lists; // for the browser test

function fmtUntil(until) {
  return until ? until.replace("T", " ").replace(/\.\d+Z$/, "Z") : "until removed";
}

function fmtShown(body, one, many) {
  const what = body.count === 1 ? one : many;
  return body.count > body.entries.length ? `${body.entries.length} of ${fmtInt(body.count)} ${what} shown` : `${fmtInt(body.count)} ${what}`;
}

async function refreshLists() {
  lists.refreshedAt = Date.now();
  try {
    const summary = await getJson("/lists?limit=0");
    if (summary.status !== 200) throw new Error(summary.body.error || `HTTP ${summary.status}`);
    lists.names = summary.body.lists;
    lists.loaded = summary.body.loaded;
    $("lists-toggle").textContent = `lists: ${lists.names.length}`;
    if (!lists.open) return;
    const asks = [getJson(`/suppressions?active=true&limit=${LIST_LIMIT}`)];
    if (lists.selected) asks.push(getJson(`/lists/${encodeURIComponent(lists.selected)}?limit=${LIST_LIMIT}`));
    const [suppressions, entries] = await Promise.all(asks);
    lists.suppressions = suppressions.status === 200 ? suppressions.body : null;
    lists.entries = entries && entries.status === 200 ? entries.body : null;
    renderLists();
  } catch (err) {
    $("lists-toggle").textContent = "lists: –";
    replaceRows($("lists"), [], `Lists unavailable: ${err}`, 3);
  }
}

function entryCells(e) {
  return [
    el("td", { class: "mono", title: fmtUntil(e.until) }, fmtUntil(e.until)),
    el("td", { title: e.reason }, e.reason),
    el("td", {}, e.by || "–"),
  ];
}

function renderLists() {
  $("lists-count").textContent = lists.loaded === false ? "loading…" : `${lists.names.length} held by this worker`;
  replaceRows($("lists"), lists.names.map((l) => el("tr", {
    "data-list": l.list, class: l.list === lists.selected ? "selected" : "",
  },
  el("td", { class: "mono" }, l.list),
  el("td", {}, l.bin_list ? "BINs" : "values"),
  el("td", { class: "num" }, fmtInt(l.entries)))), "No list has an entry", 3);
  const entries = lists.entries;
  $("list-entries-title").textContent = lists.selected ? `${lists.selected}: ${entries ? fmtShown(entries, "entry", "entries") : "…"}` : "pick a list";
  replaceRows($("list-entries"), entries ? entries.entries.map((e) => el("tr", { "data-value": e.value },
    el("td", { class: "mono" }, e.value), ...entryCells(e))) : [],
    lists.selected ? "No entries" : "Pick a list to see its entries", 4);
  const suppressions = lists.suppressions;
  $("suppressions-count").textContent = suppressions ? fmtShown(suppressions, "in force", "in force") : "";
  replaceRows($("suppressions"), suppressions ? suppressions.entries.map((e) => el("tr", { "data-rule": e.rule_id },
    el("td", { class: "mono" }, e.rule_id), el("td", { class: "mono" }, e.key), ...entryCells(e))) : [],
    suppressions ? "No suppression in force" : "Suppressions unavailable", 5);
}

function openLists(open) {
  lists.open = open;
  if (open && cases.open) openCases(false); // one panel at a time: they take the same place
  $("lists-panel").hidden = !open;
  $("lists-toggle").dataset.open = String(open);
  $("lists-toggle").setAttribute("aria-expanded", String(open));
  if (open) refreshLists();
}

$("lists-toggle").addEventListener("click", () => openLists(!lists.open));
$("lists-close").addEventListener("click", () => openLists(false));
$("cases-toggle").addEventListener("click", () => { if (cases.open) openLists(false); });
$("lists").addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-list]");
  if (!row) return;
  lists.selected = row.dataset.list;
  lists.entries = null;
  renderLists();
  refreshLists();
});
setInterval(refreshLists, LISTS_MS);
refreshLists();

// ---------------------------------------------------------------- loop

async function poll() {
  // The first poll asks for the whole window; later ones only for the newest seconds.
  const history = state.polls === 0 ? WINDOW_S : 5;
  try {
    const [stats, alerts, health, ready] = await Promise.all([
      getJson(`/stats?history=${history}`),
      getJson(`/alerts?limit=${FEED_LIMIT}`),
      getJson("/healthz").catch(() => null),
      getJson("/readyz").catch(() => null),
    ]);
    renderStats(stats.body);
    renderAlerts(alerts.body);
    pollOutcomes();
    renderOutcomes();
    renderProbe("health", "health", health, "ok");
    renderProbe("ready", "ready", ready, "yes");
    drawCharts();
    state.polls += 1;
    state.lastPollAt = Date.now();
    document.body.dataset.polls = String(state.polls);
    $("updated").textContent = `updated ${fmtTime(new Date())}`;
    $("banner").hidden = true;
  } catch (err) {
    state.errors += 1;
    $("banner").hidden = false;
    console.warn("poll failed", err);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

window.addEventListener("resize", drawCharts);
poll();
