// The page's one script. It talks only to the gateway that served it (CSP connect-src 'self'),
// builds every element with textContent (review text is never parsed as HTML), and keeps an
// API key in sessionStorage: this tab only, gone when it closes.
"use strict";

const KEY_STORE = "sentiment-gateway-api-key";
const POLL_MS = 5000;
const MAX_ROWS = 1000;
const TOP_TERMS = 15;
const NEGATIONS = new Set(["not", "no", "never", "nor", "cannot"]);
const CLAUSE_END = /^[.!?;:,()"]$/;
// Words (with inner apostrophes) and the punctuation that ends a negation's clause, as the
// model's cleaning reads them.
const TOKEN = /[\p{L}]+(?:['’][\p{L}]+)*|[.!?;:,()"]/gu;

const $ = (id) => document.getElementById(id);
const state = { version: null, retry: null, rows: [], downloadUrl: null };

// --- talking to the gateway -----------------------------------------------------------------

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

async function call(path, body) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method: body === undefined ? "GET" : "POST", headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    return { ok: false, status: 0, error: "The gateway did not answer. Is it running?" };
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401) askForKey();
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : null;
    return { ok: false, status: response.status, error: detail || `HTTP ${response.status}` };
  }
  return { ok: true, status: response.status, data, headers: response.headers };
}

// --- API key --------------------------------------------------------------------------------

function askForKey() {
  const section = $("key-section");
  if (!section.hidden) return;
  section.hidden = false;
  const error = $("key-error");
  error.hidden = !apiKey();
  error.textContent = apiKey() ? "The gateway refused this key. Enter another one." : "";
}

function saveKey(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) {
    $("key-error").textContent = "Enter a key.";
    $("key-error").hidden = false;
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  $("key-input").value = "";
  $("key-section").hidden = true;
  refreshModel();
  const retry = state.retry;
  state.retry = null;
  if (retry) retry();
}

// --- the model in the header ----------------------------------------------------------------

function show(id, text, className) {
  const element = $(id);
  element.textContent = text;
  if (className !== undefined) element.className = className;
}

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return `${date.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

function percent(value) {
  return typeof value === "number" ? `${(value * 100).toFixed(1)} %` : "—";
}

async function refreshModel() {
  const health = await call("/health");
  if (!health.ok) {
    show("model-status", "unreachable", "status-unreachable");
    return;
  }
  const { status, model_version: version } = health.data;
  show("model-status", status, `status-${status}`);
  show("model-version", version || "none");
  if (version && state.version && version !== state.version) {
    show("model-news", `Now serving ${version} (was ${state.version}).`);
  }
  if (version) state.version = version;
  if (!version) return;
  const info = await call("/info");
  if (!info.ok) {
    if (info.status === 401) {
      show("model-registered", "API key needed");
      show("model-accuracy", "API key needed");
    }
    return;
  }
  const { metrics = {}, tags = {}, monitoring = null } = info.data;
  show("model-registered", when(info.data.registered_at));
  show("model-accuracy", percent(metrics.test_accuracy));
  const verdict = tags["monitoring.verdict"] || (monitoring && monitoring.verdict);
  $("model-verdict-item").hidden = !verdict;
  if (verdict) show("model-verdict", verdict, `verdict-${verdict}`);
  // The version's page in the MLflow UI, where its model card is its description.
  const card = typeof info.data.model_card === "string" ? info.data.model_card : "";
  const linked = /^https?:\/\//.test(card);
  $("model-card-item").hidden = !linked;
  if (linked) $("model-card").href = card;
}

// --- one review -----------------------------------------------------------------------------

function setBusy(button, busy, label) {
  button.disabled = busy;
  button.classList.toggle("busy", busy);
  button.textContent = label;
  button.closest("form, section").setAttribute("aria-busy", String(busy));
}

function showError(id, message) {
  const element = $(id);
  element.textContent = message || "";
  element.hidden = !message;
}

async function analyze() {
  const button = $("analyze");
  if (button.disabled) return;
  const text = $("review").value;
  showError("review-error", "");
  setBusy(button, true, "Analyzing…");
  try {
    const answer = await call("/predict", { text, explain: true, top_terms: TOP_TERMS });
    if (!answer.ok) {
      if (answer.status === 401) state.retry = analyze;
      showError("review-error", answer.error);
      return;
    }
    const terms = answer.data.explanation || [];
    showResult(text, answer.data, terms);
  } finally {
    setBusy(button, false, "Analyze");
  }
}

function showResult(text, prediction, terms) {
  const sentiment = prediction.sentiment;
  show("result-sentiment", sentiment === "positive" ? "Positive" : "Negative", sentiment);
  show("result-confidence", `${percent(prediction.confidence)} confident`);
  show("result-version", `by ${prediction.model_version}`);
  $("result-meter").value = prediction.confidence;
  $("result-note").hidden = !prediction.no_known_terms;
  highlight($("result-text"), text, terms);
  const list = $("result-terms");
  list.replaceChildren();
  for (const { term, weight } of terms) {
    const item = document.createElement("li");
    const name = document.createElement("mark");
    name.className = `term ${weight >= 0 ? "pos" : "neg"} ${strength(weight, terms)}`;
    name.textContent = term;
    const value = document.createElement("span");
    value.className = "weight";
    value.textContent = `${weight >= 0 ? "+" : "−"}${Math.abs(weight).toFixed(2)}`;
    item.append(name, value);
    list.append(item);
  }
  if (!terms.length) {
    const item = document.createElement("li");
    item.textContent = "No known terms.";
    list.append(item);
  }
  $("result").hidden = false;
}

function strength(weight, terms) {
  const top = Math.max(...terms.map((t) => Math.abs(t.weight)), 1e-9);
  return `s${Math.max(1, Math.ceil((4 * Math.abs(weight)) / top))}`;
}

// Each word of the review gets the weight of the strongest listed term it is part of. A word
// in a negation's clause ("didn't like") looks for the model's negated term (not_like) first.
function highlight(target, text, terms) {
  const byWord = new Map();
  for (const { term, weight } of terms) {
    for (const word of term.split(" ")) {
      const known = byWord.get(word);
      if (known === undefined || Math.abs(weight) > Math.abs(known.weight)) {
        byWord.set(word, { term, weight });
      }
    }
  }
  target.replaceChildren();
  let last = 0;
  let negated = false;
  for (const match of text.matchAll(TOKEN)) {
    const token = match[0];
    if (CLAUSE_END.test(token)) {
      negated = false;
      continue;
    }
    const lower = token.toLowerCase().replaceAll("’", "'");
    let keys;
    let negates = false;
    if (lower.endsWith("n't")) {
      keys = ["not", lower.slice(0, -3).replaceAll("'", "")];
      negates = true;
    } else if (NEGATIONS.has(lower)) {
      keys = [lower];
      negates = true;
    } else {
      const word = lower.replaceAll("'", "");
      keys = negated ? [`not_${word}`, word] : [word];
    }
    const found = keys.map((key) => byWord.get(key)).find(Boolean);
    if (negates) negated = true;
    if (!found) continue;
    target.append(text.slice(last, match.index));
    const mark = document.createElement("mark");
    mark.className = `term ${found.weight >= 0 ? "pos" : "neg"} ${strength(found.weight, terms)}`;
    mark.title = `${found.term}: ${found.weight >= 0 ? "+" : "−"}${Math.abs(found.weight)}`;
    mark.textContent = token;
    target.append(mark);
    last = match.index + token.length;
  }
  target.append(text.slice(last));
}

// --- many reviews ---------------------------------------------------------------------------

// RFC 4180: quoted fields may hold commas, quotes ("") and line breaks.
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (c === '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c === '"' && field === "") {
      quoted = true;
    } else if (c === ",") {
      row.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else {
      field += c;
    }
  }
  if (field !== "" || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

// The reviews in a file: a CSV's `text` or `review` column, else one review per line.
function reviewsIn(name, content) {
  content = content.replace(/^\uFEFF/, "");
  const rows = parseCsv(content);
  const header = (rows[0] || []).map((cell) => cell.trim().toLowerCase());
  const column = ["text", "review"].map((n) => header.indexOf(n)).find((i) => i >= 0);
  if (column !== undefined) {
    return rows.slice(1).map((row) => row[column] || "").filter((t) => t.trim());
  }
  if (/\.csv$/i.test(name) && header.length > 1) {
    throw new Error("A CSV file needs a column named text or review.");
  }
  return content.split(/\r\n|\n|\r/).filter((line) => line.trim());
}

async function scoreFile(file) {
  showError("batch-error", "");
  $("batch-result").hidden = true;
  if (!file) return;
  const busy = $("batch-busy");
  busy.textContent = `Reading ${file.name}…`;
  busy.classList.add("busy");
  try {
    let texts;
    try {
      texts = reviewsIn(file.name, await file.text());
    } catch (error) {
      showError("batch-error", error.message);
      return;
    }
    if (!texts.length) {
      showError("batch-error", `${file.name} holds no reviews.`);
      return;
    }
    if (texts.length > MAX_ROWS) {
      const count = texts.length.toLocaleString("en");
      const most = MAX_ROWS.toLocaleString("en");
      showError("batch-error", `${file.name} holds ${count} reviews; at most ${most} at a time.`);
      return;
    }
    busy.textContent = `Analyzing ${texts.length} reviews…`;
    const answer = await call("/predict/batch", { texts });
    if (!answer.ok) {
      if (answer.status === 401) state.retry = () => scoreFile(file);
      showError("batch-error", answer.error);
      return;
    }
    state.rows = texts.map((text, i) => ({
      row: i + 1,
      text,
      ...answer.data.predictions[i],
      model_version: answer.data.model_version,
    }));
    renderTable(file.name);
  } finally {
    busy.textContent = "";
    busy.classList.remove("busy");
  }
}

function renderTable(name) {
  const body = $("batch-table").tBodies[0];
  const fragment = document.createDocumentFragment();
  for (const r of state.rows) {
    const tr = document.createElement("tr");
    tr.dataset.sentiment = r.sentiment;
    const cells = [
      [String(r.row), "num"],
      [r.text, "text"],
      [r.sentiment, r.sentiment],
      [percent(r.confidence), "num"],
    ];
    for (const [value, className] of cells) {
      const td = document.createElement("td");
      td.className = className;
      td.textContent = value;
      tr.append(td);
    }
    fragment.append(tr);
  }
  body.replaceChildren(fragment);
  $("batch-result").hidden = false;
  $("batch-download").download = `${name.replace(/\.[^.]*$/, "")}-sentiment.csv`;
  applyFilter();
}

// A review that starts like a formula (=, +, -, @, tab, carriage return) would run as one when
// the file is opened in a spreadsheet: a leading ' makes it text.
function csvField(value) {
  let text = value === undefined || value === null ? "" : String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function applyFilter() {
  const wanted = $("batch-filter").value;
  const shown = state.rows.filter((r) => wanted === "all" || r.sentiment === wanted);
  for (const tr of $("batch-table").tBodies[0].rows) {
    tr.hidden = wanted !== "all" && tr.dataset.sentiment !== wanted;
  }
  const positive = state.rows.filter((r) => r.sentiment === "positive").length;
  show(
    "batch-summary",
    `${state.rows.length} reviews: ${positive} positive, ${state.rows.length - positive} negative` +
      ` (${state.rows[0] ? state.rows[0].model_version : ""}). Showing ${shown.length}.`,
  );
  const columns = ["row", "text", "sentiment", "confidence", "no_known_terms", "model_version"];
  const lines = [columns.join(",")];
  for (const r of shown) lines.push(columns.map((c) => csvField(r[c])).join(","));
  if (state.downloadUrl) URL.revokeObjectURL(state.downloadUrl);
  state.downloadUrl = URL.createObjectURL(
    new Blob([`${lines.join("\r\n")}\r\n`], { type: "text/csv;charset=utf-8" }),
  );
  const link = $("batch-download");
  link.href = state.downloadUrl;
  link.textContent = `Download ${shown.length} rows (CSV)`;
}

// --- wiring ---------------------------------------------------------------------------------

function start() {
  $("review-form").addEventListener("submit", (event) => {
    event.preventDefault();
    analyze();
  });
  $("review").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      analyze();
    }
  });
  $("review").addEventListener("input", () => {
    $("review-count").textContent = $("review").value.length.toLocaleString("en");
  });
  $("key-form").addEventListener("submit", saveKey);
  $("batch-file").addEventListener("change", (event) => scoreFile(event.target.files[0]));
  $("batch-filter").addEventListener("change", applyFilter);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    scoreFile(event.dataTransfer.files[0]);
  });
  refreshModel();
  // A tab in the background does not poll; it catches up when shown again.
  setInterval(() => document.hidden || refreshModel(), POLL_MS);
  document.addEventListener("visibilitychange", () => document.hidden || refreshModel());
}

start();
