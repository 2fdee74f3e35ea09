// zsclip web page: choose or drop images, name labels, see each image's top labels as bars; point at a label
// to see where the model saw it (a heatmap from /v1/explain drawn over the photo).
// Plain DOM, no framework, no CDN. Server text is inserted with textContent only (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { files: [], info: null, request: null, heat: new Map() };

function headers() {
  const key = sessionStorage.getItem("zsclip-api-key");
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = "status" + (kind ? " " + kind : "");
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function loadInfo() {
  const response = await fetch("/v1/info", { headers: headers() });
  if (response.status === 401) {
    $("key-field").hidden = false;
    $("model").textContent = "API key needed";
    return;
  }
  if (!response.ok) {
    $("model").textContent = "not ready";
    return;
  }
  const info = await response.json();
  state.info = info;
  $("model").textContent = info.model + " · " + info.device;
  const templates = $("templates");
  templates.replaceChildren();
  if (!info.template_sets.includes(info.default_templates)) {
    const option = el("option", "", "server default: " + info.default_templates);
    option.value = "";
    templates.append(option);
  }
  for (const name of info.template_sets) {
    const option = el("option", "", name);
    option.value = name;
    option.selected = name === info.default_templates;
    templates.append(option);
  }
  const classifier = $("classifier");
  classifier.replaceChildren(el("option", "", "(use the labels above)"));
  classifier.firstChild.value = "";
  for (const entry of info.classifiers) {
    const option = el("option", "", `${entry.id} (${entry.num_classes} classes, ${entry.source})`);
    option.value = entry.id;
    classifier.append(option);
  }
  $("drop-hint").textContent =
    `up to ${info.limits.max_images} images, ${Math.round(info.limits.max_request_bytes / 1048576)} MB per request`;
}

function chooseFiles(list) {
  state.files = Array.from(list).filter((file) => file.type.startsWith("image/") || file.type === "");
  const chosen = $("chosen");
  chosen.replaceChildren();
  for (const file of state.files) {
    const img = el("img", "thumb");
    img.src = URL.createObjectURL(file);
    img.alt = file.name;
    img.title = file.name;
    chosen.append(img);
  }
}

function renderResults(data) {
  const results = $("results");
  results.replaceChildren();
  for (const item of data.results) {
    const file = state.files[item.index];
    const card = el("article", "result" + (item.error ? " failed" : ""));
    card.dataset.index = item.index;
    if (file) {
      const frame = el("div", "frame");
      const img = el("img", "photo");
      img.src = URL.createObjectURL(file);
      img.alt = item.filename || "";
      const canvas = el("canvas", "heat");
      canvas.hidden = true;
      frame.append(img, canvas);
      card.append(frame);
    }
    const body = el("div", "body");
    body.append(el("div", "filename", item.filename || `image ${item.index + 1}`));
    if (item.error) {
      body.append(el("div", "error", item.error));
    } else {
      const list = el("ol", "predictions");
      for (const prediction of item.predictions) {
        const row = el("li", "prediction");
        const pct = Math.max(0, Math.min(100, prediction.score * 100));
        const bar = el("span", "bar");
        bar.style.width = pct.toFixed(1) + "%";
        row.append(el("span", "label", prediction.label), el("span", "score", pct.toFixed(1) + "%"), bar);
        row.dataset.label = prediction.label;
        row.tabIndex = 0;
        row.title = "point here to see where the model saw this label";
        const show = () => showHeatmap(card, item.index, prediction.label, row);
        row.addEventListener("mouseenter", show);
        row.addEventListener("focus", show);
        row.addEventListener("click", show);
        list.append(row);
      }
      body.append(list);
    }
    card.append(body);
    results.append(card);
  }
  if (data.results.length) results.dataset.classifier = data.classifier;
}

// --- heatmaps: /v1/explain for one image and one label, drawn on a canvas over the photo ------------------
const RAMP = [[20, 10, 70], [60, 30, 150], [150, 40, 140], [220, 70, 60], [250, 160, 30], [252, 250, 150]];

function rampColour(unit) {
  const position = Math.max(0, Math.min(1, unit)) * (RAMP.length - 1);
  const low = Math.min(RAMP.length - 2, Math.floor(position));
  const fraction = position - low;
  return RAMP[low].map((value, channel) => value * (1 - fraction) + RAMP[low + 1][channel] * fraction);
}

function drawHeatmap(canvas, heatmap, width, height) {
  const grid = heatmap.grid;
  const rows = grid.length;
  const cols = rows ? grid[0].length : 0;
  const span = heatmap.max - heatmap.min;
  canvas.width = cols;
  canvas.height = rows;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(cols, rows);
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) {
      const unit = span > 0 ? (grid[y][x] - heatmap.min) / span : 0;
      const [r, g, b] = rampColour(unit);
      const at = 4 * (y * cols + x);
      pixels.data[at] = r;
      pixels.data[at + 1] = g;
      pixels.data[at + 2] = b;
      pixels.data[at + 3] = Math.round(Math.sqrt(unit) * 0.6 * 255);
    }
  }
  context.putImageData(pixels, 0, 0);
  // the photo is drawn with object-fit: contain in its frame: cover exactly the drawn part
  const frame = canvas.parentElement;
  const box = frame.getBoundingClientRect();
  const scale = Math.min(box.width / width, box.height / height);
  canvas.style.width = `${width * scale}px`;
  canvas.style.height = `${height * scale}px`;
  canvas.style.left = `${(box.width - width * scale) / 2}px`;
  canvas.style.top = `${(box.height - height * scale) / 2}px`;
  canvas.hidden = false;
  canvas.dataset.label = heatmap.label;
}

function explainOne(index, label) {
  const key = `${index}\u0000${label}`;
  if (!state.heat.has(key)) {
    const form = new FormData();
    form.append("images", state.files[index], state.files[index].name);
    const request = state.request || {};
    if (request.classifier) {
      form.append("classifier", request.classifier);
    } else {
      form.append("labels", request.labels || "");
      if (request.templates) form.append("templates", request.templates);
    }
    form.append("text", label);
    const pending = fetch("/v1/explain", { method: "POST", body: form, headers: headers() })
      .then(async (response) => {
        const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
        if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
        return data.results[0];
      });
    pending.catch(() => state.heat.delete(key));
    state.heat.set(key, pending);
  }
  return state.heat.get(key);
}

async function showHeatmap(card, index, label, row) {
  const canvas = card.querySelector("canvas.heat");
  if (!canvas || !state.files[index]) return;
  card.dataset.pointed = label;
  for (const other of card.querySelectorAll(".prediction")) other.classList.toggle("pointed", other === row);
  try {
    const result = await explainOne(index, label);
    if (card.dataset.pointed !== label || !result || result.error || !result.heatmaps.length) return;
    drawHeatmap(canvas, result.heatmaps[0], result.width, result.height);
    setStatus(`heatmap: where the model saw “${label}”`, "ok");
  } catch (error) {
    setStatus(`No heatmap: ${error.message}`, "bad");
  }
}

function renderError(message) {
  const results = $("results");
  results.replaceChildren(el("div", "banner", message));
}

async function classify(event) {
  event.preventDefault();
  const key = $("apikey").value.trim();
  if (key) sessionStorage.setItem("zsclip-api-key", key);
  if (!state.files.length) {
    setStatus("Choose at least one image.", "bad");
    return;
  }
  const form = new FormData();
  for (const file of state.files) form.append("images", file, file.name);
  const classifierId = $("classifier").value;
  state.request = { classifier: classifierId, labels: $("labels").value, templates: $("templates").value };
  state.heat = new Map();
  if (classifierId) {
    form.append("classifier", classifierId);
  } else {
    form.append("labels", $("labels").value);
    if ($("templates").value) form.append("templates", $("templates").value);
  }
  form.append("top_k", $("topk").value || "3");
  $("classify").disabled = true;
  setStatus("Classifying…");
  const started = performance.now();
  try {
    const response = await fetch("/v1/classify", { method: "POST", body: form, headers: headers() });
    const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (response.status === 401) $("key-field").hidden = false;
    if (!response.ok) {
      setStatus(`Error ${response.status}`, "bad");
      renderError(data.error || `HTTP ${response.status}`);
      if (data.details && Array.isArray(data.details) && data.details[0] && "index" in data.details[0]) {
        renderResults({ results: data.details, classifier: "" });
      }
      return;
    }
    renderResults(data);
    const failed = data.results.filter((r) => r.error).length;
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    setStatus(`${data.results.length - failed} classified${failed ? `, ${failed} failed` : ""} in ${seconds} s`,
              failed ? "warn" : "ok");
    if (!state.info) loadInfo();
  } catch (error) {
    setStatus("The server could not be reached.", "bad");
    renderError(String(error));
  } finally {
    $("classify").disabled = false;
  }
}

function setUp() {
  const drop = $("drop");
  $("files").addEventListener("change", (event) => chooseFiles(event.target.files));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (event) => chooseFiles(event.dataTransfer.files));
  $("classifier").addEventListener("change", (event) => {
    const usingId = Boolean(event.target.value);
    $("labels").disabled = usingId;
    $("templates").disabled = usingId;
  });
  $("apikey").addEventListener("change", () => {
    sessionStorage.setItem("zsclip-api-key", $("apikey").value.trim());
    loadInfo();
  });
  $("form").addEventListener("submit", classify);
  loadInfo().catch(() => { $("model").textContent = "offline"; });
}

setUp();
