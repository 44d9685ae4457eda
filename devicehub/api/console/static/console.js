// devicehub console: plain JavaScript over the hub's HTTP API (README "HTTP API").
// Nothing here holds data; everything shown is read from the API, with the bearer
// token the operator typed when the hub has --api-token (kept in sessionStorage).
"use strict";
(function () {
  const POLL_MS = 2000;          // the list, the cluster, the counters and the open device
  const PAGE = 50;               // devices per page
  const MAX_EVENTS = 100;        // live events kept for the open device
  const TOKEN_KEY = "devicehub.token";
  const IMEI = /^[0-9A-Za-z._:-]{1,64}$/;

  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    authorized: false,
    prefix: "",
    page: 0,
    pages: 1,
    cluster: null,          // the last GET /cluster
    counters: null,         // {at, values} of the previous /metrics read, for rates
    imei: null,             // the open device
    seen: new Map(),        // imei -> {node, protocol, since, last} from its live events
    stream: null,           // AbortController of the open device's event stream
    timer: null,
    listGeneration: 0,
  };

  // ---------------------------------------------------------------- the API

  class Unauthorized extends Error {}
  class HubError extends Error {}

  /** One API call: {status, body, ms}; throws Unauthorized (401) or HubError (unreachable). */
  async function api(path, options = {}) {
    const headers = Object.assign({}, options.headers || {});
    if (state.token) headers.Authorization = "Bearer " + state.token;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      options = Object.assign({}, options, { body: JSON.stringify(options.json) });
    }
    const started = performance.now();
    let response;
    try {
      response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new HubError("Cannot reach the hub: the network request failed (is it running, and is this address right?).");
    }
    if (response.status === 401) {
      throw new Unauthorized(state.token ? "That token was not accepted: try again." : "");
    }
    const text = options.raw ? null : await response.text();
    const ms = performance.now() - started;
    if (options.raw) return { status: response.status, response, ms };
    let body = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.startsWith("application/json")) {
      try { body = JSON.parse(text); } catch (error) { body = null; }
    } else {
      body = text;
    }
    return { status: response.status, body, ms };
  }

  /** What went wrong with a call, in words. */
  function explain(status, body) {
    const said = body && typeof body === "object" && body.error ? body.error : "";
    switch (status) {
      case 400: return "The hub refused the request: " + (said || "bad input") + ".";
      case 404: return said === "not found" ? "The hub has no such page (an older hub?)." : (said || "Not found.");
      case 409: return said ? capitalize(said) + "." : "Not possible any more.";
      case 429: return "The hub is busy: " + (said || "too many commands waiting") + ". Try again in a moment.";
      case 503: return "The hub's broker is not answering" + (said ? " (" + said + ")" : "") + ".";
      default: return "The hub answered HTTP " + status + (said ? ": " + said : "") + ".";
    }
  }

  function failure(error) {
    if (error instanceof Unauthorized) { askToken(error.message); return null; }
    return error instanceof HubError ? error.message : "Something went wrong in the console: " + error.message;
  }

  // ---------------------------------------------------------------- helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key === "style") Object.assign(node.style, value);  // CSSOM: allowed by the page's CSP
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function show(node, visible) { node.hidden = !visible; }

  function say(node, text) {
    node.textContent = text || "";
    show(node, Boolean(text));
  }

  function capitalize(text) { return text.charAt(0).toUpperCase() + text.slice(1); }

  function number(n) { return n === undefined || n === null ? "–" : Math.round(n).toLocaleString("en"); }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function ago(seconds) {
    const s = Math.max(0, Date.now() / 1000 - seconds);
    if (s < 60) return Math.floor(s) + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
    return Math.floor(s / 86400) + " d ago";
  }

  function until(seconds) {
    const s = seconds - Date.now() / 1000;
    if (s <= 0) return "now";
    if (s < 60) return "in " + Math.ceil(s) + " s";
    if (s < 3600) return "in " + Math.ceil(s / 60) + " min";
    if (s < 172800) return "in " + Math.round(s / 3600) + " h";
    return "in " + Math.round(s / 86400) + " d";
  }

  function full(seconds) { return new Date(seconds * 1000).toLocaleString([], { hour12: false }); }

  function when(seconds) {
    if (!seconds) return "–";
    const date = new Date(seconds * 1000);
    const today = new Date().toDateString() === date.toDateString();
    return (today ? clock(seconds) : date.toLocaleString([], { hour12: false })) + " (" + ago(seconds) + ")";
  }

  function compact(value) {
    if (value === undefined) return "";
    const text = JSON.stringify(value);
    return text.length > 160 ? text.slice(0, 157) + "…" : text;
  }

  function took(ms) { return ms < 10 ? ms.toFixed(1) + " ms" : ms < 2000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(2) + " s"; }

  // ---------------------------------------------------------------- token

  function askToken(message) {
    state.authorized = false;
    stopStream();
    show($("main"), false);
    say($("login-error"), message);
    setStatus("token needed", "warn");
    const dialog = $("login");
    if (!dialog.open) dialog.showModal();
    $("token").focus();
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("login").close();
    refresh();
  });
  $("login").addEventListener("cancel", (event) => event.preventDefault());  // no way around it

  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    askToken("");
  });

  // ---------------------------------------------------------------- hub status

  function notice(text) { say($("notice"), text); }

  function setStatus(text, kind) {
    const pill = $("hub-status");
    pill.textContent = text;
    pill.className = "pill " + kind;
  }

  // ---------------------------------------------------------------- the loop

  let refreshing = false;
  let again = false;

  /** Read everything shown, then again in POLL_MS; one read at a time (a call meanwhile runs after it). */
  async function refresh() {
    clearTimeout(state.timer);
    if (refreshing) { again = true; return; }
    refreshing = true;
    let next = true;
    try {
      next = await refreshOnce();
    } finally {
      refreshing = false;
    }
    if (again) { again = false; return refresh(); }
    if (next) state.timer = setTimeout(refresh, POLL_MS);
  }

  /** One read of the list, the cluster, the counters and the open device; false while the token is asked for. */
  async function refreshOnce() {
    if (document.hidden && state.authorized) return true;  // nobody looks: ask nothing
    try {
      // the list first: it needs the token, and tells whether this one works
      await refreshList();
      if (!state.authorized) {
        state.authorized = true;
        await refreshCluster();  // whether the hub keeps a queue, before a device is opened
        show($("main"), true);
        show($("sign-out"), Boolean(state.token));
        route();
      }
      await Promise.all([refreshCluster(), refreshCounters(), state.imei ? refreshDevice() : null]);
      notice("");
      $("updated").textContent = "updated " + clock(Date.now() / 1000);
    } catch (error) {
      const words = failure(error);
      if (words === null) return false;  // asking for the token
      notice(words);
      setStatus("unreachable", "bad");
    }
    return !$("login").open;  // not while the token is asked for
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.authorized) refresh();
  });

  // ---------------------------------------------------------------- device list

  /** The imei at index i of the sorted directory, or undefined past its end. */
  async function imeiAt(i) {
    const { status, body } = await api("/devices?num=1&page=" + i);
    if (status !== 200) throw new HubError(explain(status, body));
    return body.devices[0];
  }

  /** The first index in [lo, hi) whose imei is not below key (the directory is sorted). */
  async function lowerBound(key, lo, hi) {
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const imei = await imeiAt(mid);
      if (imei === undefined || imei >= key) hi = mid; else lo = mid + 1;
    }
    return lo;
  }

  /** Devices [from, to) of the directory, by the pages of PAGE that hold them. */
  async function slice(from, to) {
    const devices = [];
    for (let page = Math.floor(from / PAGE); page * PAGE < to; page++) {
      const { status, body } = await api("/devices?num=" + PAGE + "&page=" + page);
      if (status !== 200) throw new HubError(explain(status, body));
      body.devices.forEach((imei, k) => {
        const index = page * PAGE + k;
        if (index >= from && index < to) devices.push(imei);
      });
    }
    return devices;
  }

  async function refreshList() {
    const generation = ++state.listGeneration;
    const prefix = state.prefix;
    let shown, total, matching;
    const first = await api(prefix ? "/devices?num=0" : "/devices?num=" + PAGE + "&page=" + state.page);
    if (first.status !== 200) {
      if (first.status === 503) setStatus("broker not answering", "bad");
      say($("devices-error"), explain(first.status, first.body));
      return;
    }
    total = first.body.total;
    if (!prefix) {
      shown = first.body.devices;
      matching = total;
    } else if (!IMEI.test(prefix)) {
      shown = [];
      matching = 0;
    } else {
      // The directory is sorted: the devices with this prefix are one run of it.
      const lo = await lowerBound(prefix, 0, total);
      const hi = await lowerBound(prefix + "~", lo, total);  // "~" sorts after every imei character
      matching = hi - lo;
      const from = lo + state.page * PAGE;
      shown = (await slice(from, Math.min(hi, from + PAGE))).filter((imei) => imei.startsWith(prefix));
    }
    if (generation !== state.listGeneration) return;  // a newer search has answered meanwhile
    say($("devices-error"), "");
    state.pages = Math.max(1, Math.ceil(matching / PAGE));
    if (state.page >= state.pages && state.page > 0) {
      state.page = state.pages - 1;
      return refreshList();
    }
    drawList(shown, total, matching, prefix);
  }

  function drawList(shown, total, matching, prefix) {
    $("devices-total").textContent = prefix ? matching + " of " + total : String(total);
    $("devices-total").title = prefix ? matching + " online with this prefix, " + total + " in all" : total + " online";
    const list = $("device-list");
    list.replaceChildren(...shown.map((imei) => el("li", {},
      el("a", { href: "#/devices/" + encodeURIComponent(imei), class: imei === state.imei ? "mono current" : "mono" }, imei))));
    let empty = "";
    if (!shown.length) {
      if (prefix && !IMEI.test(prefix)) empty = "An imei has only letters, digits and . _ : - (at most 64).";
      else if (prefix) empty = "No device online starts with " + prefix + ".";
      else empty = "No device is online.";
    }
    const box = $("devices-empty");
    box.replaceChildren(empty);
    if (prefix && IMEI.test(prefix) && !shown.includes(prefix)) {
      box.append(" ", el("a", { href: "#/devices/" + encodeURIComponent(prefix), id: "open-typed" },
        "Open " + prefix + (shown.length ? "" : " anyway") + " ›"));
    }
    show(box, Boolean(box.textContent));
    show($("pager"), state.pages > 1);
    $("page-of").textContent = "page " + (state.page + 1) + " of " + state.pages;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= state.pages - 1;
  }

  let searchDelay = null;
  const searched = () => {
    clearTimeout(searchDelay);
    searchDelay = setTimeout(() => {
      const typed = $("prefix").value.trim();
      if (typed === state.prefix) return;
      state.prefix = typed;
      state.page = 0;
      refreshList().catch(listFailed);
    }, 200);
  };
  for (const name of ["input", "change", "search"]) $("prefix").addEventListener(name, searched);
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = $("prefix").value.trim();
    if (IMEI.test(typed)) location.hash = "#/devices/" + encodeURIComponent(typed);
  });
  $("prev").addEventListener("click", () => { state.page--; refreshList().catch(listFailed); });
  $("next").addEventListener("click", () => { state.page++; refreshList().catch(listFailed); });

  function listFailed(error) {
    const words = failure(error);
    if (words !== null) say($("devices-error"), words);
  }

  // ---------------------------------------------------------------- cluster and counters

  /** GET /cluster: devices per node, brokers, the store. */
  async function refreshCluster() {
    const { status, body } = await api("/cluster");
    if (status === 200) {
      state.cluster = body;
      const failing = body.store === "failing";
      const brokers = body.brokers ? Object.values(body.brokers) : [];
      const down = brokers.filter((st) => st === "down").length;
      if (failing) setStatus("store failing", "bad");
      else if (down) setStatus("hub ok · " + down + " of " + brokers.length + " brokers down", "warn");
      else setStatus("hub ok", "good");
      drawCluster(body);
    } else {
      setStatus("broker not answering", "bad");
      notice(explain(status, body));
    }
  }

  function drawCluster(cluster) {
    $("t-devices").textContent = number(cluster.devices);
    $("t-nodes").textContent = number(Object.keys(cluster.nodes).length);
    const store = $("store");
    store.textContent = { ok: "store ok", failing: "store failing", none: "no store" }[cluster.store] || cluster.store;
    store.className = "badge " + ({ ok: "good", failing: "bad" }[cluster.store] || "quiet");
    store.title = cluster.store === "none" ? "No queue for offline devices (--no-store)" : "The queue of commands for offline devices";

    const brokers = cluster.brokers ? Object.entries(cluster.brokers) : null;
    $("brokers").replaceChildren(...(brokers
      ? brokers.map(([address, st]) => el("li", {}, el("span", { class: "dot " + (st === "ok" ? "good" : st === "down" ? "bad" : "warn") }),
        el("span", { class: "mono" }, address), el("span", { class: "muted small" }, st)))
      : [el("li", {}, el("span", { class: "dot good" }), "one broker, answering")]));
    if (brokers) {
      const up = brokers.filter(([, st]) => st === "ok").length;
      $("t-nodes-sub").textContent = up + " of " + brokers.length + " brokers up";
    } else {
      $("t-nodes-sub").textContent = "";
    }
    drawNodes(cluster.nodes);
  }

  function drawNodes(perNode) {
    const list = $("nodes");
    const entries = Object.entries(perNode).sort((a, b) => a[0].localeCompare(b[0]));
    const most = Math.max(1, ...entries.map(([, n]) => n));
    list.replaceChildren(...entries.map(([name, n]) => el("li", {},
      el("span", { class: "name mono", title: name }, name),
      el("span", { class: "bar" }, el("span", { style: { width: (n ? Math.max(2, (100 * n) / most) : 0) + "%" } })),
      el("span", { class: "n" }, number(n)))));
    show($("nodes-empty"), !entries.length);
  }

  /** Prometheus text → Map of "name" → [{labels, value}]. */
  function parseMetrics(text) {
    const metrics = new Map();
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      const labels = {};
      for (const pair of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2].replace(/\\(.)/g, "$1");
      if (!metrics.has(match[1])) metrics.set(match[1], []);
      metrics.get(match[1]).push({ labels, value: Number(match[3]) });
    }
    return metrics;
  }

  function sum(metrics, name) {
    const samples = metrics.get(name);
    return samples ? samples.reduce((total, s) => total + s.value, 0) : undefined;
  }

  function byLabel(metrics, name, label) {
    const out = {};
    for (const s of metrics.get(name) || []) out[s.labels[label]] = (out[s.labels[label]] || 0) + s.value;
    return out;
  }

  async function refreshCounters() {
    const { status, body } = await api("/metrics");
    if (status !== 200 || typeof body !== "string") return;
    const metrics = parseMetrics(body);
    const now = performance.now() / 1000;
    const commands = byLabel(metrics, "devicehub_commands_total", "result");
    const values = {
      commands: Object.values(commands).reduce((a, b) => a + b, 0),
      events: sum(metrics, "devicehub_events_published_total"),
      logins: sum(metrics, "devicehub_logins_total"),
    };
    const before = state.counters;
    const rate = (key) => (before && values[key] !== undefined && before.values[key] !== undefined
      ? Math.max(0, (values[key] - before.values[key]) / (now - before.at)) : null);
    const perSecond = (key) => { const r = rate(key); return r === null ? "" : (r < 10 ? r.toFixed(1) : Math.round(r)) + "/s now"; };
    state.counters = { at: now, values };

    // One registry per process: the broker's and the nodes' numbers are there only when
    // this api process runs those roles too (a sample of their live gauges says so).
    const broker = metrics.has("devicehub_nodes_alive");
    const nodes = metrics.has("devicehub_devices_online");
    const elsewhere = (role) => "kept by the " + role + (role === "nodes" ? " (their" : " (its") + " --metrics)";
    $("t-commands").textContent = broker ? number(values.commands) : "–";
    $("t-commands-sub").textContent = !broker ? elsewhere("broker")
      : Object.keys(commands).length
        ? Object.entries(commands).sort().map(([r, n]) => r + " " + number(n)).join(" · ") + (rate("commands") ? " · " + perSecond("commands") : "")
        : "none answered yet";
    $("t-pending").textContent = broker ? number(sum(metrics, "devicehub_broker_inflight")) + " · " + number(sum(metrics, "devicehub_queue_depth")) : "–";
    $("t-pending-sub").textContent = broker ? "to devices · for offline ones" : elsewhere("broker");
    $("t-events").textContent = broker ? number(values.events) : "–";
    const dropped = sum(metrics, "devicehub_events_dropped_total");
    $("t-events-sub").textContent = broker
      ? [perSecond("events") || "published", dropped ? number(dropped) + " dropped" : ""].filter(Boolean).join(" · ")
      : elsewhere("broker");
    $("t-logins").textContent = nodes ? number(values.logins || 0) : "–";
    $("t-logins-sub").textContent = nodes ? perSecond("logins") || "since start" : elsewhere("nodes");
  }

  // ---------------------------------------------------------------- one device

  function route() {
    const match = /^#\/devices\/(.+)$/.exec(location.hash);
    const imei = match ? decodeURIComponent(match[1]) : null;
    if (imei === state.imei) return;
    openDevice(imei && IMEI.test(imei) ? imei : null);
  }
  window.addEventListener("hashchange", () => { if (state.authorized) route(); });

  function openDevice(imei) {
    stopStream();
    state.imei = imei;
    show($("device-none"), !imei);
    show($("device-open"), Boolean(imei));
    document.body.classList.toggle("has-device", Boolean(imei));
    for (const link of $("device-list").querySelectorAll("a")) link.classList.toggle("current", link.textContent === imei);
    if (!imei) return;
    $("device-imei").textContent = imei;
    setOnline(null);
    for (const id of ["f-node", "f-protocol", "f-since", "f-last"]) $(id).textContent = "–";
    say($("device-error"), "");
    show($("r-none"), true);
    show($("r-some"), false);
    $("events").replaceChildren();
    show($("e-empty"), true);
    $("queue").hidden = true;
    $("q-count").textContent = "";
    drawFacts();
    startStream(imei);
    refreshDevice().catch((error) => { const words = failure(error); if (words !== null) say($("device-error"), words); });
    if (window.matchMedia("(max-width: 899px)").matches) $("device").scrollIntoView({ block: "start" });
  }

  const closeDevice = () => { location.hash = "#"; };
  $("close").addEventListener("click", closeDevice);
  $("back").addEventListener("click", () => { closeDevice(); $("devices").scrollIntoView({ block: "start" }); });

  function setOnline(online) {
    const badge = $("device-online");
    badge.textContent = online === null ? "…" : online ? "online" : "offline";
    badge.className = "badge " + (online === null ? "quiet" : online ? "good" : "quiet");
  }

  async function refreshDevice() {
    const imei = state.imei;
    const path = "/devices/" + encodeURIComponent(imei);
    const found = await api(path + "/session");  // online, node, protocol, since
    if (imei !== state.imei) return;
    if (found.status === 200 || found.status === 404) {
      say($("device-error"), "");
      setOnline(Boolean(found.body && found.body.online));
      // kept up to date between reads by the device's live events
      const seen = state.seen.get(imei) || {};
      for (const key of ["node", "protocol", "since"]) if (found.body[key] !== undefined) seen[key] = found.body[key];
      if (!found.body.online) delete seen.since;
      state.seen.set(imei, seen);
      drawFacts();
    } else {
      say($("device-error"), explain(found.status, found.body));
    }
    await refreshQueue();
  }

  function drawFacts() {
    const seen = state.seen.get(state.imei) || {};
    const online = $("device-online").textContent === "online";
    const fact = (id, value, text) => {
      $(id).textContent = value ? text(value) : online ? "not known yet" : "–";
      $(id).classList.toggle("muted", !value);
    };
    fact("f-node", seen.node, String);
    fact("f-protocol", seen.protocol, String);
    fact("f-since", seen.since, when);
    $("f-last").textContent = seen.last ? when(seen.last) : "none seen yet";
    $("f-last").classList.toggle("muted", !seen.last);
  }

  async function refreshQueue() {
    const imei = state.imei;
    const noQueue = () => {
      say($("q-error"), "");
      say($("q-empty"), "This hub keeps no queue for offline devices (it runs with --no-store).");
      $("queue").hidden = true;
      $("q-count").textContent = "";
    };
    if (state.cluster && state.cluster.store === "none") return noQueue();
    const { status, body } = await api("/devices/" + encodeURIComponent(imei) + "/queue");
    if (imei !== state.imei) return;
    if (status === 400 && body && /no queue/.test(body.error || "")) return noQueue();
    if (status !== 200) {
      say($("q-error"), explain(status, body));
      return;
    }
    say($("q-error"), "");
    const commands = body.commands || [];
    $("q-count").textContent = commands.length ? String(commands.length) : "";
    say($("q-empty"), commands.length ? "" : "None: nothing waits for this device.");
    $("queue").hidden = !commands.length;
    $("q-rows").replaceChildren(...commands.map((command) => el("tr", { "data-id": command.id },
      el("td", { class: "mono", "data-label": "Instruct" }, command.instruct),
      el("td", { class: "mono data", "data-label": "Data" }, compact(command.data)),
      el("td", { "data-label": "Queued", title: full(command.created) }, ago(command.created)),
      el("td", { "data-label": "Expires", title: full(command.expires) }, until(command.expires)),
      el("td", { "data-label": "Tries" }, String(command.attempts || 0)),
      el("td", {}, el("button", { type: "button", class: "danger cancel", onclick: () => cancel(command) }, "Cancel")))));
  }

  async function cancel(command) {
    try {
      const { status, body } = await api("/commands/" + encodeURIComponent(command.id), { method: "DELETE" });
      if (status === 200) {
        say($("q-error"), "");
      } else {
        say($("q-error"), "Could not cancel " + command.instruct + ": " + explain(status, body));
      }
      await refreshQueue();
    } catch (error) {
      const words = failure(error);
      if (words !== null) say($("q-error"), words);
    }
  }

  // ---------------------------------------------------------------- sending a command

  const OUTCOMES = {
    ok: ["good", "the device acknowledged it"],
    sent: ["good", "written to the device's connection (not waiting for its ack)"],
    queued: ["info", "the device is offline: it gets the command when it logs in"],
    no: ["quiet", "the device is not online"],
    timeout: ["warn", "the device was sent the command but did not acknowledge it in time"],
  };

  $("command").addEventListener("submit", async (event) => {
    event.preventDefault();
    const imei = state.imei;
    const body = { instruct: $("c-instruct").value };
    const dataText = $("c-data").value.trim();
    if (dataText) {
      try { body.data = JSON.parse(dataText); } catch (error) {
        return showResult({ error: "Data must be JSON, e.g. {\"interval\": 60}, [\"600\"] or \"text\" in quotes (" + error.message + ")." });
      }
    }
    const timeoutText = $("c-timeout").value.trim();
    if (timeoutText) body.timeout = Number(timeoutText);
    body.wait = $("c-wait").checked;
    if ($("c-queue").checked) body.queue = true;
    const button = $("c-send");
    button.disabled = true;
    button.textContent = body.wait ? "Waiting for the device…" : "Sending…";
    try {
      const answer = await api("/devices/" + encodeURIComponent(imei) + "/commands", { method: "POST", json: body });
      if (imei !== state.imei) return;
      const reply = answer.body || {};
      let result = reply.result;
      if (result === "ok" && answer.status === 202) result = "sent";
      if (result && OUTCOMES[result]) {
        showResult({ result, status: answer.status, ms: answer.ms, reply, body });
      } else {
        showResult({ error: explain(answer.status, answer.body), status: answer.status, ms: answer.ms, body });
      }
      if (result === "queued") refreshQueue().catch(() => {});
    } catch (error) {
      const words = failure(error);
      if (words !== null) showResult({ error: words });
    } finally {
      button.disabled = false;
      button.textContent = "Send";
    }
  });

  function showResult({ result, error, status, ms, reply, body }) {
    show($("r-none"), false);
    show($("r-some"), true);
    const badge = $("r-result");
    const [kind, words] = error ? ["bad", error] : OUTCOMES[result];
    badge.textContent = error ? "error" : result;
    badge.className = "badge " + kind;
    let text = words;
    if (result === "queued" && reply.id) text += " (id " + reply.id + ")";
    if (result === "timeout" && body && body.timeout) text += " (" + body.timeout + " s)";
    $("r-words").textContent = text;
    $("r-what").textContent = body ? body.instruct + (body.data !== undefined ? " " + compact(body.data) : "") : "not sent";
    $("r-status").textContent = status === undefined ? "–" : String(status);
    $("r-took").textContent = ms === undefined ? "–" : took(ms);
    const pre = $("r-reply");
    const hasReply = result === "ok" && reply && "reply" in reply;
    pre.textContent = hasReply ? "reply: " + JSON.stringify(reply.reply, null, 2) : "";
    show(pre, hasReply);
    if (window.matchMedia("(max-width: 899px)").matches) $("result").scrollIntoView({ block: "nearest" });
  }

  // ---------------------------------------------------------------- live events

  function stopStream() {
    if (state.stream) state.stream.abort();
    state.stream = null;
  }

  // fetch, not EventSource: EventSource cannot send the Authorization header.
  async function startStream(imei) {
    const control = new AbortController();
    state.stream = control;
    let wait = 500;
    while (!control.signal.aborted) {
      try {
        const { status, response } = await api("/events?imei=" + encodeURIComponent(imei), { raw: true, signal: control.signal });
        if (status !== 200) throw new HubError("the event stream answered HTTP " + status);
        $("e-state").textContent = "● live";
        $("e-state").className = "live small";
        wait = 500;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const chunk = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
            if (data) { try { received(JSON.parse(data)); } catch (error) { /* not an event */ } }
          }
        }
      } catch (error) {
        if (control.signal.aborted) return;
        if (error instanceof Unauthorized) { askToken(error.message); return; }
      }
      if (control.signal.aborted) return;
      $("e-state").textContent = "reconnecting…";
      $("e-state").className = "muted small";
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, 10000);
    }
  }

  function received(event) {
    if (event.imei !== state.imei) return;
    const seen = state.seen.get(event.imei) || {};
    if (event.node) seen.node = event.node;
    if (event.protocol) seen.protocol = event.protocol;
    seen.last = event.ts;
    if (event.type === "online") { seen.since = event.ts; setOnline(true); }
    if (event.type === "offline") { delete seen.since; setOnline(false); }
    if (event.type === "command") refreshQueue().catch(() => {});  // a queued command's outcome
    state.seen.set(event.imei, seen);
    drawFacts();
    const list = $("events");
    const kind = { online: "good", offline: "quiet", command: "info" }[event.type] || "plain";
    list.prepend(el("li", { class: "event" },
      el("time", { class: "muted mono small" }, clock(event.ts)),
      el("span", { class: "badge " + kind }, event.type),
      el("code", { class: "data" }, compact(event.data))));
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
    show($("e-empty"), false);
  }

  // ---------------------------------------------------------------- start

  refresh();
})();
