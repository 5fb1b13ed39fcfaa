"use strict";
// Restores the chosen images one at a time so a single page never fills the server's queue.

const drop = document.getElementById("drop");
const picker = document.getElementById("files");
const taskSelect = document.getElementById("task");
const results = document.getElementById("results");
const template = document.getElementById("card");
const pending = [];
let running = false;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function stem(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(0, dot) : name;
}

function addCard(file) {
  const card = template.content.firstElementChild.cloneNode(true);
  card.querySelector(".name").textContent = file.name;
  card.querySelector(".status").textContent = "Waiting…";
  card.querySelector(".before").src = URL.createObjectURL(file);
  const compare = card.querySelector(".compare");
  card.querySelector(".slider").addEventListener("input", (event) => {
    compare.style.setProperty("--split", `${event.target.value}%`);
  });
  results.prepend(card);
  return card;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
  } catch (_) {
    // Not JSON (e.g. a proxy's error page): fall back to the status line below.
  }
  return `${response.status} ${response.statusText}`;
}

function describe(response, chosen) {
  const task = response.headers.get("X-SmartAssign-Task");
  const confidence = Number(response.headers.get("X-SmartAssign-Confidence"));
  const seconds = Number(response.headers.get("X-SmartAssign-Seconds"));
  const how = chosen === "auto" ? `detected, ${(100 * confidence).toFixed(0)}% confident` : "chosen";
  return `${task} (${how}) · ${seconds.toFixed(2)} s`;
}

async function restore(file, card, task) {
  const status = card.querySelector(".status");
  const body = new FormData();
  body.append("file", file);
  body.append("task", task);
  status.textContent = "Restoring…";
  let response;
  for (;;) {
    try {
      response = await fetch("api/restore", { method: "POST", body });
    } catch (err) {
      throw new Error(`cannot reach the server (${err.message})`);
    }
    if (response.status !== 503) break;
    status.textContent = "Server busy, waiting for a free slot…";
    await sleep(1000 * (Number(response.headers.get("Retry-After")) || 1));
  }
  if (!response.ok) throw new Error(await errorMessage(response));
  const url = URL.createObjectURL(await response.blob());
  const extension = response.headers.get("Content-Type") === "image/jpeg" ? "jpg" : "png";
  card.querySelector(".after").src = url;
  card.querySelector(".result").hidden = false;
  const link = card.querySelector(".download");
  link.href = url;
  link.download = `${stem(file.name)}-restored.${extension}`;
  link.hidden = false;
  status.textContent = describe(response, task);
}

async function drain() {
  if (running) return;
  running = true;
  while (pending.length) {
    const { file, card, task } = pending.shift();
    try {
      await restore(file, card, task);
    } catch (err) {
      card.classList.add("error");
      card.querySelector(".status").textContent = err.message;
    }
  }
  running = false;
}

function add(files) {
  for (const file of files) pending.push({ file, card: addCard(file), task: taskSelect.value });
  drain();
}

picker.addEventListener("change", () => {
  add(picker.files);
  picker.value = ""; // so choosing the same file again fires "change"
});
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  add(event.dataTransfer.files);
});
// A file dropped beside the target would otherwise make the browser navigate away to it.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

fetch("api/health")
  .then((response) => response.json())
  .then((health) => {
    const megapixels = (health.limits.max_pixels / 1e6).toFixed(0);
    const millions = (health.parameters / 1e6).toFixed(2);
    document.getElementById("limits").textContent =
      `Up to ${health.limits.max_upload_mb} MB and ${megapixels} MP per image · ` +
      `${millions} M-parameter model on ${health.device}`;
  })
  .catch(() => {}); // the line is only informative: uploads work without it
