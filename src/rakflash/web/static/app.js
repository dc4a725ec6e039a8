// rakflash web: renders what the server reports; decides nothing.
// Every address is relative to the page's own (which carries this run's secret).

const $ = (sel, root = document) => root.querySelector(sel);

// An element with attributes and children; text is always set as text, never parsed as HTML.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Replace an element's children (same rules as h: arrays flattened, null/false skipped).
function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
}

const num = (n) => Number(n).toLocaleString("en-US");
const hex = (n) => "0x" + Number(n).toString(16).padStart(8, "0");
const kib = (n) => (n / 1024).toFixed(1) + " KiB/s";
function secs(s) {
  s = Math.max(0, Math.round(s));
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

// Every request has a deadline (identify and doctor take up to about 20 s on a silent port; an
// upload as long as the file needs), and never throws: a server that is gone or silent comes
// back as an error the caller shows like any other, with what to do.
const DEADLINES = { "api/identify": 60000, "api/doctor": 60000, "api/images": 180000, "api/keys": 60000,
  "api/keys/backup": 60000, "api/settings/save": 60000, "api/settings/apply": 60000 };

async function api(path, body, opts = {}) {
  const ms = opts.timeout || DEADLINES[path] || 30000;
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), ms);
  const init = body === undefined ? { signal: ctrl.signal } : {
    method: "POST",
    headers: opts.headers || { "Content-Type": "application/json" },
    body: opts.raw ? body : JSON.stringify(body),
    signal: ctrl.signal,
  };
  try {
    const r = await fetch(path, init);
    const text = await r.text();
    let data;
    try { data = JSON.parse(text); } catch { data = { error: "http-" + r.status, message: text.trim() || `HTTP ${r.status}` }; }
    // A download (Content-Disposition: attachment) keeps its text and file name as served.
    const m = /filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "");
    return { status: r.status, data, text, filename: m ? m[1] : null };
  } catch {
    return { status: 0, data: {
      error: "no-answer",
      message: ctrl.signal.aborted
        ? `rakflash web did not answer within ${Math.round(ms / 1000)} s`
        : "rakflash web can't be reached: it has stopped, or the connection to it is down",
      hint: "Look at the terminal where 'rakflash web' runs. If it has stopped, start it again and reload this page." } };
  } finally {
    clearTimeout(timer);
  }
}

// What to do next, in the page's words (web/wording.py), with its button where one does it;
// the command line's words follow, folded, for those who want them.
function nextStep(data, job = null) {
  const words = data.page_hint || data.page_next || data.hint || data.next || "";
  const cli = data.page_hint || data.page_next ? (data.hint || data.next) : null;
  const button = {
    "check-again": job ? h("button", { class: "next-check", onclick: () => checkAgain(job) }, "Check the plan again") : null,
    recover: state.image && !state.image.error && state.picked.length === 1
      ? h("button", { class: "next-recover", onclick: () => recoverPort(state.picked[0]) }, "Recover instead…") : null,
  }[data.page_action] || null;
  const parts = [h("p", { class: "hint" }, h("strong", {}, "next: "), words, button ? " " : "", button)];
  const command = data.command && !(data.page_next || data.page_hint || "").includes(data.command) ? data.command : null;
  if (cli || command) {
    parts.push(h("details", { class: "cli" }, h("summary", {}, "on the command line"),
      cli ? h("p", {}, cli) : null, command ? h("code", { class: "command" }, command) : null));
  }
  return parts;
}

// A button's request (stop, cancel, an answer, a virtual module's button): its error, if any,
// is said on the page instead of being lost.
async function act(path, body) {
  const { status, data } = await api(path, body);
  if (status < 200 || status >= 300) notice(data);
  return { status, data };
}

function notice(data) {
  const box = $("#notice");
  box.hidden = false;
  fill(box, h("p", {}, h("strong", {}, "error: "), data.message || "the request failed"),
    data.hint ? h("p", {}, h("strong", {}, "next: "), data.hint) : null,
    h("button", { class: "dismiss-notice", onclick: () => { box.hidden = true; } }, "OK"));
}

// ------------------------------------------------------------------ state
// This tab's name, sent with its answers: a plan cancelled from another tab says so in this one.
const TAB = Math.random().toString(36).slice(2, 10);
const state = {
  mine: new Set(),     // the jobs this tab started (only those does it drop to check again)
  ports: [],
  picked: [],          // the picked ports, in the order picked
  image: null,         // {image, name, inspect, error}
  jobs: new Map(),     // id -> {el, header, ...}
  confirming: null,    // the job whose confirmation dialog is open
};

function options() {
  const baud = parseInt($("#opt-baud").value, 10);
  const window_ = parseFloat($("#opt-window").value);
  return {
    module: $("#opt-module").value || null,
    baud: Number.isFinite(baud) ? baud : null,
    force: $("#opt-force").checked,
    keep_settings: $("#opt-keep").checked,
    reset_window: Number.isFinite(window_) ? window_ : 30,
    reset_line: $("#opt-line").value || null,
    ...batchOptions(),
  };
}

// ------------------------------------------------------------------ a production batch (issue 21)
function batchOptions() {
  const batch = $("#opt-batch").value.trim();
  if (!batch) return {};
  return { batch, ledger: $("#opt-ledger").value.trim() || null, station: $("#opt-station").value.trim() || null };
}

async function showBatch() {
  const box = $("#batch");
  const { batch, ledger } = batchOptions();
  if (!batch) { box.hidden = true; return; }
  const { data } = await api("api/batch", { path: batch, ledger });
  box.hidden = false;
  if (data.error) {
    box.className = "panel error";
    box.replaceChildren(h("p", {}, h("strong", {}, "error: "), data.message),
      data.problems && data.problems.length ? h("ul", { class: "problems" }, data.problems.map((p) => h("li", {}, p))) : null,
      ...nextStep(data));
    return;
  }
  box.className = "panel batch";
  const body = h("tbody", {}, data.rows.map((r) => h("tr", { "data-line": r.line, "data-state": r.state },
    h("td", {}, String(r.line)), h("td", { class: "mono" }, r.dev_eui), h("td", { class: "b-state" }, r.state),
    h("td", {}, r.serial_number || "-"), h("td", {}, r.station || "-"))));
  box.replaceChildren(
    h("p", { class: "batch-counts" }, h("strong", {}, `${data.batch}: `),
      `${data.total} rows, ${data.written} written, ${data.not_written} claimed and not written, ${data.left} left`),
    h("p", { class: "muted" }, `ledger: ${data.ledger}` + (data.ledger_exists ? "" : " (not made yet: nothing claimed)")),
    h("table", { class: "batch-rows", "aria-label": "the batch's rows" },
      h("thead", {}, h("tr", {}, ["line", "DevEUI", "state", "serial number", "station"].map((t) => h("th", {}, t)))),
      body));
}

// ------------------------------------------------------------------ ports
function renderPorts(ports) {
  state.ports = ports;
  const body = $("#ports tbody");
  // The rows are drawn anew: the element that had the keyboard's focus gets it back.
  const had = document.activeElement && body.contains(document.activeElement)
    ? { port: document.activeElement.closest("tr")?.dataset.port, cls: document.activeElement.className,
        type: document.activeElement.type }
    : null;
  body.replaceChildren();
  $("#no-ports").hidden = ports.length > 0;
  state.picked = state.picked.filter((port) => ports.some((p) => p.port === port));
  for (const p of ports) {
    const seen = p.seen && !p.seen.error
      ? `${p.seen.module || "unknown"} · ${p.seen.mode === "app" ? (p.seen.app_version || "app")
        : p.seen.mode === "bootloader" ? "in its bootloader" : (p.seen.note || "unknown")}`
      : "";
    const picked = state.picked.includes(p.port);
    let status = seen;
    if (p.waiting) {
      status = h("span", { class: "waiting" }, p.busy + " ",
        h("button", { class: "cancel-plan", onclick: () => act(`api/jobs/${p.busy_job}/answer`, { write: false, tab: TAB }) },
          "Cancel plan"));
    } else if (p.busy) {
      status = h("span", { class: "busy" }, "busy: " + p.busy);
    }
    const why = p.busy ? `${p.port} is busy: ${p.busy}` : "";
    const row = h("tr", { "data-port": p.port, class: picked ? "picked" : "" },
      h("td", { class: "pick" }, h("input", {
        type: "checkbox", name: "port", value: p.port, "aria-label": `pick ${p.port}`,
        checked: picked, onchange: (ev) => pickPort(p.port, ev.target.checked),
      })),
      h("td", { class: "mono port-name", "data-label": "port" }, p.port),
      h("td", { class: "vid", "data-label": "VID:PID" }, p.vid_pid || "-"),
      h("td", { class: "desc", "data-label": "description" }, p.description || "-"),
      h("td", { class: "probably", "data-label": "probably" }, p.probably || "-"),
      h("td", { class: "seen", "data-label": "last seen" }, status),
      h("td", { class: "row-actions" },
        h("button", { class: "identify", disabled: !!p.busy, title: why, onclick: () => identify(p.port) }, "Identify"),
        h("button", { class: "doctor", disabled: !!p.busy, title: why, onclick: () => doctor(p.port) }, "Doctor"),
        h("button", { class: "keys", disabled: !!p.busy, title: why || "keys and settings",
          onclick: () => showKeys(p.port) }, "Keys"),
        p.removable ? h("button", { class: "remove-port", "aria-label": `remove ${p.port} from the list`,
          onclick: () => removePort(p.port) }, "Remove") : null,
        p.controls ? virtualButtons(p) : null),
    );
    body.append(row);
  }
  for (const job of state.jobs.values()) if (!$(".prompt", job.el).hidden) showHands(job);
  if (had && had.port) {
    const again = [...body.querySelectorAll("tr")].find((tr) => tr.dataset.port === had.port);
    const el = again && (had.type === "checkbox" ? again.querySelector("input[type=checkbox]")
      : had.cls && again.querySelector("." + had.cls.split(" ")[0]));
    if (el) el.focus();
  }
}

// A virtual module's board, on the page: what a person does with their hands on a real one
// (press reset, hold the boot pin, plug the cable back in), so every flow can be played here.
function virtualButtons(p) {
  const c = p.controls;
  const pin = c.boot_pin;
  return h("span", { class: "virtual-buttons", role: "group", "aria-label": `buttons of the virtual module on ${p.port}` },
    c.plugged
      ? h("button", { class: "v-reset", onclick: () => act("api/virtual/reset", { port: p.port }) }, "Press reset")
      : h("button", { class: "v-plug", onclick: () => act("api/virtual/plug", { port: p.port }) }, "Plug the cable back in"),
    pin ? h("button", { class: "v-boot", "aria-pressed": String(c.boot_high),
      onclick: () => act("api/virtual/boot", { port: p.port, high: !c.boot_high }) },
      c.boot_high ? `Release ${pin}` : `Hold ${pin} ${c.boot_level || "high"}`) : null);
}

// Beside a prompt, the buttons of a virtual module's board, drawn again whenever the ports change.
function showHands(job) {
  const hands = $(".prompt .virtual-controls", job.el);
  const virtual = state.ports.find((p) => p.port === job.port && p.controls);
  hands.hidden = !virtual;
  if (virtual) fill(hands, h("span", { class: "muted" }, "A virtual module: its buttons are here. "), virtualButtons(virtual));
}

async function removePort(port) {
  const { status, data } = await act("api/ports/remove", { port });
  if (status === 200) renderPorts(data.ports);
}

function pickPort(port, on = true) {
  state.picked = state.picked.filter((p) => p !== port);
  if (on) state.picked.push(port);
  renderPorts(state.ports);
  maybeCheck();
}

// Open a panel on one request to the module: a waiting line while it runs, then an empty panel for
// the answer — or, when the answer is an error, the error and its next step (and null back).
async function askInPanel(panel, port, waiting, path) {
  panel.hidden = false;
  panel.className = "panel";
  panel.replaceChildren(h("p", { class: "muted" }, waiting));
  const o = options();
  const { data } = await api(path, { port, baud: o.baud, module: o.module });
  panel.replaceChildren();
  if (data.error) {
    panel.className = "panel error";
    panel.append(h("p", {}, h("strong", {}, "error: "), data.message), ...nextStep(data));
    return null;
  }
  return data;
}

async function identify(port) {
  const panel = $("#device");
  const data = await askInPanel(panel, port, `Identifying the module on ${port}…`, "api/identify");
  if (!data) return;
  const rows = [
    ["port", `${data.port} at ${data.baud} baud`],
    ["module", (data.module || "unknown") + (data.module_certain ? "" : " (probably)")],
    ["mode", data.mode === "app" ? "application running" : "in its bootloader"],
    ["application", data.app_version || (data.mode === "app" ? "-" : "- (the bootloader can't tell)")],
    ["bootloader", data.bootloader_version || "-"],
    ["hardware", data.hardware_model || "-"],
    ["hardware id", data.hardware_id || "-"],
    ["serial number", data.serial_number || "-"],
    ["AT dialect", data.dialect],
  ];
  panel.append(h("p", { class: "muted" }, `Identified at ${new Date().toLocaleTimeString()}:`));
  panel.append(h("table", { class: "kv device" },
    rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))));
  for (const n of data.notes || []) panel.append(h("p", { class: "note" }, "note: " + n));
}

const MARKS = { ok: "✓", note: "•", action: "!", problem: "✗" };

async function doctor(port) {
  const panel = $("#doctor");
  panel.hidden = false;
  panel.className = "panel";
  const img = state.image && !state.image.error ? state.image : null;
  panel.replaceChildren(h("p", { class: "muted" },
    `Doctor is checking ${port}${img ? " for " + img.name : ""} (at most 20 s)…`));
  const o = options();
  const { data } = await api("api/doctor", { port, image: img && img.image, module: o.module, baud: o.baud });
  panel.replaceChildren();
  if (!data.findings) {
    panel.className = "panel error";
    panel.append(h("p", {}, h("strong", {}, "error: "), data.message), ...nextStep(data));
    return;
  }
  panel.append(h("p", { class: "muted" }, `Doctor on ${port}${img ? " for " + img.name : ""}:`));
  const list = h("ul", { class: "findings" });
  for (const f of data.findings) {
    list.append(h("li", { class: "finding " + f.level, "data-code": f.code },
      h("span", { class: "mark" }, MARKS[f.level] || "•"), " ", h("strong", {}, f.finding),
      h("div", { class: "why" }, h("span", { class: "label" }, "why "), f.why),
      h("div", { class: "next" }, h("span", { class: "label" }, "next "), f.page_next || f.next,
        f.page_action === "recover" && state.image && !state.image.error
          ? h("button", { class: "next-recover", onclick: () => { pickPort(port); recoverPort(port); } }, "Recover instead…") : null),
      f.page_next || f.command ? h("details", { class: "cli" }, h("summary", {}, "on the command line"),
        f.page_next ? h("p", {}, f.next) : null, f.command ? h("code", { class: "command" }, f.command) : null) : null));
  }
  panel.append(list);
  const n = data.findings.filter((f) => f.level === "problem").length;
  panel.append(h("p", { class: "muted" },
    `${n || "no"} problem${n === 1 ? "" : "s"} found in ${data.seconds.toFixed(1)} s (doctor takes at most ${data.bound_seconds} s per port)`));
}

// ------------------------------------------------------------------ keys and settings
// What `rakflash keys show` says (the AppKey and the session keys masked: the page never gets
// them), and the files `keys backup` and `settings save` write, as downloads; a settings file
// applied to the port as `settings apply` applies it.
const SECRET_LABELS = [["app_key", "AppKey"], ["app_skey", "AppSKey"], ["nwk_skey", "NwkSKey"]];

function saveFile(text, name) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function keysError(box, data) {
  box.className = "keys-result error";
  fill(box, h("p", {}, h("strong", {}, "error: "), data.message || "the request failed"), ...nextStep(data));
}

async function showKeys(port) {
  const panel = $("#keys");
  panel.dataset.port = port;
  const data = await askInPanel(panel, port, `Reading the keys of the module on ${port}…`, "api/keys");
  if (!data) return;
  const rows = [
    ["module", data.module + (data.serial_number ? `, serial number ${data.serial_number}` : "")],
    ["DevEUI", data.dev_eui || "-"], ["AppEUI", data.app_eui || "-"],
    ["band", data.band === null ? "-" : data.band + (data.region ? ` (${data.region})` : "")],
    ["class", data.class || "-"], ["join mode", data.join_mode || "-"], ["DevAddr", data.dev_addr || "-"],
  ];
  for (const [key, label] of SECRET_LABELS) {
    const blank = data[key + "_blank"];
    if (blank !== null && blank !== undefined) rows.push([label, blank ? "all zeros (not set)" : "set (hidden)"]);
  }
  panel.append(h("p", { class: "muted" }, `Keys of the module on ${port}, read over AT at ${new Date().toLocaleTimeString()}:`));
  panel.append(h("table", { class: "kv keys-table" },
    rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", { class: k.endsWith("Key") ? "masked" : "" }, v)))));
  if ((data.unreadable || []).length) {
    panel.append(h("p", { class: "note" }, "could not be read the same way twice: " + data.unreadable.join(", ")));
  }
  const result = h("div", { class: "keys-result", "aria-live": "polite" });
  const file = h("input", { type: "file", accept: ".json,application/json", class: "settings-file",
    "aria-label": "a settings file to apply", hidden: true, onchange: (ev) => applySettings(port, ev.target, result) });
  panel.append(h("p", { class: "keys-actions" },
    h("button", { class: "keys-backup", onclick: () => download(port, "api/keys/backup", result,
      "The keys backup holds the AppKey and the session keys: keep it where only you can read it.") },
      "Download keys backup"), " ",
    h("button", { class: "settings-save", onclick: () => download(port, "api/settings/save", result,
      "A settings template: band, class, join mode, ADR, data rate, … — no key, no DevEUI, so it fits a batch.") },
      "Save settings"), " ",
    h("button", { class: "settings-apply", onclick: () => file.click() }, "Apply settings…"), file),
    result);
}

async function download(port, path, box, said) {
  const o = options();
  fill(box, h("p", { class: "muted" }, "Reading the module…"));
  const { status, data, text, filename } = await api(path, { port, baud: o.baud, module: o.module });
  if (status !== 200 || !filename) return keysError(box, data);
  saveFile(text, filename);
  box.className = "keys-result ok";
  fill(box, h("p", {}, h("strong", {}, "saved: "), filename, " (in your downloads). ", said));
}

async function applySettings(port, input, box) {
  const f = input.files && input.files[0];
  input.value = "";
  if (!f) return;
  let file;
  try { file = JSON.parse(await f.text()); } catch { file = null; }
  if (!file || typeof file !== "object" || f.size > 60000) {
    return keysError(box, { message: `${f.name} is not a settings file rakflash wrote`,
      hint: "Pick a file that Save settings (or 'rakflash settings save') wrote." });
  }
  const o = options();
  fill(box, h("p", { class: "muted" }, `Applying ${f.name} to the module on ${port}, each value read back…`));
  const { data } = await api("api/settings/apply", { port, baud: o.baud, module: o.module, file, name: f.name });
  if (data.error) {
    keysError(box, data);
    if (data.setting) {
      box.append(h("table", { class: "kv applied" },
        h("tr", {}, h("th", {}, "refused"), h("td", { class: "refused" }, `${data.setting}=${data.value}` +
          (data.answer ? ` (the module answered ${data.answer})` : ""))),
        h("tr", {}, h("th", {}, "changed before it"), h("td", { class: "changed" }, (data.changed || []).join(", ") || "none")),
        h("tr", {}, h("th", {}, "the same already"), h("td", { class: "same" }, (data.same || []).join(", ") || "none"))));
    }
    return;
  }
  box.className = "keys-result ok";
  fill(box, h("p", {}, h("strong", {}, "applied: "), `${f.name} to ${data.module} on ${port}`),
    h("table", { class: "kv applied" },
      h("tr", {}, h("th", {}, "changed (read back)"), h("td", { class: "changed" }, data.changed.join(", ") || "none")),
      h("tr", {}, h("th", {}, "the same already"), h("td", { class: "same" }, data.same.join(", ") || "none"))));
}

// ------------------------------------------------------------------ firmware
const MAX_UPLOAD = 32 * 1024 * 1024;     // the server's bound: no firmware for these modules is near it

async function upload(file) {
  const panel = $("#inspect");
  panel.hidden = false;
  panel.className = "panel";
  if (file.size > MAX_UPLOAD) {            // said here, by name, before megabytes go up the wire
    state.image = { error: "image-too-large-to-upload" };
    renderInspect({ error: "image-too-large-to-upload",
      message: `${file.name} is ${(file.size / 1048576).toFixed(1)} MiB: over 32 MiB, so not firmware for these modules`,
      page_hint: "Drop the firmware file itself (.bin, .hex, or the DFU .zip): a few hundred KiB at most." });
    maybeCheck();
    return;
  }
  panel.replaceChildren(h("p", { class: "muted" }, `Reading ${file.name}…`));
  const { data } = await api("api/images", file, {
    raw: true, headers: { "Content-Type": "application/octet-stream", "X-File-Name": encodeURIComponent(file.name) },
  });
  state.image = data;
  renderInspect(data);
  maybeCheck();
}

function renderInspect(d) {
  const panel = $("#inspect");
  panel.replaceChildren();
  if (d.error) {
    panel.className = "panel error";
    panel.append(h("p", {}, h("strong", {}, "error: "), d.message), ...nextStep(d));
    return;
  }
  const i = d.inspect;
  // A file that is not firmware (a JPEG, an INFO0 dump…): refused here as every write path
  // refuses it, so the page offers neither a plan nor a recovery for it.
  panel.className = i.not_firmware ? "panel error not-firmware" : "panel";
  if (i.not_firmware) {
    panel.append(h("p", {}, h("strong", {}, "not firmware: "), `${i.path} does not look like firmware: ${i.not_firmware}`),
      h("p", {}, h("strong", {}, "next: "), "Pick the firmware file itself: the .hex, .bin or DFU .zip built "
        + "for the module. rakflash won't write this file to any module."));
  }
  const formats = {
    bin: "raw binary", hex: "Intel HEX", "apollo3-ota": "Apollo3 OTA blob (48-byte header + application)",
    "dfu-package": "nRF52 DFU package (.zip)",
    "esp-app": "ESP-IDF app image", "esp-bootloader": "ESP-IDF bootloader image",
    "esp-partition-table": "ESP-IDF partition table", "esp-merged": "ESP32 merged binary",
  };
  const target = i.module ? `${i.module} (${i.mcu})` + (i.vector ? ` — from the vector table: SP ${hex(i.vector.sp)}, reset ${hex(i.vector.reset)}` : "")
    : i.mcu ? `${i.mcu}, no module in the catalog` : "unknown: no vector table of a known MCU";
  panel.append(h("table", { class: "kv inspect" },
    h("tr", {}, h("th", {}, "file"), h("td", { class: "file-name" }, i.path)),
    h("tr", {}, h("th", {}, "format"), h("td", {}, `${formats[i.format] || i.format}, ${num(i.file_size)} bytes on disk, ${num(i.size)} bytes of data`)),
    h("tr", {}, h("th", {}, "sha256"), h("td", { class: "mono" }, i.sha256)),
    h("tr", {}, h("th", {}, "target"), h("td", {}, target)),
    h("tr", {}, h("th", {}, "versions"), h("td", {}, `application: ${i.app_version || "-"}; bootloader: ${i.bootloader_version || "-"}`)),
  ));
  if (i.package) {
    const pkg = i.package;
    panel.append(h("p", { class: "package" }, h("strong", {}, "package "), `${pkg.family_name}`),
      h("ul", { class: "package-images" }, pkg.images.map((im) => h("li", {},
        `${im.kind} ${im.bin_file}: ${num(im.size)} bytes, CRC-32 ${im.crc32}; init packet ${im.dat_file}`
        + ` (${im.init_packet_bytes} bytes) — requires ${packageNeeds(im.init)}`))));
  }
  if (i.regions.length) {
    panel.append(h("table", { class: "grid regions" },
      h("tr", {}, h("th", {}, "region"), h("th", {}, "range"), h("th", {}, "covered")),
      i.regions.map((r) => h("tr", {}, h("td", {}, r.name), h("td", { class: "mono" }, `${hex(r.start)}-${hex(r.end)}`),
        h("td", { class: "num" }, `${num(r.bytes)} of ${num(r.end - r.start)}`)))));
  }
}

// What a DFU package's init packet requires, as inspect says it.
function packageNeeds(init) {
  const needs = [`type ${init.type}`, `firmware version ${init.fw_version ?? "-"}`];
  if (init.hw_version !== undefined && init.hw_version !== null) needs.push(`hardware version ${init.hw_version}`);
  if (init.device_type) needs.push(`device type ${init.device_type}`);
  if (init.sd_req && init.sd_req.length) needs.push("SoftDevice " + init.sd_req.join(" or "));
  if (init.hash_type) needs.push(`hash ${init.hash_type}`);
  if (init.crc16) needs.push(`CRC-16 ${init.crc16}`);
  needs.push(init.signed ? `signed (${init.signature_type || "yes"})` : "not signed");
  return needs.join(", ");
}

// A file and one port: check that module's plan; several ports: check them all at once (a fleet).
// Checks start shortly after the last change, so picking several ports starts one fleet check.
let checkTimer = null;
function maybeCheck() {
  const usable = state.image && !state.image.error && !state.image.inspect.not_firmware;
  $("#recover-bar").hidden = !(usable && state.picked.length === 1);
  if (!usable) {
    if (state.image && !state.image.error) $("#jobs-empty").textContent = "That file is not firmware: drop the firmware file itself.";
    return;
  }
  if (!state.picked.length) {
    $("#jobs-empty").textContent = "Now pick the module's port above (or several): rakflash then checks the plan.";
    return;
  }
  clearTimeout(checkTimer);
  checkTimer = setTimeout(() => check([...state.picked]), 400);
}

const until = (cond, ms) => new Promise((resolve) => {
  const end = Date.now() + ms;
  const tick = () => (cond() || Date.now() > end ? resolve() : setTimeout(tick, 100));
  tick();
});

// A plan this tab made that still waits for "write" on one of these ports is dropped first (one
// operation per port). Another tab's plan is left alone: the check then says the port is taken.
async function dropPending(ports) {
  for (const job of state.jobs.values()) {
    if (state.mine.has(job.id) && job.state === "confirm" && job.ports.some((p) => ports.includes(p))) {
      await api(`api/jobs/${job.id}/answer`, { write: false, tab: TAB });
      await until(() => job.state === "done", 20000);
    }
  }
}

async function check(ports) {
  const panel = $("#check-error");
  panel.hidden = true;
  await dropPending(ports);
  const which = ports.length === 1 && !batchOptions().batch ? { port: ports[0] } : { ports };
  const { status, data } = await api("api/flash", { ...which, image: state.image.image, ...options() });
  if (status === 202) state.mine.add(data.job);
  else {
    panel.hidden = false;
    panel.replaceChildren(h("p", {}, h("strong", {}, "error: "), data.message), ...nextStep(data));
  }
}

async function recoverPort(port) {
  const panel = $("#check-error");
  panel.hidden = true;
  await dropPending([port]);
  const o = options();
  const { status, data } = await api("api/recover", {
    port, image: state.image.image, module: o.module, baud: o.baud, window: o.reset_window,
    reset_with: $("#opt-rec-reset").value || null, boot0_with: $("#opt-rec-boot0").value || null,
    remove_protection: $("#opt-rec-unprotect").checked,
  });
  if (status === 202) state.mine.add(data.job);
  else {
    panel.hidden = false;
    panel.replaceChildren(h("p", {}, h("strong", {}, "error: "), data.message), ...nextStep(data));
  }
}

// The same check once more, on the same ports with the file on the page: what "check the plan
// again" in a hint means here.
function checkAgain(job) {
  if (!state.image || state.image.error) {
    notice({ message: "there is no firmware file on the page to check", hint: "Drop the firmware file again (step 2): the plan is then checked." });
    return;
  }
  if (job.kind === "recover") recoverPort(job.ports[0]);
  else check(job.ports);
}

// ------------------------------------------------------------------ jobs
function card(id, header) {
  let job = state.jobs.get(id);
  if (job) return job;
  const el = $("#job-template").content.firstElementChild.cloneNode(true);
  el.dataset.job = id;
  el.dataset.kind = header.kind;
  job = { id, el, port: header.port, ports: header.ports || [header.port], state: header.state, title: header.title,
    kind: header.kind, phases: new Map(), retries: 0, rows: new Map() };
  if (header.kind === "fleet") fleetTable(job);
  $(".job-title", el).textContent = header.title;
  $(".job-port", el).textContent = "on " + header.port;
  el.dataset.port = header.port;
  if (header.kind === "recover") $(".flash", el).textContent = "Recover";
  $(".flash", el).addEventListener("click", () => openConfirm(job));
  $(".cancel", el).addEventListener("click", () => act(`api/jobs/${id}/answer`, { write: false, tab: TAB }));
  $(".stop", el).addEventListener("click", () => {
    const what = job.kind === "recover" ? "recovery" : "update";
    if (window.confirm(`Stop the ${what} on ${job.port}? A module stopped while it is being written `
        + "waits in its bootloader: checking the plan again and flashing finishes the job.")) {
      act(`api/jobs/${id}/stop`, {});
    }
  });
  $(".press-virtual", el).addEventListener("click", () => act("api/virtual/reset", { port: job.port }));
  $(".dismiss", el).addEventListener("click", () => act(`api/jobs/${id}/dismiss`, {}));
  state.jobs.set(id, job);
  $("#jobs").prepend(el);
  $("#jobs-empty").hidden = true;
  return job;
}

const PHASES = {
  identify: "identify", settings: "read settings", boot: "enter bootloader", connect: "connect",
  erase: "erase", write: "write", verify: "verify", start: "start new firmware", "settings-check": "check settings",
  "settings-write": "write settings back",
  "identify-after": "identify again", provision: "keys from the batch",
};
const STATES = { running: "running", confirm: "waiting for you", done: "finished" };

function onJobEvent(e) {
  if (e.event === "server") {             // Ctrl-C in the server's terminal: it says what happens now
    state.server = e.state;
    const box = $("#server-state");
    box.hidden = false;
    box.textContent = e.message;
    announce(e.message);
    if (e.state === "stopped") linkState("stopped", "rakflash web has stopped");
    return;
  }
  if (e.event === "dismissed") {
    const job = state.jobs.get(e.job);
    if (job) { job.el.remove(); state.jobs.delete(e.job); }
    $("#jobs-empty").hidden = state.jobs.size > 0;
    return;
  }
  if (e.event === "job") {
    const job = card(e.job, e);
    job.state = e.state;
    const el = job.el;
    el.dataset.state = e.state;
    $(".job-state", el).textContent = STATES[e.state] || e.state;
    $(".actions", el).hidden = e.state !== "confirm";
    if (e.state !== "confirm") {
      $(".flash", el).hidden = true;
      $(".choose", el).hidden = true;
    }
    $(".running-actions", el).hidden = e.state !== "running";
    $(".done-actions", el).hidden = e.state !== "done";
    if (e.state !== "confirm" && state.confirming === job) closeConfirm();
    return;
  }
  const job = state.jobs.get(e.job);
  if (!job) return;
  if (job.kind === "fleet" && e.port) { fleetEvent(job, e); return; }
  const el = job.el;
  switch (e.event) {
    case "phase": {
      for (const li of el.querySelectorAll(".phases li")) li.classList.replace("now", "past");
      const li = h("li", { class: "now", "data-phase": e.phase }, PHASES[e.phase] || e.phase);
      li.title = e.message || "";
      $(".phases", el).append(li);
      announce(`${job.title} on ${job.port}: ${PHASES[e.phase] || e.phase}`);
      if (e.phase !== "boot" && e.phase !== "identify") $(".prompt", el).hidden = true;
      if (e.bytes) showProgress(job, 0, e.bytes, e.phase);
      break;
    }
    case "plan": renderPlan(job, e); break;
    case "device":
      $(".job-port", el).textContent = `on ${job.port} · ${e.module || "unknown module"}`
        + (e.module && e.module_certain === false ? " (probably)" : "")
        + (e.serial_number ? ` · serial number ${e.serial_number}` : "");
      break;
    case "prompt":
      if (e.action === "confirm-write") {
        job.question = e.message;
        $(".flash", el).hidden = false;
      } else if (e.action === "choose-module") {
        showChoice(job, e);
      } else {
        showPrompt(job, e);
      }
      break;
    case "countdown":
      $(".countdown", el).textContent = `${e.seconds_left} s left`;
      break;
    case "caught":
      $(".prompt", el).hidden = true;
      addNote(job, "ok", "Caught the module in its bootloader.");
      break;
    case "progress": showProgress(job, e.bytes, e.total, e.phase, e.rate, e.eta); break;
    case "retry":
      job.retries = e.retries;
      $(".retries", el).textContent = `${e.retries} resent (${e.reason})`;
      break;
    case "warning": addNote(job, "warning", "warning: " + e.message); break;
    case "note": addNote(job, "note", "note: " + e.message); break;
    case "keys": addNote(job, e.state === "lost" ? "warning" : "note", keysText(e)); break;
    case "result": renderResult(job, e); break;
  }
}

// The owner's keys a recovery read from the chip: before the write (what was found, the keys
// masked), after it (kept, written back, lost). The page never asks for the keys themselves.
function keysText(e) {
  const where = (e.regions || []).map((r) => `${r.region} at ${r.address}`).join(", ")
    || (e.read_via === "at" ? "over AT" : "");
  if (e.when !== "before") {
    const said = { kept: "unchanged after the write", "written-back": "written back and read back the same",
      lost: "not read back the same after the write" }[e.state] || e.state;
    return `keys: ${said} (${where})`;
  }
  if (!e.decoded) return `keys: a raw copy of ${where} was kept. ${(e.notes || []).join(" ")}`;
  const parts = [`DevEUI ${e.dev_eui || "-"}`, `AppEUI ${e.app_eui || "-"}`,
    `band ${e.band ?? "-"}${e.region ? ` (${e.region})` : ""}`, `class ${e.class || "-"}`];
  if (e.app_key_blank !== null && e.app_key_blank !== undefined) {
    parts.push(`AppKey ${e.app_key_blank ? "all zeros (not set)" : "set (hidden)"}`);
  }
  return `keys read before the write (${where}): ${parts.join(", ")}` + (e.kept_in ? `; a copy is kept in ${e.kept_in}` : "");
}

function addNote(job, kind, text) {
  $(".notes", job.el).append(h("li", { class: kind }, text));
}

function showPrompt(job, e) {
  const box = $(".prompt", job.el);
  box.hidden = false;
  announce(`${job.port}: ${e.message}`);
  showHands(job);
  if (e.action !== "press-reset") {        // a recovery's steps for the person: the flow words them
    const lead = { "hold-boot0-and-reset": "Start the chip's ROM bootloader now:",
      "hold-boot-and-reset": "Start the chip's secure bootloader now:",
      "hold-gpio0-and-reset": "Start the chip's ROM download mode now:",
      "release-gpio0-and-reset": "Start the new firmware now:" };
    $(".prompt-why", box).textContent = lead[e.action] || "Do this now:";
    $(".prompt-do", box).textContent = e.message;
    $(".countdown", box).textContent = e.window ? `${Math.round(e.window)} s left` : "";
    $(".press-virtual", box).hidden = true;
    const now = $(".phases li.now", job.el);   // the step is the person's now, not identification's
    if (now) now.classList.replace("now", "past");
    $(".phases", job.el).append(h("li", { class: "now", "data-phase": "you" }, "waiting for you"));
    return;
  }
  const why = e.cause === "flooding" || e.action === "press-reset"
    ? "The firmware on the module prints without pause, so it can't hear the boot command."
    : "";
  $(".prompt-why", box).textContent = `${why} (${e.message})`;
  $(".prompt-do", box).textContent = e.reset_line
    ? `Pulsing ${e.reset_line.toUpperCase()} to reset the module, then sending the boot command in a burst.`
    : e.action === "press-reset"
      ? "Press the module's reset button now. rakflash sends the boot command in a burst and catches the module as it starts."
      : e.message;
  $(".countdown", box).textContent = e.window ? `${Math.round(e.window)} s left` : "";
  $(".press-virtual", box).hidden = true;      // the virtual module's own buttons are shown instead
}

function showChoice(job, e) {
  const box = $(".choose", job.el);
  box.hidden = false;
  const fits = e.image_fits && e.image_fits.length ? ` The file is built for: ${e.image_fits.join(", ")}.` : "";
  fill(box,
    h("p", { class: "question" }, e.message),
    h("p", { class: "muted" }, `${fits.trim()} Pick the module named on its label, or Cancel.`.trim()),
    h("p", {}, e.candidates.map((m) => [h("button", {
      class: "module-choice", "data-module": m.key,
      onclick: () => act(`api/jobs/${job.id}/answer`, { module: m.key, tab: TAB }),
    }, `It is a ${m.name}`), " "])));
}

// Said to screen readers (a polite live region): phases, each quarter of a transfer, prompts, results.
function announce(text) {
  $("#announce").textContent = text;
}

function showProgress(job, bytes, total, phase, rate, eta) {
  const box = $(".progress", job.el);
  box.hidden = false;
  const bar = $("progress", box);
  bar.max = total || 1;
  bar.value = bytes;
  const pct = total ? Math.floor((100 * bytes) / total) : 0;
  const what = PHASES[phase] || phase;
  bar.setAttribute("aria-label", `${what} progress`);
  bar.setAttribute("aria-valuetext", `${pct} %`);
  const quarter = Math.floor(pct / 25);
  if (job.quarter !== `${phase}${quarter}` && quarter > 0) {
    job.quarter = `${phase}${quarter}`;
    announce(`${job.title}: ${what} ${pct} %`);
  }
  let text = `${what}: ${pct} % · ${num(bytes)} of ${num(total)} bytes`;
  if (rate) text += ` · ${kib(rate)}`;
  if (eta !== undefined && eta !== null && bytes < total) text += ` · ${secs(eta)} left`;
  $(".progress-text", box).textContent = text;
}

function renderRecoveryPlan(job, p) {
  const box = $(".plan", job.el);
  box.hidden = false;
  fill(box,
    h("table", { class: "kv" },
      h("tr", {}, h("th", {}, "module"), h("td", {}, `${p.module} on ${job.port}, method ${p.method}`)),
      h("tr", {}, h("th", {}, "image"), h("td", {}, `${job.el.querySelector(".job-title").textContent}: bootloader ${p.bootloader_version_new || "-"}, application ${p.app_version_new || "-"}, ${num(p.bytes)} bytes to write`)),
      h("tr", {}, h("th", {}, "estimate"), h("td", {}, `${p.estimated_seconds.toFixed(1)} s at ${p.baud} baud`))),
    (p.notes || []).map((n) => h("p", { class: "note" }, "note: " + n)),
    p.keys ? h("p", { class: "keys-plan" }, h("strong", {}, "keys: "), p.keys.says) : null,
    h("p", {}, h("strong", {}, "plan:")),
    h("ol", { class: "steps" }, p.steps.map((s) => h("li", {}, s))),
    h("p", {}, h("strong", {}, "you:")),
    h("ul", { class: "guide" }, p.guide.map((s) => h("li", {}, s))),
    p.stm32flash ? h("p", { class: "muted" }, `same with stm32flash${p.stm32flash_note ? ` (${p.stm32flash_note})` : ""}: `, h("code", {}, p.stm32flash)) : null,
  );
  job.plan = p;
}

function renderPlan(job, p) {
  if (p.method) return renderRecoveryPlan(job, p);
  const box = $(".plan", job.el);
  box.hidden = false;
  fill(box,
    h("table", { class: "kv" },
      h("tr", {}, h("th", {}, "device"), h("td", {}, `${p.module} on ${p.port}, ${p.mode === "app" ? "application running" : "in its bootloader"}, application ${p.app_version_before || "-"}, bootloader ${p.bootloader_version || "-"}`)),
      h("tr", {}, h("th", {}, "image"), h("td", {}, `${p.image}: application ${p.app_version_new || "-"}, ${num(p.bytes)} bytes to ${hex(p.address)}`)),
      h("tr", {}, h("th", {}, "estimate"), h("td", {}, `${p.estimated_seconds.toFixed(1)} s at ${p.baud} baud`))),
    (p.notes || []).map((n) => h("p", { class: "note" }, "note: " + n)),
    h("p", {}, h("strong", {}, "plan:")),
    h("ol", { class: "steps" }, p.steps.map((s) => h("li", {}, s))),
  );
  job.plan = p;
}

// ------------------------------------------------------------------ several modules at once
function fleetTable(job) {
  const body = h("tbody");
  for (const port of job.ports) {
    const cells = {
      module: h("td", { class: "f-module" }, "-"), serial: h("td", { class: "f-serial" }, "-"),
      step: h("td", { class: "f-step" }, "waiting"), bar: h("progress", { max: 1, value: 0, hidden: true }),
      bytes: h("span", { class: "f-bytes" }), result: h("td", { class: "f-result" }),
    };
    const row = h("tr", { "data-port": port }, h("td", { class: "mono" }, port), cells.module, cells.serial,
      cells.step, h("td", { class: "f-progress" }, cells.bar, " ", cells.bytes), cells.result);
    job.rows.set(port, { row, ...cells });
    body.append(row);
  }
  const table = h("table", { class: "fleet" },
    h("thead", {}, h("tr", {}, ["port", "module", "serial number", "step", "progress", "result"].map((t) => h("th", {}, t)))),
    body);
  $(".phases", job.el).replaceWith(table);
  $(".flash", job.el).textContent = "Flash these modules";
}

function fleetEvent(job, e) {
  const r = job.rows.get(e.port);
  if (!r) return;
  switch (e.event) {
    case "device":
      r.module.textContent = (e.module || "unknown") + (e.module && e.module_certain === false ? " (probably)" : "");
      r.serial.textContent = e.serial_number || "-";
      break;
    case "phase": r.step.textContent = PHASES[e.phase] || e.phase; break;
    case "plan":
      r.module.textContent = e.module;
      r.result.textContent = `plan: ${num(e.bytes)} bytes, ${e.app_version_before || "-"} → ${e.app_version_new || "-"}, about ${Math.ceil(e.estimated_seconds)} s`;
      break;
    case "progress":
      r.bar.hidden = false;
      r.bar.max = e.total || 1;
      r.bar.value = e.bytes;
      r.bytes.textContent = `${num(e.bytes)} of ${num(e.total)}` + (e.rate ? ` · ${kib(e.rate)}` : "");
      break;
    case "prompt":
      r.step.replaceChildren(h("strong", { class: "f-prompt" }, "press this module's reset button now"),
        " ", h("span", { class: "countdown" }, e.window ? `${Math.round(e.window)} s left` : ""));
      if (state.ports.some((p) => p.port === e.port && p.resettable)) {
        r.step.append(" ", h("button", { class: "press-virtual", onclick: () => act("api/virtual/reset", { port: e.port }) },
          "press the virtual module's reset"));
      }
      break;
    case "countdown": { const c = $(".countdown", r.step); if (c) c.textContent = `${e.seconds_left} s left`; break; }
    case "caught": r.step.textContent = "caught in its bootloader"; break;
    case "warning": addNote(job, "warning", `${e.port}: warning: ${e.message}`); break;
    case "note": addNote(job, "note", `${e.port}: note: ${e.message}`); break;
    case "device-result": {
      r.step.textContent = "done";
      r.row.dataset.result = e.result;
      r.result.className = "f-result " + (e.error ? "bad" : "good");
      if (e.result === "dry-run") break;                   // the plan stays shown until the update
      if (e.result === "ok") {
        r.result.replaceChildren(h("span", { class: "before" }, e.app_version_before || "(bootloader)"), " → ",
          h("span", { class: "after" }, e.app_version_after || "-"));
      } else if (e.result === "already-up-to-date") {
        r.result.textContent = `already runs ${e.app_version_after}`;
      } else {
        r.result.textContent = `${e.result}: ${e.message || ""}`;
      }
      if (e.module) r.module.textContent = e.module;
      if (e.serial_number) r.serial.textContent = e.serial_number;
      if (e.provision && e.provision.dev_eui) {
        const p = e.provision;
        r.result.append(h("span", { class: "f-keys" }, ` · keys: line ${p.line}, DevEUI ${p.dev_eui} ` +
          (p.result === "written" ? "(written and read back)" : p.result === "already-written" ? "(already written)"
            : `(${p.result})`)));
      }
      if (e.provision && !$("#batch").hidden) showBatch();     // the batch's rows, live
      break;
    }
  }
}

function renderFleetResult(job, r) {
  const box = $(".result", job.el);
  box.className = "result " + r.outcome;
  const counts = Object.entries(r.results).map(([k, n]) => `${n} ${k}`).join(", ");
  const head = r.written !== "nothing"
    ? `${r.ok} of ${r.modules} modules updated or up to date` + (r.failed ? `; ${r.failed} not (see ${r.failed === 1 ? "its row" : "their rows"})` : "")
    : (r.outcome === "aborted" ? "Not written: the update was not confirmed" : "Nothing written: no module's plan stood");
  box.append(h("p", { class: "headline" }, h("strong", {}, head + ".")),
    h("p", { class: "muted code" }, `results: ${counts}`));
  if (r.report) {
    box.append(h("p", {}, h("a", { href: `api/jobs/${job.id}/report`, class: "report", download: "" },
      "Download the report"), " (one JSON line per module: serial number, DevEUI, versions, result, the image's SHA-256)"));
  }
}

function renderResult(job, r) {
  const el = job.el;
  $(".actions", el).hidden = true;
  $(".running-actions", el).hidden = true;
  $(".prompt", el).hidden = true;
  for (const li of el.querySelectorAll(".phases li")) li.classList.replace("now", "past");
  const box = $(".result", el);
  box.hidden = false;
  setTimeout(() => announce(`${job.title} on ${job.port}: ${box.querySelector(".headline")?.textContent || r.result}`), 0);
  box.dataset.outcome = r.outcome;
  box.dataset.result = r.result;
  box.replaceChildren();
  if (job.kind === "fleet" && r.results) return renderFleetResult(job, r);   // (else an error before any module)
  if (r.outcome === "ok" && r.result === "ok" && r.method) {
    box.className = "result ok";
    box.append(h("p", { class: "headline" }, h("strong", {}, "Done: "), `${r.module} bootloader `,
      h("span", { class: "boot-before" }, r.bootloader_version_before || "unknown"), " → ",
      h("span", { class: "boot-after" }, r.bootloader_version_after || "unknown"), ", application ",
      h("span", { class: "before" }, r.app_version_before || "unknown"), " → ",
      h("span", { class: "after" }, r.app_version_after || "unknown")));
    box.append(h("p", {}, `${num(r.bytes)} bytes written and verified (${r.verify}) in ${r.seconds.toFixed(1)} s`));
    if (r.keys) {
      box.append(h("p", { class: "keys " + r.keys }, h("strong", {}, `keys: ${r.keys}`), ` — ${r.keys_reason || ""}`
        + (r.keys_kept_in ? ` (copy kept in ${r.keys_kept_in})` : "")));
    }
    for (const w of r.warnings || []) box.append(h("p", { class: "note" }, "warning: " + (w.message || w)));
  } else if (r.outcome === "ok" && r.result === "ok") {
    box.className = "result ok";
    box.append(h("p", { class: "headline" }, h("strong", {}, "Done: "),
      `${r.module} `, h("span", { class: "before" }, r.app_version_before || "(bootloader)"), " → ",
      h("span", { class: "after" }, r.app_version_after || "-")));
    const sent = r.resumed_at   // the bootloader kept what an interrupted run had sent
      ? `${num(r.bytes_sent)} bytes sent, resumed at byte ${num(r.resumed_at)} of ${num(r.bytes)} (an interrupted run had sent the rest)`
      : `${num(r.bytes)} bytes`;
    box.append(h("p", {}, `${sent} in ${r.seconds.toFixed(1)} s (transfer ${r.transfer_seconds.toFixed(1)} s, `
      + `${kib(r.bytes_per_second)}; bootloader entered in ${r.boot_seconds.toFixed(2)} s)`));
    box.append(h("p", { class: "settings" }, settingsText(r)));
    if (r.verified && r.verified.length) {     // an ESP chip: the MD5 it computed of what it holds
      box.append(h("p", { class: "verified" }, "verified: the chip's MD5 of "
        + r.verified.map((v) => `${hex(v.address)}+${num(v.bytes)}`).join(", ") + " is the image's"));
    }
    showProgress(job, r.bytes, r.bytes, "write");
  } else if (r.outcome === "ok") {
    box.className = "result ok";
    box.append(h("p", { class: "headline" }, h("strong", {}, "Nothing to do: "), r.message + "."), ...nextStep(r, job));
    if (r.settings) box.append(h("p", { class: "settings" }, settingsText(r)));
  } else {
    const what = { refused: "Refused before writing", aborted: "Not written", failed: "Failed", stopped: "Stopped" }[r.outcome] || "Failed";
    box.className = "result " + r.outcome;
    box.append(h("p", { class: "headline" }, h("strong", {}, what + ": "), r.message), ...nextStep(r, job));
    if (r.problems && r.problems.length) box.append(h("ul", { class: "problems" }, r.problems.map((p) => h("li", {}, p))));
    if (r.outcome === "aborted" && r.answered_in && r.answered_in !== TAB) {
      box.append(h("p", { class: "elsewhere" }, "This plan was cancelled in another tab or window of this page."));
    }
    // One field, three values (rakflash.written): what went out and was acknowledged.
    const written = { nothing: "Nothing was written to the module.",
      part: "Part of the image was written: the module holds part of the new image or erased flash (the hint says which).",
      all: "The whole image was written." }[r.written];
    if (written) box.append(h("p", { class: "muted written" }, written));
  }
  box.append(h("p", { class: "muted code" }, `result: ${r.result}` + (r.error ? `, error: ${r.error}` : "")));
}

// What happened to the owner's keys, as the CLI says it; settings lost or not checked are
// said by the flow's warnings, shown with the job's notes as they come.
function settingsText(r) {
  const s = r.settings;
  // `checked`: the keys whose value after the update is known; `unchecked`: the ones that may have changed.
  const checked = (s && s.checked) || [], unknown = (s && s.unchecked) || [], lost = (s && s.lost) || [];
  if (!checked.length && !unknown.length) return "";
  const earlier = s.from_earlier_run ? " (the values read by the earlier, interrupted run)" : "";
  const fine = checked.filter((n) => !lost.includes(n) && !(s.restored || []).includes(n));
  const lines = [];
  if (s.restored && s.restored.length) {
    lines.push(`settings: the new firmware had reset ${s.restored.join(", ")}; rakflash wrote back the values from before the update${earlier}.`);
  } else if (fine.length) {
    lines.push(`settings: ${fine.join(", ")} kept${earlier}.`);
  }
  if (lost.length) lines.push(`settings: ${lost.join(", ")} lost: the new firmware changed ${lost.length === 1 ? "it" : "them"} and rakflash could not write ${lost.length === 1 ? "it" : "them"} back (see the warning).`);
  if (unknown.length) lines.push(`settings: ${unknown.join(", ")} may have changed: rakflash could not confirm ${unknown.length === 1 ? "its value" : "their values"} after the update (see the warning).`);
  return lines.join(" ");
}

// ------------------------------------------------------------------ confirmation
function openConfirm(job) {
  state.confirming = job;
  $("#confirm-text").textContent = job.question || "Write the firmware?";
  $("#confirm-note").textContent = job.kind === "recover"
    ? "The module's flash is rewritten, bootloader included, through the chip's ROM bootloader. Follow the "
      + "steps under \u201cyou:\u201d when rakflash asks."
    : "The module's application is replaced. If anything stops the update, the module waits in its "
      + "bootloader and running the update again finishes it.";
  $("#confirm").showModal();
}

function closeConfirm() {
  state.confirming = null;
  if ($("#confirm").open) $("#confirm").close();
}

$("#confirm-write").addEventListener("click", () => {
  const job = state.confirming;
  closeConfirm();
  if (job) act(`api/jobs/${job.id}/answer`, { write: true, tab: TAB });
});
$("#confirm-cancel").addEventListener("click", closeConfirm);

// ------------------------------------------------------------------ wiring
$("#file").addEventListener("change", (ev) => { if (ev.target.files[0]) upload(ev.target.files[0]); });
const drop = $("#drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  if (ev.dataTransfer.files[0]) upload(ev.dataTransfer.files[0]);
});
$("#recover").addEventListener("click", () => {
  if (state.picked.length === 1 && state.image) recoverPort(state.picked[0]);
});
$("#batch-form").addEventListener("submit", (ev) => { ev.preventDefault(); showBatch(); maybeCheck(); });

$("#add-port").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const port = $("#other-port").value.trim();
  if (!port) return;
  const { status, data } = await act("api/ports", { port });
  if (status !== 200) return;
  $("#other-port").value = "";
  renderPorts(data.ports);
  pickPort(port);
});

function linkState(kind, text) {
  $("#link-state").textContent = text;
  $("#link-state").className = "link-state " + (kind === "up" ? "up" : "down");
}

(async function start() {
  const { data } = await api("api/modules");
  for (const m of data.modules || []) $("#opt-module").append(h("option", { value: m.key }, m.name));
  const events = new EventSource("api/events");
  events.onopen = () => linkState("up", "connected");
  events.onerror = () => (state.server === "stopped"
    ? linkState("down", "rakflash web has stopped")
    : linkState("down", "connection lost: retrying…"));
  events.addEventListener("ports", (ev) => renderPorts(JSON.parse(ev.data)));
  events.onmessage = (ev) => onJobEvent(JSON.parse(ev.data));
})();
