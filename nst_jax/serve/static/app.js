// The nst-jax page: no build step. It talks to the API of nst_jax/serve/app.py.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const headers = token ? {Authorization: "Bearer " + token} : {};
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
const $ = (id) => document.getElementById(id);
let current = null, events = null;

async function api(path, options = {}) {
  const response = await fetch(path, {...options, headers: {...headers, ...(options.headers || {})}});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function drawCurve(losses) {
  const canvas = $("curve"), g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const points = losses.filter((x) => x > 0 && isFinite(x)).map(Math.log10);
  if (points.length < 2) return;
  const lo = Math.min(...points), hi = Math.max(...points), pad = 14;
  g.strokeStyle = "#1565c0"; g.lineWidth = 2; g.beginPath();
  points.forEach((y, i) => {
    const px = pad + (canvas.width - 2 * pad) * i / (points.length - 1);
    const py = canvas.height - pad - (canvas.height - 2 * pad) * (hi > lo ? (y - lo) / (hi - lo) : 0.5);
    i ? g.lineTo(px, py) : g.moveTo(px, py);
  });
  g.stroke();
  g.fillStyle = "#555"; g.font = "12px monospace";
  g.fillText("log10 loss " + hi.toFixed(2), pad, 12); g.fillText(lo.toFixed(2), pad, canvas.height - 2);
}

function show(job) {
  const batch = job.batch ? ` · batch of ${job.batch.size}` : "";
  $("status").textContent = `${job.status} · iteration ${job.iteration}/${job.iterations}${batch}` +
    (job.error ? ` · ${job.error}` : "");
  if (job.iteration > 0 || job.status === "done") $("preview").src = withToken(job.preview);
  drawCurve(job.losses || []);
  const finished = ["done", "failed", "cancelled"].includes(job.status);
  $("cancel").hidden = finished;
  if (job.status === "done") {
    $("download").href = withToken(`/jobs/${job.id}/image`);
    $("download").download = `nst-jax-${job.id.slice(0, 8)}.png`;
    $("download").hidden = false;
  }
}

function follow(id) {
  if (events) events.close();
  current = id;
  $("download").hidden = true;
  events = new EventSource(withToken(`/jobs/${id}/events`));
  events.addEventListener("progress", (e) => {
    const job = JSON.parse(e.data);
    show(job);
    if (["done", "failed", "cancelled"].includes(job.status)) events.close();
  });
}

$("job").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("error").textContent = "";
  const form = new FormData();
  form.append("content", $("content").files[0]);
  form.append("style", $("style").files[0]);
  for (const name of ["preset", "size", "style-weight", "iterations", "preserve-colors", "chunk-size"]) {
    const value = $(name).value.trim();
    if (value !== "") form.append(name, value);
  }
  try {
    const {id} = await api("/jobs", {method: "POST", body: form});
    follow(id);
  } catch (err) {
    $("error").textContent = err.message;
  }
});

$("cancel").addEventListener("click", () => current && api(`/jobs/${current}`, {method: "DELETE"}));

async function refresh() {
  try {
    const {jobs} = await api("/jobs");
    $("queue").tBodies[0].replaceChildren(...jobs.slice(0, 20).map((j) => {
      const row = document.createElement("tr");
      for (const text of [j.id.slice(0, 8), j.status, `${j.iteration}/${j.iterations}`,
                          j.batch ? `${j.batch.id.slice(0, 6)} (${j.batch.size})` : ""]) {
        const cell = document.createElement("td"); cell.textContent = text; row.append(cell);
      }
      row.addEventListener("click", () => follow(j.id));
      return row;
    }));
    const health = await api("/healthz");
    if (health.view) {  // nst-jax stylize --web: a view of one run, no new jobs
      $("health").textContent = `watching ${health.view}`;
      $("job").hidden = true;
    } else {
      $("health").textContent = `ready · ${health.arch} · up to ${health.max_batch} jobs a batch`;
    }
  } catch (err) {
    $("health").textContent = "not ready: " + err.message;
  }
}

(async () => {
  const {presets} = await api("/options");
  $("preset").replaceChildren(...presets.map((p) => new Option(p, p, p === "default", p === "default")));
  const watched = new URLSearchParams(location.search).get("job");  // nst-jax stylize --web
  if (watched) follow(watched);
  refresh();
  setInterval(refresh, 2000);
})();
