// photo-enhance page: plain JavaScript, no build step. The task list and each task's
// parameters (ranges, defaults, descriptions) come from the gateway's own /openapi.json.
// URLs are relative, so the page also works behind a path prefix (its URL ending in "/").
"use strict";

const TASK_ORDER = ["restore", "colorize", "face-restore", "upscale", "pipeline"];
// Models each task needs, to mark a task whose model /health reports as not ready.
const TASK_MODELS = {
  colorize: ["colorize"],
  restore: ["restore"],
  "face-restore": ["face-restore"],
  upscale: ["upscale"],
  pipeline: ["colorize", "restore", "upscale", "face-restore"],
};
const FORMAT = "output_format";

const $ = (id) => document.getElementById(id);
const state = {
  api: null,
  health: {},
  file: null,
  fileURL: null,
  resultURL: null,
  controller: null,
  ticker: null,
  countdown: null,
  since: 0, // performance.now() when the run (its job) began
  job: null, // the job followed
  events: null, // its EventSource
  steps: [], // the pipeline's step names seen so far
  healthTimer: null,
  result: null, // the shown result: {blob, name}
};
// /health is read every HEALTH_FAST_MS while a model is not ready (starting), else every
// HEALTH_SLOW_MS: a model that becomes ready turns green within about 2 s.
const HEALTH_FAST_MS = 2000;
const HEALTH_SLOW_MS = 30000;

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- messages -------------------------------------------------------------------------------

function showMessage(kind, text, items) {
  const box = $("message");
  stopCountdown();
  box.replaceChildren();
  box.className = `message ${kind}`;
  box.append(el("p", {}, text));
  if (items && items.length) {
    const list = el("ul");
    for (const item of items) list.append(el("li", {}, item));
    box.append(list);
  }
  box.hidden = false;
}

function clearMessage() {
  stopCountdown();
  $("message").hidden = true;
  for (const node of document.querySelectorAll(".field-error")) {
    node.hidden = true;
    node.textContent = "";
  }
  for (const node of document.querySelectorAll("[aria-invalid]")) {
    node.removeAttribute("aria-invalid");
  }
}

function stopCountdown() {
  if (state.countdown) clearInterval(state.countdown);
  state.countdown = null;
}

// The gateway's detail for people: its operator's setting names ("(MAX_UPLOAD_MB)", "(PREDICTOR_X
// or --predictor_x)", ", MAX_QUEUE_PER_TASK)") are for the API and the log, not for this page.
const SETTING = String.raw`[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+`;
const SETTING_ALONE = new RegExp(String.raw`\s*\(${SETTING}(?:\s+or\s+--[\w-]+)?\)`, "g");
const SETTING_LAST = new RegExp(String.raw`,\s*${SETTING}(?=\))`, "g");

function forPeople(text) {
  return text.replace(SETTING_ALONE, "").replace(SETTING_LAST, "");
}

function detailText(detail) {
  if (typeof detail === "string") return forPeople(detail);
  if (detail === undefined || detail === null) return "";
  return JSON.stringify(detail);
}

// ---- input ----------------------------------------------------------------------------------

// What the gateway decodes (CONTRACT section 1): refused here at once, before Run.
const IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff"];
const IMAGE_EXTENSIONS = /\.(jpe?g|png|webp|bmp|tiff?)$/i;

function isImage(file) {
  if (file.type) return IMAGE_TYPES.includes(file.type);
  return IMAGE_EXTENSIONS.test(file.name || "");
}

function setFile(file) {
  if (!file) return;
  if (!isImage(file)) {
    $("file").value = "";
    showMessage("error", `${file.name || "This file"} is not a photo this server accepts${file.type ? ` (${file.type})` : ""}. Choose a JPEG, PNG, WebP, BMP or TIFF photo.`);
    return;
  }
  state.file = file;
  if (state.fileURL) URL.revokeObjectURL(state.fileURL);
  state.fileURL = URL.createObjectURL(file);
  const img = $("preview-img");
  const info = $("preview-info");
  info.textContent = `${file.name || "pasted image"} · ${formatBytes(file.size)}`;
  img.onload = () => {
    info.textContent = `${file.name || "pasted image"} · ${img.naturalWidth}×${img.naturalHeight} px · ${formatBytes(file.size)}`;
  };
  img.onerror = () => {
    info.textContent = `${file.name || "file"} · ${formatBytes(file.size)} (no preview in this browser)`;
  };
  img.src = state.fileURL;
  $("preview").hidden = false;
  clearMessage();
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function wireInput() {
  $("file").addEventListener("change", (event) => setFile(event.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    setFile(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) setFile(file);
  });
  for (const button of document.querySelectorAll("[data-example]")) {
    button.addEventListener("click", () => useExample(button));
  }
}

// An example photo shipped with the page (ui/examples/), and the task it shows off.
async function useExample(button) {
  const name = button.dataset.example;
  let blob;
  try {
    const res = await fetch(`ui/examples/${name}`);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    blob = await res.blob();
  } catch (err) {
    showMessage("error", `Could not load the example (${err.message}). Reload the page.`);
    return;
  }
  setFile(new File([blob], name, { type: blob.type || "image/jpeg" }));
  const option = $("task").querySelector(`option[value="${button.dataset.task}"]`);
  if (option && !option.disabled && $("task").value !== option.value) {
    $("task").value = option.value;
    buildParams();
  }
}

// ---- settings from /openapi.json ------------------------------------------------------------

// "face-restore (not ready)": short, so that a phone's select shows it whole; what the task
// does is written under the select (renderAbout).
function taskLabel(task, notReady, notOffered) {
  const state = notOffered ? " (not offered here)" : notReady ? " (not ready)" : "";
  return `${task}${state}`;
}

function operation(task) {
  return state.api?.paths?.[`/${task}`]?.post;
}

// A rule the schema states as anyOf (the tile sizes: [{const: 0}, {minimum: N}]) is in the
// parameter's own description ("0 = whole image at once, else at least N"), not a plain range.
function rangeText(schema) {
  const parts = [];
  if (schema.anyOf) {
    // the description says it
  } else if (schema.minimum !== undefined && schema.maximum !== undefined) {
    parts.push(`${schema.minimum}–${schema.maximum}`);
  } else if (schema.minimum !== undefined) {
    parts.push(`≥ ${schema.minimum}`);
  } else if (schema.maximum !== undefined) {
    parts.push(`≤ ${schema.maximum}`);
  }
  if (schema.default !== undefined) parts.push(`default ${schema.default}`);
  return parts.join(", ");
}

function control(param) {
  const schema = param.schema || {};
  const id = `p-${param.name}`;
  const field = el("div", { class: "field" });
  const help = [param.description || schema.description, rangeText(schema)]
    .filter(Boolean)
    .join(" ");
  const helpId = `${id}-help`;
  const errorId = `${id}-error`;
  let input;
  if (schema.type === "boolean") {
    input = el("input", { type: "checkbox", id, name: param.name });
    input.checked = Boolean(schema.default);
    field.classList.add("check");
  } else if (schema.enum) {
    input = el("select", { id, name: param.name });
    for (const value of schema.enum) input.append(el("option", { value }, value));
    if (schema.default !== undefined) input.value = schema.default;
  } else if (schema.type === "integer" || schema.type === "number") {
    const small = schema.type === "number" && schema.maximum - schema.minimum <= 1;
    input = el("input", {
      type: "number",
      id,
      name: param.name,
      min: schema.minimum,
      max: schema.maximum,
      step: schema.type === "integer" ? 1 : small ? 0.05 : "any",
      inputmode: schema.type === "integer" ? "numeric" : "decimal",
    });
    if (schema.default !== undefined) input.value = schema.default;
  } else {
    input = el("input", { type: "text", id, name: param.name });
    if (schema.default !== undefined) input.value = schema.default;
  }
  input.dataset.param = param.name;
  input.setAttribute("aria-describedby", `${helpId} ${errorId}`);
  const label = el("label", { for: id }, schema.title || param.name);
  if (schema.type === "boolean") field.append(input, label);
  else field.append(label, input);
  field.append(el("small", { id: helpId, class: "hint" }, help));
  const error = el("span", { id: errorId, class: "field-error" });
  error.hidden = true;
  field.append(error);
  return field;
}

// The pipeline's options that belong to one step (shown after it, disabled while it is off).
const STEP_OPTIONS = {
  render_factor: "colorize",
  restore_tile_size: "restore",
  upscale_tile_size: "upscale",
  fidelity: "face_restore",
  only_center_face: "face_restore",
  colorize_model: "colorize",
  restore_model: "restore",
  upscale_model: "upscale",
  face_restore_model: "face_restore",
};

// A model choice (`model`, or a pipeline step's `<step>_model`): the server lists its models in
// the schema's enum; shown only where the task has more than one.
function isModelChoice(param) {
  return param.name === "model" || param.name.endsWith("_model");
}

function syncSteps() {
  if ($("task").value !== "pipeline") return;
  for (const [param, step] of Object.entries(STEP_OPTIONS)) {
    const input = $(`p-${param}`);
    if (input) input.disabled = !stepOn($(`p-${step}`));
  }
}

function buildParams() {
  const task = $("task").value;
  const params = (operation(task)?.parameters || []).filter((p) => p.in === "query");
  const previousFormat = $(`p-${FORMAT}`)?.value;
  const box = $("params");
  box.replaceChildren(el("legend", {}, "Parameters"));
  const own = params.filter((p) => p.name !== FORMAT);
  if (!own.length) box.append(el("p", { class: "hint" }, "This task has no parameters."));
  for (const param of own) {
    if (isModelChoice(param) && (param.schema?.enum || []).length < 2) continue;
    const field = control(param);
    if (task === "pipeline" && STEP_OPTIONS[param.name]) field.classList.add("step-option");
    box.append(field);
  }
  box.onchange = () => {
    syncSteps();
    renderTaskNote(); // the pipeline's steps decide which models it needs
  };
  syncSteps();
  const format = params.find((p) => p.name === FORMAT);
  const formatBox = $("format-box");
  formatBox.replaceChildren();
  if (format) {
    formatBox.append(control(format));
    if (previousFormat) $(`p-${FORMAT}`).value = previousFormat;
  }
  renderTaskNote();
}

function query() {
  const search = new URLSearchParams();
  for (const input of document.querySelectorAll("[data-param]")) {
    if (input.type === "checkbox") search.set(input.dataset.param, String(input.checked));
    else if (input.value !== "") search.set(input.dataset.param, input.value);
  }
  return search;
}

async function loadApi() {
  try {
    const res = await fetch("openapi.json");
    state.api = await res.json();
  } catch (err) {
    showMessage("error", `Could not read /openapi.json (${err.message}). Reload the page.`);
    return;
  }
  const select = $("task");
  for (const task of TASK_ORDER) {
    const op = operation(task);
    if (op) select.append(el("option", { value: task }, taskLabel(task, false)));
  }
  select.addEventListener("change", () => {
    buildParams();
    clearMessage();
  });
  buildParams();
  renderHealth();
}

// ---- health ---------------------------------------------------------------------------------

// Read /health now, then again soon while a model is not ready (starting), else rarely.
async function refreshHealth() {
  clearTimeout(state.healthTimer);
  let next = HEALTH_SLOW_MS;
  try {
    const res = await fetch("health");
    state.health = (await res.json()).models || {};
    renderHealth();
    if (Object.keys(state.health).some((m) => offered(m) && !state.health[m].ready)) {
      next = HEALTH_FAST_MS;
    }
  } catch (err) {
    state.health = {};
    $("health").replaceChildren(el("li", { class: "not-ready" }, `Could not reach the server (${err.message}); trying again.`));
    next = HEALTH_FAST_MS;
  }
  state.healthTimer = setTimeout(refreshHealth, next);
}

// A model's state in words for people (/health's `state`; no addresses, no gRPC names).
function stateText(name) {
  const entry = state.health[name];
  if (!offered(name)) return "not offered by this server";
  if (entry.ready) {
    const facts = [entry.variant, entry.device].filter((v) => v && v !== "unknown").join(", ");
    return `ready${facts ? ` (${facts})` : ""}`;
  }
  if (entry.state === "unavailable") return "not available right now (restarting or down)";
  return "starting…"; // loading its model, or its server not up yet
}

function licenceText(about) {
  return `${about.model} · ${about.licence}`;
}

function renderHealth() {
  const list = $("health");
  const models = Object.entries(state.health);
  if (!models.length) return;
  list.replaceChildren();
  for (const [name, entry] of models) {
    const kind = offered(name) ? (entry.ready ? "ready" : "not-ready") : "not-offered";
    const item = el("li", { class: kind, "data-model": name, "data-state": entry.state });
    item.append(el("span", { class: "dot", "aria-hidden": "true" }));
    item.append(el("strong", {}, name));
    item.append(document.createTextNode(` ${stateText(name)}`));
    if (entry.about) {
      const about = el("small", { class: "model-licence" }, licenceText(entry.about));
      if (entry.about.commercial_use === false) about.classList.add("non-commercial");
      item.append(about);
    }
    list.append(item);
  }
  const select = $("task");
  for (const option of select.options) {
    const missing = notReady(option.value);
    // Greyed out when the server serves none of the task's models (it will not come back).
    const gone = (TASK_MODELS[option.value] || []).every((m) => !offered(m));
    option.textContent = taskLabel(option.value, missing.length > 0, gone);
    option.classList.toggle("not-ready", missing.length > 0);
    option.disabled = gone;
  }
  if (select.selectedOptions[0]?.disabled) {
    const usable = [...select.options].find((o) => !o.disabled);
    if (usable) {
      select.value = usable.value;
      buildParams();
    }
  }
  renderTaskNote();
}

// false when /health says the gateway has no predictor for the model (not configured).
function offered(model) {
  const entry = state.health[model];
  return !entry || (entry.predictor !== null && entry.state !== "not offered");
}

// The pipeline needs only the models of the steps switched on in the form.
const PIPELINE_STEPS = {
  colorize: "colorize",
  restore: "restore",
  upscale: "upscale",
  face_restore: "face-restore",
};

// A step's control: a checkbox, or colorize's auto/true/false select (auto may run it).
function stepOn(input) {
  if (!input) return true;
  return input.type === "checkbox" ? input.checked : input.value !== "false";
}

function neededModels(task) {
  if (task === "pipeline" && task === $("task").value) {
    return Object.entries(PIPELINE_STEPS)
      .filter(([param]) => stepOn($(`p-${param}`)))
      .map(([, model]) => model);
  }
  return TASK_MODELS[task] || [];
}

function notReady(task) {
  return neededModels(task).filter((m) => offered(m) && state.health[m] && !state.health[m].ready);
}

function renderTaskNote() {
  const note = $("task-note");
  const task = $("task").value;
  const missing = notReady(task);
  const absent = neededModels(task).filter((m) => !offered(m));
  const parts = [];
  if (absent.length) {
    parts.push(`This server does not offer ${absent.join(", ")}${task === "pipeline" ? ": switch that step off" : ""}.`);
  }
  if (missing.length) {
    parts.push(`Not ready yet: ${missing.map((m) => `${m} (${stateText(m)})`).join("; ")}. Running it now answers "not available, retry later".`);
  }
  note.textContent = parts.join(" ");
  note.classList.toggle("warn", parts.length > 0);
  renderAbout();
}

// The `about` of the model chosen for a task (its select, where the task has several models:
// /health's `models`), else of the task's default.
function chosenAbout(task) {
  const entry = state.health[task];
  if (!entry) return null;
  const param = $("task").value === "pipeline" ? `${task.replace("-", "_")}_model` : "model";
  const chosen = $(`p-${param}`)?.value;
  const model = (entry.models || []).find((m) => m.name === chosen);
  return model?.about || entry.about;
}

// What the task does and the licence of each model it uses (from /health's `about`).
function renderAbout() {
  const box = $("task-about");
  const task = $("task").value;
  box.replaceChildren();
  const summary = operation(task)?.summary;
  if (summary) box.append(el("p", { class: "summary" }, summary));
  const list = el("ul", { class: "about-models" });
  for (const model of neededModels(task)) {
    const about = chosenAbout(model);
    if (!about) continue;
    const item = el("li", { "data-about": model });
    item.append(el("strong", {}, `${about.model}: `), document.createTextNode(`${about.description} `));
    const licence = el("span", { class: "licence" }, `Licence: ${about.licence}.`);
    if (about.commercial_use === false) licence.classList.add("non-commercial");
    item.append(licence);
    list.append(item);
  }
  if (list.children.length) box.append(list);
}

// ---- running --------------------------------------------------------------------------------
// A run is a job (CONTRACT section 6): `Prefer: respond-async` answers 202 with the job, whose
// server-sent events carry its progress; the result comes from /result. The job's id is kept
// in the URL (?job=ID), so a reload or a tab opened again follows the same job. A gateway that
// answers the image at once (no jobs) is shown as before. A task whose model /health reports
// as not ready is sent without jobs: its 503 and Retry-After are shown at once.

const JOB_PARAM = "job";
const STEP_RE = /\(step (\d+) of (\d+)\)/;

function jobURL(id, tail = "") {
  return `v1/jobs/${encodeURIComponent(id)}${tail}`;
}

function busy(on, since = performance.now()) {
  $("run").disabled = on;
  $("cancel").hidden = !on;
  $("cancel").disabled = false;
  $("progress-box").hidden = !on;
  if (state.ticker) clearInterval(state.ticker);
  state.ticker = null;
  if (on) {
    state.since = since;
    resetProgress();
    tick();
    state.ticker = setInterval(tick, 100);
  }
}

function seconds(s) {
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
}

function tick() {
  $("elapsed").textContent = seconds(Math.max(0, (performance.now() - state.since) / 1000));
}

function resetProgress() {
  const bar = $("progress");
  bar.removeAttribute("value"); // indeterminate until the first progress
  $("percent").textContent = "";
  $("stage").textContent = "Sending the photo…";
  $("eta").textContent = "";
  $("steps").replaceChildren();
  $("steps").hidden = true;
  state.steps = [];
}

// performance.now() of a server time (RFC 3339), so elapsed counts from the job's creation.
function since(iso) {
  const at = Date.parse(iso || "");
  if (!Number.isFinite(at)) return performance.now();
  return performance.now() - Math.max(0, Date.now() - at);
}

function showProgress(job) {
  const { done, total, stage } = job.progress || { done: 0, total: 1, stage: "" };
  const bar = $("progress");
  if (job.status === "queued") {
    bar.removeAttribute("value");
    $("percent").textContent = "";
    $("stage").textContent = "Waiting for its turn (queued)…";
    return;
  }
  const pct = total > 0 ? Math.min(100, (100 * done) / total) : 0;
  bar.value = pct;
  $("percent").textContent = `${Math.floor(pct)}%`;
  $("stage").textContent = stage || job.status;
  // ETA from the rate so far, measured from the job's start on the server.
  const started = Date.parse(job.started_at || "");
  const ran = (Date.now() - started) / 1000;
  if (done > 0 && done < total && Number.isFinite(started) && ran > 0) {
    $("eta").textContent = `· about ${seconds((ran * (total - done)) / done)} left`;
  } else {
    $("eta").textContent = "";
  }
  showSteps(stage || "");
}

// "restore: tile 3 of 10 (step 1 of 2)": the pipeline's steps, those seen so far named.
function showSteps(stage) {
  const match = STEP_RE.exec(stage);
  if (!match) return;
  const k = Number(match[1]);
  const n = Number(match[2]);
  state.steps[k - 1] = stage.split(":")[0].trim();
  const list = $("steps");
  list.replaceChildren();
  for (let i = 0; i < n; i++) {
    const finished = i < k - 1 || (i === k - 1 && /: done\b/.test(stage));
    const now = i === k - 1 && !finished;
    const item = el("li", { class: finished ? "step-done" : now ? "step-now" : "step-next" });
    item.textContent = `${state.steps[i] || "…"}${finished ? " ✓" : now ? " (running)" : ""}`;
    if (now) item.setAttribute("aria-current", "step");
    list.append(item);
  }
  list.hidden = false;
}

function markStale(text) {
  if ($("result").hidden) return;
  $("result").classList.add("stale");
  $("stale").textContent = text;
  $("stale").hidden = false;
}

function setJobInURL(id) {
  const url = new URL(window.location.href);
  if (id) url.searchParams.set(JOB_PARAM, id);
  else url.searchParams.delete(JOB_PARAM);
  history.replaceState(null, "", url);
}

function remember(id, meta) {
  try {
    localStorage.setItem(`photo-enhance-job-${id}`, JSON.stringify(meta));
  } catch {
    // private mode: the download name falls back to the job's task
  }
}

function recall(id) {
  try {
    return JSON.parse(localStorage.getItem(`photo-enhance-job-${id}`) || "null");
  } catch {
    return null;
  }
}

function forget(id) {
  try {
    localStorage.removeItem(`photo-enhance-job-${id}`);
  } catch {
    // nothing kept
  }
}

async function run(event) {
  event.preventDefault();
  clearMessage();
  if (!state.file) {
    showMessage("error", "Choose a photo first (or drop or paste one).");
    $("file").focus();
    return;
  }
  const task = $("task").value;
  const search = query();
  const body = new FormData();
  body.append("file", state.file, state.file.name || "photo.png");
  state.controller = new AbortController();
  const start = performance.now();
  markStale("Previous result: a new run has started.");
  busy(true, start);
  $("cancel").focus();
  const headers = notReady(task).length ? {} : { Prefer: "respond-async" };
  let following = false;
  try {
    const res = await fetch(`${task}?${search}`, {
      method: "POST",
      body,
      headers,
      signal: state.controller.signal,
    });
    if (res.status === 202) {
      const job = await res.json();
      remember(job.id, { task, search: search.toString(), name: state.file.name || "" });
      following = true;
      follow(job);
      return;
    }
    if (!res.ok) {
      await showFailure(res);
      markStale("Previous result: the last run failed.");
      return;
    }
    const blob = await res.blob(); // a gateway without jobs answers the image itself
    showResult(blob, res.headers, task, search, (performance.now() - start) / 1000);
  } catch (err) {
    if (err.name === "AbortError") {
      showMessage("info", "Cancelled. The request was aborted.");
      markStale("Previous result: the last run was cancelled.");
    } else {
      showMessage("error", `Could not reach the gateway (${err.message}). Check that it runs, then try again.`);
      markStale("Previous result: the last run failed.");
    }
  } finally {
    state.controller = null;
    if (!following) idle();
  }
}

function idle() {
  const hadFocus = document.activeElement === $("cancel");
  busy(false);
  if (hadFocus || document.activeElement === document.body) $("run").focus();
}

// Follow a job's events until it ends. EventSource reconnects by itself after a dropped
// connection, sending the last event's id (Last-Event-ID).
function follow(job) {
  stopFollowing();
  state.job = job;
  setJobInURL(job.id);
  if ($("progress-box").hidden) busy(true, since(job.created_at));
  showProgress(job);
  if (job.status !== "queued" && job.status !== "running") {
    finish(job);
    return;
  }
  const events = new EventSource(jobURL(job.id, "/events"));
  state.events = events;
  const onEvent = (message) => {
    const current = JSON.parse(message.data);
    if (state.job?.id !== current.id) return;
    state.job = current;
    showProgress(current);
    if (message.type === "done") finish(current);
  };
  events.addEventListener("progress", onEvent);
  events.addEventListener("done", onEvent);
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) {
      // The stream ended without its done event (e.g. the job was deleted): read the job.
      stopFollowing();
      resume(job.id);
    }
  };
}

function stopFollowing() {
  if (state.events) state.events.close();
  state.events = null;
}

async function finish(job) {
  stopFollowing();
  state.job = null;
  const meta = recall(job.id) || {};
  if (job.status === "succeeded") {
    try {
      const res = await fetch(jobURL(job.id, "/result"));
      if (!res.ok) {
        await showFailure(res);
        markStale("Previous result: the last run failed.");
      } else {
        const blob = await res.blob();
        const search = new URLSearchParams(meta.search || "");
        const took = (Date.parse(job.finished_at) - Date.parse(job.created_at)) / 1000;
        showResult(blob, res.headers, meta.task || job.task, search, took, meta.name);
      }
    } catch (err) {
      showMessage("error", `Could not read the result (${err.message}). Reload the page to try again.`);
      idle();
      return;
    }
  } else if (job.status === "canceled") {
    showMessage("info", "Cancelled. The job was stopped on the server.");
    markStale("Previous result: the last run was cancelled.");
  } else {
    const error = job.error || {};
    showMessage("error", `${detailText(error.detail) || "The job failed."} (HTTP ${error.status ?? "?"})`);
    markStale("Previous result: the last run failed.");
  }
  forget(job.id);
  setJobInURL(null);
  idle();
}

// The job in the URL, after a reload or in a tab opened again.
async function resume(id) {
  busy(true);
  $("stage").textContent = "Reading the job…";
  let res;
  try {
    res = await fetch(jobURL(id));
  } catch (err) {
    showMessage("error", `Could not reach the gateway (${err.message}). Reload the page to try again.`);
    idle();
    return;
  }
  if (!res.ok) {
    showMessage("info", `The job ${id} is no longer on the server (finished long ago, or deleted).`);
    forget(id);
    setJobInURL(null);
    idle();
    return;
  }
  follow(await res.json());
}

async function cancel() {
  if (state.controller) {
    state.controller.abort(); // still uploading: no job yet
    return;
  }
  const job = state.job;
  if (!job) return;
  $("cancel").disabled = true;
  $("stage").textContent = "Cancelling…";
  try {
    const res = await fetch(jobURL(job.id, "/cancel"), { method: "POST" });
    if (res.ok) {
      const current = await res.json();
      if (current.status !== "queued" && current.status !== "running") finish(current);
    } else {
      $("cancel").disabled = false;
    }
  } catch (err) {
    $("cancel").disabled = false;
    showMessage("error", `Could not cancel (${err.message}); the job may still run.`);
  }
}

async function showFailure(res) {
  let detail;
  try {
    detail = (await res.json()).detail;
  } catch {
    detail = res.statusText;
  }
  const text = detailText(detail);
  switch (res.status) {
    case 422:
      showFieldErrors(detail);
      break;
    case 413:
      showMessage("error", `The photo is too large for this server: ${text}. Make it smaller (fewer pixels, or save it as JPEG) and try again.`);
      break;
    case 415:
      showMessage("error", `This file is not accepted: ${text}. Choose a JPEG, PNG, WebP, BMP or TIFF photo.`);
      break;
    case 429:
    case 503:
      if (res.headers.has("Retry-After")) {
        showRetry(text, Number.parseInt(res.headers.get("Retry-After"), 10));
      } else {
        // Not configured on this server: waiting will not help, so no countdown.
        showMessage("error", text);
      }
      refreshHealth();
      break;
    case 504:
      showMessage("error", `The model did not answer in time: ${text}. Try a smaller photo or a smaller tile size.`);
      break;
    default:
      showMessage("error", `${text || res.statusText} (HTTP ${res.status})`);
  }
}

function showFieldErrors(detail) {
  if (!Array.isArray(detail)) {
    showMessage("error", `Some settings are not accepted: ${detailText(detail)}`);
    return;
  }
  const items = [];
  let first = null;
  for (const problem of detail) {
    const name = (problem.loc || []).at(-1);
    const input = document.querySelector(`[data-param="${CSS.escape(String(name))}"]`);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      const error = $(`p-${name}-error`);
      error.textContent = problem.msg;
      error.hidden = false;
      first = first || input;
    }
    const label = input ? document.querySelector(`label[for="${input.id}"]`).textContent : name;
    items.push(`${label}: ${problem.msg}`);
  }
  showMessage("error", "Some settings are out of range; correct them and run again:", items);
  if (first) first.focus();
}

function showRetry(text, seconds) {
  let left = Number.isFinite(seconds) && seconds > 0 ? seconds : 10;
  showMessage("error", text);
  const line = el("p", { class: "countdown" });
  $("message").append(line);
  const tick = () => {
    line.textContent = left > 0 ? `Try again in ${left} s.` : "You can try again now.";
    if (left <= 0) stopCountdown();
    left -= 1;
  };
  tick();
  state.countdown = setInterval(tick, 1000);
}

// ---- copy as curl ---------------------------------------------------------------------------

// A word for a POSIX shell: single-quoted, its own single quotes closed and escaped.
function shellWord(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

// The request Run would send, as a curl command: the task's absolute URL (this page's origin
// and path prefix), the parameters as set, the photo as multipart field `file`.
function curlCommand() {
  const task = $("task").value;
  const search = query();
  const url = new URL(`${task}?${search}`, document.baseURI).href;
  const name = state.file?.name || "photo.jpg";
  const type = state.file?.type || "image/png";
  const out = downloadName(task, search, type, name);
  const field = `file=@"${name.replace(/(["\\])/g, "\\$1")}"`;
  return `curl -sS -X POST ${shellWord(url)} -F ${shellWord(field)} -o ${shellWord(out)}`;
}

async function copyCurl() {
  const command = curlCommand();
  $("curl").textContent = command;
  $("curl-box").hidden = false;
  const status = $("curl-status");
  try {
    await navigator.clipboard.writeText(command);
    status.textContent = "Copied. Run it where the photo is:";
  } catch {
    status.textContent = "Copy it from here (this browser did not allow the clipboard):";
  }
}

// ---- result ---------------------------------------------------------------------------------

function downloadName(task, search, type, fileName) {
  const stem = (fileName || "photo").replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_") || "photo";
  const format = search.get(FORMAT) || (type.split("/")[1] ?? "png");
  const ext = format === "jpeg" ? "jpg" : format;
  const scale = task === "upscale" && search.get("scale") ? `_x${search.get("scale")}` : "";
  return `${stem}_${task}${scale}.${ext}`;
}

function serverTiming(value) {
  if (!value) return "";
  return value
    .split(",")
    .map((part) => {
      const [name, ...rest] = part.trim().split(";");
      const dur = rest.map((r) => r.trim()).find((r) => r.startsWith("dur="));
      return dur ? `${name} ${Math.round(Number(dur.slice(4)))} ms` : name;
    })
    .join(", ");
}

function showResult(blob, headers, task, search, seconds, fileName = state.file?.name) {
  if (state.resultURL) URL.revokeObjectURL(state.resultURL);
  state.resultURL = URL.createObjectURL(blob);
  const after = $("after");
  const facts = $("facts");
  facts.replaceChildren();
  const fact = (name, value) => {
    if (value === null || value === undefined || value === "") return;
    facts.append(el("dt", {}, name), el("dd", { "data-fact": name }, value));
  };
  after.onload = () => {
    fact("Size", `${after.naturalWidth}×${after.naturalHeight} px, ${formatBytes(blob.size)}`);
  };
  after.src = state.resultURL;
  // After a reload the original is not in this page: the result alone, no before/after split.
  const original = Boolean(state.fileURL);
  $("compare").classList.toggle("single", !original);
  $("tags").hidden = !original;
  if (original) $("before").src = state.fileURL;
  else $("before").removeAttribute("src");
  $("result").classList.remove("stale");
  $("stale").hidden = true;
  const name = downloadName(task, search, blob.type, fileName);
  state.result = { blob, name };
  const link = $("download");
  link.href = state.resultURL;
  link.download = name;
  link.textContent = `Download ${name}`;
  fact("Steps", headers.get("X-Steps"));
  const found = headers.get("X-Faces-Found");
  const faces = headers.get("X-Faces");
  fact("Faces", faces && found && found !== faces ? `${faces} restored of ${found} found` : faces);
  fact("Server timing", serverTiming(headers.get("Server-Timing")));
  fact("Elapsed", `${seconds.toFixed(1)} s`);
  $("split").value = 50;
  setSplit();
  $("result").hidden = false;
  $("result-title").focus();
}

function setSplit() {
  $("compare").style.setProperty("--split", `${$("split").value}%`);
}

// Fit, or 100/200/400 %: one image pixel is `zoom` CSS pixels (not divided by the device pixel
// ratio), drawn as sharp squares to judge an upscale.
function setZoom() {
  const zoom = $("zoom").value;
  const actual = zoom !== "fit";
  $("viewport").classList.toggle("actual", actual);
  const after = $("after");
  const width = actual ? `${after.naturalWidth * Number(zoom)}px` : "";
  $("compare").style.width = width;
  $("tags").style.maxWidth = width; // Before/After over the image's own width, not the frame's
}

// The result becomes the photo: chain tasks by hand (restore, then upscale the restored photo).
function reuseResult() {
  if (!state.result) return;
  const { blob, name } = state.result;
  setFile(new File([blob], name, { type: blob.type }));
  $("input-title").scrollIntoView({ block: "nearest" });
  $("task").focus();
}

// ---- start ----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  wireInput();
  $("form").addEventListener("submit", run);
  $("cancel").addEventListener("click", cancel);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") cancel();
  });
  $("split").addEventListener("input", setSplit);
  $("zoom").addEventListener("change", setZoom);
  $("after").addEventListener("load", setZoom);
  $("reuse").addEventListener("click", reuseResult);
  $("copy-curl").addEventListener("click", copyCurl);
  loadApi();
  refreshHealth(); // and again every 2 s while a model is starting, else every 30 s
  const id = new URLSearchParams(window.location.search).get(JOB_PARAM);
  if (id) resume(id);
});
