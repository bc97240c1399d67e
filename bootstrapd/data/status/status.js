// The status page: phones and their stages from /api/phones, one phone's journey from /api/phones/<mac>, and a
// banner while the lease store (a shared PostgreSQL) is unreachable.
// Everything from the API is written with textContent: a vendor class or file name comes from the network.
"use strict";

const LABELS = {no_address: "no address", address: "address", told: "told where to provision", boot: "boot file",
                configs: "configs", done: "done", stuck: "stuck"};
const ORDER = Object.keys(LABELS);
const state = {phones: [], summary: {}, stage: null, filter: "", sort: "mac", desc: false, selected: null};

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function when(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "-";
}

function value(phone, key) {
  if (key === "last") return phone.error || phone.last_step || "";
  if (key === "stage") return ORDER.indexOf(phone.stage);
  if (key === "address") return (phone.address || phone.address6 || "").split(".").map(
    (part) => part.padStart(3, "0")).join(".");
  return phone[key] === null || phone[key] === undefined ? "" : phone[key];
}

function renderCounts() {
  const box = document.getElementById("counts");
  box.replaceChildren();
  const total = ORDER.reduce((n, s) => n + (state.summary[s] || 0), 0);
  const all = el("button", `all ${total}`);
  all.dataset.stage = "";
  if (!state.stage) all.classList.add("active");
  box.append(all);
  for (const stage of ORDER) {
    const button = el("button", `${LABELS[stage]} ${state.summary[stage] || 0}`);
    button.dataset.stage = stage;
    button.dataset.count = String(state.summary[stage] || 0);
    if (state.stage === stage) button.classList.add("active");
    box.append(button);
  }
}

function renderPhones() {
  const body = document.querySelector("#phones tbody");
  const needle = state.filter.toLowerCase();
  let rows = state.phones.filter((p) => !state.stage || p.stage === state.stage);
  if (needle) {
    rows = rows.filter((p) => [p.mac, p.address, p.address6, p.model, p.firmware, p.vendor, p.error, p.last_step,
                               LABELS[p.stage]].some((v) => v && String(v).toLowerCase().includes(needle)));
  }
  rows.sort((a, b) => {
    const x = value(a, state.sort), y = value(b, state.sort);
    const order = x < y ? -1 : x > y ? 1 : 0;
    return state.desc ? -order : order;
  });
  body.replaceChildren();
  for (const phone of rows) {
    const tr = el("tr");
    tr.dataset.mac = phone.mac;
    tr.dataset.stage = phone.stage;
    if (phone.mac === state.selected) tr.classList.add("selected");
    tr.append(el("td", phone.mac, "mac"));
    const stage = el("td");
    stage.append(el("span", phone.stage_label || LABELS[phone.stage], `stage ${phone.stage}`));
    tr.append(stage, el("td", phone.address || phone.address6 || "-", "address"), el("td", phone.model || "-"),
              el("td", phone.firmware || "-"));
    tr.append(phone.error ? el("td", phone.error, "error") : el("td", phone.last_step || "-"));
    tr.append(el("td", when(phone.last_seen)));
    body.append(tr);
  }
  document.getElementById("empty").hidden = state.phones.length > 0;
  for (const th of document.querySelectorAll("#phones th")) {
    th.classList.toggle("sorted", th.dataset.key === state.sort);
    th.classList.toggle("desc", th.dataset.key === state.sort && state.desc);
  }
}

async function getJSON(path) {
  // From the origin, never from the page's own URL: opened as http://user:password@host/… the page's URL carries
  // the credentials, and fetch refuses a URL that does (the browser resends the cached ones by itself).
  const url = new URL(path, window.location.origin);
  const response = await fetch(url, {credentials: "same-origin", cache: "no-store"});
  if (!response.ok) {
    const err = new Error(`${url}: ${response.status}`);
    err.body = await response.json().catch(() => null);  // the API's errors are documents ({error, store …})
    throw err;
  }
  return response.json();
}

function renderStore(store) {
  // Shown only while the store is down: since when, for how long, and why.
  const banner = document.getElementById("store");
  if (!store || store.up) {
    banner.hidden = true;
    document.body.dataset.store = "up";
    return;
  }
  const since = store.down_since || store.since;
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - since));
  banner.textContent = `The lease store (${store.backend === "postgresql" ? "PostgreSQL at " + store.where :
    store.backend}) is unreachable since ${when(since)} (${seconds} s): ${store.error || "unreachable"}. ` +
    "Replies that need a commit are withheld; the appliance reconnects by itself.";
  banner.hidden = false;
  document.body.dataset.store = "down";
}

async function refresh() {
  try {
    const data = await getJSON("/api/phones");
    state.phones = data.phones;
    state.summary = data.summary;
    renderStore(data.store);
    renderCounts();
    renderPhones();
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
    if (state.selected) await showJourney(state.selected);
  } catch (err) {
    if (err.body && err.body.store) renderStore(err.body.store);
    document.getElementById("updated").textContent = `cannot refresh: ${(err.body && err.body.error) || err.message}`;
  }
}

async function showJourney(mac) {
  const data = await getJSON(`/api/phones/${encodeURIComponent(mac)}`);
  const section = document.getElementById("journey");
  section.hidden = false;
  section.dataset.mac = mac;
  document.getElementById("journey-mac").textContent = mac;
  const stage = document.getElementById("journey-stage");
  stage.textContent = data.phone.stage_label;
  stage.className = `stage ${data.phone.stage}`;
  document.getElementById("journey-error").textContent = data.phone.error || "";
  const body = document.getElementById("journey-steps");
  body.replaceChildren();
  // Appliances sharing a store: each step says which one recorded it.
  const shared = data.steps.some((step) => step.appliance);
  for (const th of section.querySelectorAll("th.appliance")) th.hidden = !shared;
  for (const step of data.steps) {
    const tr = el("tr");
    tr.dataset.proto = step.proto;
    tr.dataset.kind = step.kind;
    tr.append(el("td", when(step.time)));
    if (shared) tr.append(el("td", step.appliance || "-", "appliance"));
    tr.append(el("td", step.proto), el("td", step.text), el("td", step.error || "", "error"));
    body.append(tr);
  }
}

function start() {
  document.getElementById("counts").addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    state.stage = button.dataset.stage || null;
    renderCounts();
    renderPhones();
  });
  document.getElementById("filter").addEventListener("input", (event) => {
    state.filter = event.target.value;
    renderPhones();
  });
  document.querySelector("#phones thead").addEventListener("click", (event) => {
    const th = event.target.closest("th");
    if (!th) return;
    state.desc = state.sort === th.dataset.key ? !state.desc : false;
    state.sort = th.dataset.key;
    renderPhones();
  });
  document.querySelector("#phones tbody").addEventListener("click", (event) => {
    const tr = event.target.closest("tr");
    if (!tr) return;
    state.selected = tr.dataset.mac;
    history.replaceState(null, "", `#${encodeURIComponent(state.selected)}`);  // a link to this phone's journey
    renderPhones();
    showJourney(state.selected).catch((err) => {
      document.getElementById("journey-error").textContent = err.message;
    });
  });
  const wanted = decodeURIComponent(window.location.hash.slice(1));
  if (wanted) state.selected = wanted;  // /status/#00:15:65:aa:bb:cc opens with that phone's journey
  const every = Number(document.body.dataset.refresh) || 5000;
  const loop = async () => {
    await refresh();
    setTimeout(loop, every);
  };
  loop();
}

document.addEventListener("DOMContentLoaded", start);
