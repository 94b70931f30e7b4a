// The playground's page: builds the sliders from the wasm module's control tables, asks the
// module for a redraw on every change (the kernels run on this page's WebGPU device) and draws
// what it returns on canvases. Plain JavaScript; the state the page check reads is
// `window.playground` (and `data-state` on <html>: loading, ready, no-webgpu, failed).
import init, { Playground } from "./pkg/gumbel_wgpu_web_example.js";

/** The chi-square tests pass at p >= P_MIN (the page check uses the same threshold). */
const P_MIN = 1e-3;
/** Soft samples per simplex redraw. */
const SIMPLEX_ROWS = 20000;
/** Positions of a log-scale slider (position 0 is the value 0). */
const LOG_STEPS = 240;

const $ = (id) => document.getElementById(id);
const state = (window.playground = {
  ready: false,
  error: null,
  device: null,
  pMin: P_MIN,
  simplex: null,
  tokens: null,
});
const setPageState = (s) => (document.documentElement.dataset.state = s);
setPageState("loading");

function fail(e) {
  const msg = e?.message ?? String(e);
  state.error = msg;
  $("status").textContent = "Failed: " + msg;
  setPageState("failed");
  console.error(e);
}

function noWebGPU(why) {
  state.error = "no WebGPU: " + why;
  $("no-webgpu-why").textContent = why;
  $("no-webgpu").hidden = false;
  $("status").textContent = "No WebGPU in this browser.";
  for (const p of document.querySelectorAll(".panel")) p.hidden = true;
  setPageState("no-webgpu");
}

// ---------------------------------------------------------------------------------------------
// Sliders from a control table (the wasm module's JSON: name, label, help, min, max, initial,
// scale, step or smallest, off).

/** A slider's positions and the values they stand for. */
function scaleOf(c) {
  if (c.scale === "log0") {
    const lo = Math.log(c.smallest), hi = Math.log(c.max), n = LOG_STEPS;
    return {
      min: 0, max: n, step: 1,
      // Two significant digits, so round values (0.5, 1, 5) are on the grid.
      toValue: (p) => (+p === 0 ? 0 : Math.min(c.max, +Math.exp(lo + ((hi - lo) * (p - 1)) / (n - 1)).toPrecision(2))),
      toPos: (v) => (v <= 0 ? 0 : 1 + Math.round(((Math.log(v) - lo) / (hi - lo)) * (n - 1))),
    };
  }
  const step = c.scale === "integer" ? 1 : c.step;
  // Values on the step grid, without binary-fraction tails (0.35, not 0.35000000000000003).
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const snap = (v) => Math.min(c.max, Math.max(c.min, +(+v).toFixed(digits)));
  return { min: c.min, max: c.max, step, toValue: snap, toPos: (v) => v };
}

function formatValue(c, v) {
  if (c.off !== null && v === c.off) return "off";
  if (c.scale === "integer") return String(v);
  if (c.scale === "log0") return v === 0 ? "0" : v.toPrecision(2);
  return v.toFixed(Math.max(0, -Math.floor(Math.log10(c.step) + 1e-9)));
}

/** Builds one slider per entry of `table` into `container`; `set(name, value)` gives the value
 * to the module, `changed()` asks for a redraw. Every slider starts at its grid value nearest the
 * table's initial one, given to the module at once. */
function buildControls(prefix, container, table, set, changed) {
  for (const c of table) {
    const s = scaleOf(c);
    const label = document.createElement("label");
    label.className = "control";
    label.title = c.help;
    const name = document.createElement("span");
    name.textContent = c.label;
    const out = document.createElement("output");
    const input = document.createElement("input");
    Object.assign(input, { type: "range", id: `${prefix}-${c.name}`, min: s.min, max: s.max, step: s.step });
    input.value = s.toPos(c.initial);
    out.htmlFor = input.id;
    const apply = () => {
      const v = s.toValue(input.value);
      set(c.name, v);
      out.textContent = formatValue(c, v);
      input.setAttribute("aria-valuetext", out.textContent);
    };
    apply();
    input.addEventListener("input", () => {
      try {
        apply();
        changed();
      } catch (e) {
        fail(e);
      }
    });
    label.append(name, out, input);
    container.append(label);
  }
}

/** Runs the module's draws one after another: they must not overlap (see `Inner::drawing` in
 * src/lib.rs), and the two panels ask for draws independently. */
let gpuQueue = Promise.resolve();
function onGpu(f) {
  const run = gpuQueue.then(f);
  gpuQueue = run.catch(() => {});
  return run;
}

/** Runs `draw` now, or once more after the running one when asked during it: every change is
 * drawn, and never two draws of a panel at once. */
function redrawer(panel, draw) {
  let running = false, again = false;
  return async function request() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    panel.setAttribute("aria-busy", "true");
    try {
      do {
        again = false;
        await draw();
      } while (again);
    } catch (e) {
      fail(e);
    } finally {
      running = false;
      panel.setAttribute("aria-busy", "false");
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Canvases.

/** Sizes a canvas's pixels to its CSS box at the device's pixel ratio. */
function fit(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const r = canvas.getBoundingClientRect();
  const w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  return { ctx, w, h, dpr };
}

/** What the page check compares: an FNV-1a digest of a canvas's pixels and how many are not
 * white. */
function pictureOf(canvas) {
  const { width: w, height: h } = canvas;
  const px = canvas.getContext("2d", { willReadFrequently: true }).getImageData(0, 0, w, h).data;
  let hash = 0x811c9dc5, inked = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (px[i] < 235 || px[i + 1] < 235 || px[i + 2] < 235) inked++;
    hash = Math.imul(hash ^ px[i] ^ (px[i + 1] << 8) ^ (px[i + 2] << 16), 16777619) >>> 0;
  }
  return { digest: hash.toString(16), inked, width: w, height: h };
}

const CLASS = ["A", "B", "C"];

/** The triangle's corners (A top, B bottom left, C bottom right) inside a w x h canvas. */
function corners(w, h, dpr) {
  const pad = 26 * dpr;
  const side = Math.min(w - 2 * pad, ((h - 2 * pad) * 2) / Math.sqrt(3));
  const tri = (side * Math.sqrt(3)) / 2;
  const x0 = (w - side) / 2, y0 = (h - tri) / 2;
  return [[w / 2, y0], [x0, y0 + tri], [x0 + side, y0 + tri]];
}

function drawSimplex(canvas, d) {
  const { ctx, w, h, dpr } = fit(canvas);
  const c = corners(w, h, dpr);
  // A log-scaled density of the samples, each a small disc.
  const counts = new Uint32Array(w * h);
  const y = d.samples, rows = y.length / 3, r = Math.max(1, Math.round(1.2 * dpr));
  let nearCorner = [0, 0, 0];
  for (let i = 0; i < rows; i++) {
    const a = y[3 * i], b = y[3 * i + 1], e = y[3 * i + 2], s = a + b + e;
    const px = Math.round((a * c[0][0] + b * c[1][0] + e * c[2][0]) / s);
    const py = Math.round((a * c[0][1] + b * c[1][1] + e * c[2][1]) / s);
    for (let k = 0; k < 3; k++) if (y[3 * i + k] > 0.98) nearCorner[k]++;
    for (let dy = -r; dy <= r; dy++)
      for (let dx = -r; dx <= r; dx++) {
        const qx = px + dx, qy = py + dy;
        if (dx * dx + dy * dy <= r * r && qx >= 0 && qy >= 0 && qx < w && qy < h) counts[qy * w + qx]++;
      }
  }
  // Each sample covers its disc at opacity 0.15, as dots of a scatter plot would: a lone sample
  // is a pale dot, where many fall the colour saturates.
  const image = ctx.createImageData(w, h);
  const data = image.data;
  for (let i = 0; i < counts.length; i++) {
    const t = 1 - Math.pow(0.85, counts[i]);
    data[4 * i] = 255 + (16 - 255) * t;
    data[4 * i + 1] = 255 + (64 - 255) * t;
    data[4 * i + 2] = 255 + (150 - 255) * t;
    data[4 * i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  ctx.strokeStyle = "#1d2330";
  ctx.lineWidth = 1.2 * dpr;
  ctx.beginPath();
  ctx.moveTo(...c[0]);
  ctx.lineTo(...c[1]);
  ctx.lineTo(...c[2]);
  ctx.closePath();
  ctx.stroke();
  // The share of (nearly) one-hot samples at each corner: a red disc of that area.
  ctx.fillStyle = "rgba(192, 57, 43, 0.85)";
  for (let k = 0; k < 3; k++) {
    const rr = 16 * dpr * Math.sqrt(nearCorner[k] / rows);
    if (rr > 0.5) {
      ctx.beginPath();
      ctx.arc(c[k][0], c[k][1], rr, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  ctx.fillStyle = "#1d2330";
  ctx.font = `${12 * dpr}px system-ui, sans-serif`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  const off = [[0, -14], [-4, 14], [4, 14]];
  for (let k = 0; k < 3; k++) ctx.fillText(CLASS[k], c[k][0] + off[k][0] * dpr, c[k][1] + off[k][1] * dpr);
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  ctx.fillStyle = "#5b6472";
  ctx.fillText(d.tau === 0 ? "\u03c4 = 0 (one-hot)" : `\u03c4 = ${+d.tau.toPrecision(2)}`, 4 * dpr, 4 * dpr);
}

function drawHard(canvas, d) {
  const { ctx, w, h, dpr } = fit(canvas);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, w, h);
  const total = d.hardCounts.reduce((a, b) => a + b, 0);
  const freq = d.hardCounts.map((n) => n / total);
  const top = 40 * dpr, bottom = 46 * dpr, plotH = h - top - bottom;
  const ymax = Math.max(...freq, ...d.softmax) * 1.1;
  const gw = w / 3;
  ctx.font = `${11 * dpr}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  // The legend: a blue box for the hard samples' shares, a red line for softmax.
  ctx.fillStyle = "#1f4e9a";
  ctx.fillRect(2 * dpr, 3 * dpr, 10 * dpr, 10 * dpr);
  ctx.fillStyle = "#c0392b";
  ctx.fillRect(2 * dpr, 22 * dpr, 10 * dpr, 3 * dpr);
  ctx.fillStyle = "#5b6472";
  ctx.fillText("hard samples (argmax)", 16 * dpr, 2 * dpr);
  ctx.fillText("softmax(logits)", 16 * dpr, 17 * dpr);
  for (let k = 0; k < 3; k++) {
    const x = k * gw + gw * 0.2, bw = gw * 0.6, mid = x + bw / 2;
    const bh = (freq[k] / ymax) * plotH;
    ctx.fillStyle = "#1f4e9a";
    ctx.fillRect(x, top + plotH - bh, bw, bh);
    const sy = top + plotH - (d.softmax[k] / ymax) * plotH;
    ctx.strokeStyle = "#c0392b";
    ctx.lineWidth = 2.5 * dpr;
    ctx.beginPath();
    ctx.moveTo(x - 4 * dpr, sy);
    ctx.lineTo(x + bw + 4 * dpr, sy);
    ctx.stroke();
    ctx.textAlign = "center";
    ctx.fillStyle = "#1d2330";
    ctx.fillText(CLASS[k], mid, top + plotH + 3 * dpr);
    ctx.fillStyle = "#1f4e9a";
    ctx.fillText(freq[k].toFixed(3), mid, top + plotH + 17 * dpr);
    ctx.fillStyle = "#c0392b";
    ctx.fillText(d.softmax[k].toFixed(3), mid, top + plotH + 30 * dpr);
  }
  ctx.strokeStyle = "#d9dee6";
  ctx.lineWidth = dpr;
  ctx.beginPath();
  ctx.moveTo(0, top + plotH + 0.5);
  ctx.lineTo(w, top + plotH + 0.5);
  ctx.stroke();
}

/** Bars of the processed law (pale) and of the draws' shares (dark), one per token. */
function drawTokens(canvas, d, words, hover) {
  const { ctx, w, h, dpr } = fit(canvas);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, w, h);
  const n = d.law.length, total = d.counts.reduce((a, b) => a + b, 0);
  const left = 34 * dpr, right = 4 * dpr, top = 22 * dpr, bottom = 62 * dpr;
  const plotW = w - left - right, plotH = h - top - bottom, bw = plotW / n;
  const ymax = Math.max(...d.law, ...d.counts.map((c) => c / total)) * 1.08;
  const yOf = (p) => top + plotH - (p / ymax) * plotH;
  // Grid lines at round probabilities.
  const stepP = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5].find((s) => ymax / s <= 5) ?? 0.5;
  ctx.font = `${10 * dpr}px system-ui, sans-serif`;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let p = 0; p <= ymax; p += stepP) {
    ctx.strokeStyle = "#eef0f4";
    ctx.lineWidth = dpr;
    ctx.beginPath();
    ctx.moveTo(left, Math.round(yOf(p)) + 0.5);
    ctx.lineTo(w - right, Math.round(yOf(p)) + 0.5);
    ctx.stroke();
    ctx.fillStyle = "#5b6472";
    ctx.fillText(p.toFixed(2), left - 4 * dpr, yOf(p));
  }
  for (let i = 0; i < n; i++) {
    const x = left + i * bw;
    if (i === hover) {
      ctx.fillStyle = "#fff3c4";
      ctx.fillRect(x, top, bw, plotH);
    }
    ctx.fillStyle = "#b9cbe8";
    ctx.fillRect(x + 0.5 * dpr, yOf(d.law[i]), Math.max(1, bw - dpr), top + plotH - yOf(d.law[i]));
    const f = d.counts[i] / total;
    ctx.fillStyle = "#1f4e9a";
    ctx.fillRect(x + bw * 0.28, yOf(f), Math.max(1, bw * 0.44), top + plotH - yOf(f));
    if (d.law[i] === 0) {
      // A token the filters removed.
      ctx.fillStyle = "#c9ced6";
      ctx.fillRect(x + bw * 0.2, top + plotH - 2 * dpr, bw * 0.6, 2 * dpr);
    }
  }
  // The legend, top right.
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  const legend = [["#b9cbe8", "the law"], ["#1f4e9a", `share of ${total} draws`]];
  let lx = w - right - legend.reduce((a, [, t]) => a + ctx.measureText(t).width + 22 * dpr, 0);
  for (const [colour, text] of legend) {
    ctx.fillStyle = colour;
    ctx.fillRect(lx, 4 * dpr, 10 * dpr, 10 * dpr);
    ctx.fillStyle = "#5b6472";
    ctx.fillText(text, lx + 13 * dpr, 3 * dpr);
    lx += ctx.measureText(text).width + 22 * dpr;
  }
  // The words, as many as fit.
  const every = Math.max(1, Math.ceil((9 * dpr) / bw));
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i < n; i += every) {
    ctx.save();
    ctx.translate(left + (i + 0.5) * bw, top + plotH + 4 * dpr);
    ctx.rotate(-Math.PI / 3);
    ctx.fillStyle = d.law[i] > 0 ? "#1d2330" : "#b0b6c0";
    ctx.fillText(words[i], 0, 0);
    ctx.restore();
  }
}

// ---------------------------------------------------------------------------------------------
// The panels.

const fmtP = (p) => (p >= 0.01 ? p.toFixed(3) : p.toExponential(1));
const verdict = (p, impossible = 0) =>
  p >= P_MIN && impossible === 0
    ? `<b class="ok">agrees</b> (p \u2265 ${P_MIN})`
    : `<b class="bad">disagrees</b> (p < ${P_MIN} or impossible draws)`;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

async function main() {
  if (!navigator.gpu) {
    noWebGPU("(navigator.gpu is missing.)");
    return;
  }
  await init();
  $("status").textContent = "Opening the WebGPU device and compiling the kernels\u2026";
  const t0 = performance.now();
  let pg;
  try {
    pg = await Playground.open();
    console.log(`device and kernels ready in ${(performance.now() - t0).toFixed(0)} ms`);
  } catch (e) {
    noWebGPU(`(Opening a WebGPU device failed: ${e?.message ?? e}.)`);
    return;
  }
  state.device = pg.device_details();
  $("device").textContent = ` (${pg.device()})`;
  $("prompt").textContent = Playground.prompt();
  $("token-history").textContent =
    `Already generated (the penalties' history): ${Playground.history().join(", ")}. ` +
    `The mask bans: ${Playground.masked().join(", ")}.`;
  const words = Playground.words();
  state.words = words;

  // The simplex.
  const simplexPanel = $("simplex-panel");
  let simplexSeq = 0, lastSimplex = null;
  const renderSimplex = () => {
    if (!lastSimplex) return;
    drawSimplex($("simplex-canvas"), lastSimplex);
    drawHard($("hard-canvas"), lastSimplex);
  };
  const simplex = redrawer(simplexPanel, async () => {
    const r = await onGpu(() => pg.draw_simplex(SIMPLEX_ROWS));
    const d = {
      logits: Array.from(r.logits), tau: r.tau, noise: r.noise, samples: r.samples,
      hardCounts: Array.from(r.hard_counts), softmax: Array.from(r.softmax),
      chiSquare: r.chi_square, dof: r.dof, pValue: r.p_value,
      argmaxMismatches: r.argmax_mismatches, meanMax: r.mean_max, ms: r.ms,
    };
    r.free();
    lastSimplex = d;
    renderSimplex();
    $("simplex-stat").innerHTML =
      `${SIMPLEX_ROWS} samples in ${d.ms.toFixed(1)} ms (upload, soft and hard kernels, read-back` +
      `${simplexSeq === 0 ? "; the first draw waits for the kernels' compilation" : ""}). ` +
      `Hard shares against softmax: \u03c7\u00b2 = ${d.chiSquare.toFixed(2)} on ${d.dof} dof, ` +
      `p = ${fmtP(d.pValue)}: ${verdict(d.pValue)}. ` +
      (d.argmaxMismatches === 0
        ? "Every hard sample is its soft sample's largest class."
        : `<b class="bad">${d.argmaxMismatches} hard samples differ from their soft sample's largest class.</b>`);
    const { samples, ...summary } = d;
    state.simplex = { ...summary, rows: samples.length / 3, seq: ++simplexSeq, picture: pictureOf($("simplex-canvas")) };
  });
  buildControls("simplex", $("simplex-controls"), JSON.parse(Playground.simplex_controls()),
    (name, v) => pg.set_simplex(name, v), simplex);
  $("new-noise").addEventListener("click", () => {
    pg.new_simplex_noise();
    simplex();
  });

  // The token sampler.
  const tokenPanel = $("tokens-panel");
  let tokenSeq = 0, lastTokens = null, hover = -1;
  const times = [];
  const renderTokens = () => lastTokens && drawTokens($("token-canvas"), lastTokens, words, hover);
  const tokens = redrawer(tokenPanel, async () => {
    const r = await onGpu(() => pg.draw_tokens());
    const d = {
      mask: r.mask, bias: r.bias, repetitionPenalty: r.repetition_penalty,
      presencePenalty: r.presence_penalty, temperature: r.temperature, topNSigma: r.top_n_sigma,
      minP: r.min_p, topK: r.top_k, topP: r.top_p, step: r.step,
      law: Array.from(r.law), lawError: r.law_error, supportMismatches: r.support_mismatches,
      kept: r.kept, counts: Array.from(r.counts),
      tokens: Array.from(r.tokens), logprobs: Array.from(r.logprobs), logprobError: r.logprob_error,
      chiSquare: r.chi_square, dof: r.dof, pValue: r.p_value, bins: r.bins, impossible: r.impossible,
      ms: r.ms,
    };
    r.free();
    lastTokens = d;
    times.push(d.ms);
    if (times.length > 9) times.shift();
    renderTokens();
    const draws = d.tokens.length;
    const test = d.dof === 0
      ? `one token kept: every draw must be it (${d.impossible} others)`
      : `\u03c7\u00b2 = ${d.chiSquare.toFixed(1)} on ${d.dof} dof (${d.bins} bins; tokens expected fewer than 5 times pooled), p = ${fmtP(d.pValue)}`;
    $("token-stat").innerHTML =
      `Call ${d.step + 1}: ${draws} requests \u00d7 ${d.law.length} tokens in ${d.ms.toFixed(1)} ms ` +
      `(upload, kernel, read-back${times.length > 1 ? `; median of the last ${times.length} calls: ${median(times).toFixed(1)} ms` : "; the first call waits for the kernel's compilation"}). ` +
      `${d.kept} tokens kept. The GPU's law within ${d.lawError.toExponential(1)} of the f64 reference` +
      `${d.supportMismatches ? ` (${d.supportMismatches} tokens kept by only one of them!)` : ""}. ` +
      `Draws against the law: ${test}: ${verdict(d.dof === 0 ? 1 : d.pValue, d.impossible)}. ` +
      `Log-probabilities from the kernel within ${d.logprobError.toExponential(1)} of f64.`;
    const chips = d.tokens.slice(0, 8).map((t, i) =>
      `<span>#${i} <b>${words[t] ?? t}</b> log p ${d.logprobs[i].toFixed(2)}</span>`);
    $("token-draws").innerHTML = `<span>requests' draws, raw log-probability:</span>${chips.join("")}`;
    state.tokens = {
      ...d, tokens: d.tokens.slice(0, 16), logprobs: d.logprobs.slice(0, 16),
      draws, seq: ++tokenSeq, picture: pictureOf($("token-canvas")),
    };
  });
  buildControls("token", $("token-controls"), JSON.parse(Playground.token_controls()),
    (name, v) => pg.set_token(name, v), tokens);
  $("draw-again").addEventListener("click", tokens);
  const canvas = $("token-canvas");
  canvas.addEventListener("pointermove", (ev) => {
    if (!lastTokens) return;
    const rect = canvas.getBoundingClientRect();
    const left = 34, plotW = rect.width - 38;
    const i = Math.floor(((ev.clientX - rect.left - left) / plotW) * lastTokens.law.length);
    const next = i >= 0 && i < lastTokens.law.length ? i : -1;
    if (next === hover) return;
    hover = next;
    renderTokens();
    $("token-hover").textContent = hover < 0 ? "\u00a0" :
      `${words[hover]}: probability ${lastTokens.law[hover].toFixed(4)}, drawn ` +
      `${lastTokens.counts[hover]} of ${lastTokens.tokens.length} times`;
  });
  canvas.addEventListener("pointerleave", () => {
    hover = -1;
    renderTokens();
    $("token-hover").textContent = "\u00a0";
  });

  // Redraw the canvases (not the samples) when their boxes change size.
  let pending = false;
  new ResizeObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      renderSimplex();
      renderTokens();
      if (state.simplex) state.simplex.picture = pictureOf($("simplex-canvas"));
      if (state.tokens) state.tokens.picture = pictureOf($("token-canvas"));
    });
  }).observe(document.querySelector("main"));

  $("status").textContent = "Drawing\u2026";
  const timed = (name, draw) => async () => {
    await draw();
    console.log(`first ${name} draw done at ${(performance.now() - t0).toFixed(0)} ms`);
  };
  await Promise.all([timed("simplex", simplex)(), timed("token", tokens)()]);
  if (state.error) return;
  $("new-noise").disabled = false;
  $("draw-again").disabled = false;
  $("status").textContent = `Ready. The device: ${state.device}.`;
  state.ready = true;
  setPageState("ready");
}

main().catch(fail);
