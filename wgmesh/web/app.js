// wgmesh dashboard. Plain JavaScript, no build step. Every value from the API goes through
// textContent (through `visible`) or setAttribute, never innerHTML. Changes carry the session's CSRF token.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);

const state = {
  csrf: null,
  topology: null,
  summary: null, // the coordinator's summary; its `view` says whether to draw the full mesh
  drill: { title: "All nodes", query: "", offset: 0, page: null },
  links: { node: null, state: "", offset: 0, page: null },
  statuses: new Map(), // node name -> NodeStatus
  tokens: [],
  adminTokens: [],
  audit: [],
  pairs: [],
  selected: null, // node name whose details are open
  sort: { key: "name", dir: 1 },
  filter: "",
  events: null,
  retryTimer: null,
  refreshTimer: null,
  refreshing: null,
  refreshAgain: null,
};

// --- API ----------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const err = (data && data.error) || { code: "http_error", message: `HTTP ${response.status}` };
    if (response.status === 401 && state.csrf && path !== "/api/v1/session") {
      showLogin("Your session ended; log in again.");
    }
    throw new ApiError(response.status, err.code, err.message);
  }
  return data;
}

function say(text, isError = false) {
  const el = $("#action-status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// --- formatting ---------------------------------------------------------------------------------

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function fmtAgo(iso) {
  if (!iso) return "never";
  const secs = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (secs < 90) return `${Math.round(secs)} s ago`;
  if (secs < 5400) return `${Math.round(secs / 60)} min ago`;
  if (secs < 172800) return `${Math.round(secs / 3600)} h ago`;
  return `${Math.round(secs / 86400)} d ago`;
}

function fmtRtt(ms) {
  return ms === null || ms === undefined ? "–" : `${ms.toFixed(1)} ms`;
}

const PATH_LABEL = { direct: "direct UDP", "tcp-direct": "direct TCP", relay: "relayed TCP", down: "down", unknown: "unknown" };

// Text as wgmesh.printable.escape writes it: every character that is not printable (ESC, CR, LF, bidi
// overrides, …) as a visible escape, so a value a node reported before the API refused such text can
// neither hide nor reorder what is around it.
const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/gu; // wgmesh.printable.HIDDEN
const NAMED_ESCAPES = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function visible(text) {
  return String(text).replace(NOT_PRINTABLE, (c) => {
    if (NAMED_ESCAPES[c]) return NAMED_ESCAPES[c];
    const code = c.codePointAt(0);
    const hex = code.toString(16);
    if (code < 0x100) return `\\x${hex.padStart(2, "0")}`;
    return code < 0x10000 ? `\\u${hex.padStart(4, "0")}` : `\\U${hex.padStart(8, "0")}`;
  });
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v === undefined || v === null ? "" : visible(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(typeof c === "string" ? visible(c) : c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function pill(kind, text) {
  return el("span", { class: `pill ${kind}`, text: text || kind });
}

// --- session ------------------------------------------------------------------------------------

function showLogin(message = "") {
  state.csrf = null;
  stopEvents();
  $("#app-view").hidden = true;
  $("#logout").hidden = true;
  $("#live").hidden = true;
  $("#login-view").hidden = false;
  $("#login-error").textContent = message;
  $("#login-token").focus();
}

async function enterApp(session) {
  state.csrf = session.csrf_token;
  $("#login-view").hidden = true;
  $("#app-view").hidden = false;
  $("#logout").hidden = false;
  $("#live").hidden = false;
  await refresh();
  startEvents();
}

async function login(event) {
  event.preventDefault();
  const input = $("#login-token");
  $("#login-error").textContent = "";
  try {
    const session = await api("POST", "/api/v1/session", { token: input.value });
    input.value = "";
    await enterApp(session);
  } catch (err) {
    $("#login-error").textContent =
      err.status === 401 ? "That admin token is not valid." : `Login failed: ${err.message}`;
    input.select();
  }
}

async function logout() {
  stopEvents();
  clearTimeout(state.refreshTimer);
  try {
    await api("DELETE", "/api/v1/session");
  } finally {
    showLogin("Logged out.");
  }
}

// --- live updates -------------------------------------------------------------------------------

function setLive(kind, text) {
  const live = $("#live");
  live.dataset.state = kind;
  live.textContent = text;
}

function stopEvents() {
  if (state.events) state.events.close();
  state.events = null;
  clearTimeout(state.retryTimer);
}

function startEvents() {
  stopEvents();
  const source = new EventSource("/api/v1/events");
  state.events = source;
  source.addEventListener("open", () => setLive("live", "live"));
  source.addEventListener("change", () => scheduleRefresh());
  source.addEventListener("heartbeat", () => {
    setLive("live", "live");
    scheduleRefresh();
  });
  source.addEventListener("logout", () => {
    if (state.csrf) showLogin("Your session ended; log in again.");
  });
  source.addEventListener("error", () => {
    setLive("retrying", "disconnected, retrying…");
    if (source.readyState === EventSource.CLOSED) {
      // the browser gave up (e.g. an HTTP error): find out whether the session is still there
      state.retryTimer = setTimeout(async () => {
        try {
          await api("GET", "/api/v1/session");
          if (state.csrf) startEvents();
        } catch (err) {
          if (err.status !== 401 && state.csrf) startEvents();
        }
      }, 2000);
    }
  });
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refresh, 150);
}

// --- data ---------------------------------------------------------------------------------------

async function refresh() {
  // A refresh asked for while one is loading must see what changed after that one started (a token
  // just created, say): it waits for the running one, then loads once more. Requests meanwhile share it.
  if (state.refreshing) {
    if (!state.refreshAgain) {
      state.refreshAgain = state.refreshing.then(() => {
        state.refreshAgain = null;
        return refresh();
      });
    }
    return state.refreshAgain;
  }
  state.refreshing = (async () => {
    try {
      // The summary is cheap at any size and says how to show the network (`view`): the full mesh for a
      // small one, else the summary and its pages (the full document is too big at 1,000 nodes).
      const summary = await api("GET", "/api/v1/topology/summary");
      state.summary = summary;
      if (summary.view === "summary") {
        await refreshSummary();
        return;
      }
      const [topology, statuses, tokens, pairs, adminTokens, audit] = await Promise.all([
        api("GET", "/api/v1/topology"),
        api("GET", "/api/v1/statuses"),
        api("GET", "/api/v1/tokens"),
        api("GET", "/api/v1/pairs"),
        api("GET", "/api/v1/admin-tokens"),
        api("GET", "/api/v1/audit?limit=200"),
      ]);
      state.topology = topology;
      state.statuses = new Map(statuses.statuses.map((s) => [s.node, s]));
      state.tokens = tokens.tokens;
      state.pairs = pairs.pairs;
      state.adminTokens = adminTokens.admin_tokens;
      state.audit = audit.entries;
      render();
    } catch (err) {
      if (err.status !== 401) say(`Could not load the mesh: ${err.message}`, true);
    } finally {
      state.refreshing = null;
    }
  })();
  return state.refreshing;
}

function showView(view) {
  for (const e of document.querySelectorAll("[data-view]")) e.hidden = e.dataset.view !== view;
}

function renderHeader(network, version) {
  $("#network-name").textContent = `· ${network.name} ${network.overlay_cidr} · MTU ${network.mtu} · v${version}`;
  document.body.dataset.version = String(version);
  if (document.activeElement !== $("#network-mtu")) $("#network-mtu").value = String(network.mtu);
}

function render() {
  showView("full");
  const t = state.topology;
  renderHeader(t.network, t.version);
  renderTopology();
  renderNodes();
  renderRoutes();
  renderHaGroups();
  renderWarnings();
  renderTokens();
  renderAdminTokens();
  renderAudit();
  renderDetails();
}

function nodeByName(name) {
  return state.topology.nodes.find((n) => n.name === name) || null;
}

// --- summary (large networks) ---------------------------------------------------------------------
// Counts, groups and pages exactly as the coordinator answers them (wgmesh.topology_summary): each group
// carries the query that lists its nodes; a node's links come a page at a time.

const PAGE = 50;
const PROBLEM_LABEL = { offline: "Offline", links_down: "Links down", relayed: "Relayed links", conflicts: "Route conflicts" };
const PROBLEM_UNIT = { offline: "nodes", links_down: "links", relayed: "links", conflicts: "routes" };

function pagePath(base, query, offset) {
  const params = new URLSearchParams(query);
  params.set("offset", String(offset));
  params.set("limit", String(PAGE));
  return `${base}?${params}`;
}

function linksPath(node) {
  return `/api/v1/topology/nodes/${encodeURIComponent(node)}/links`;
}

async function refreshSummary() {
  const d = state.drill;
  const l = state.links;
  const [nodes, links, tokens, adminTokens, audit] = await Promise.all([
    api("GET", pagePath("/api/v1/topology/nodes", d.query, d.offset)),
    l.node ? api("GET", pagePath(linksPath(l.node), l.state ? { state: l.state } : {}, l.offset)).catch((err) => {
      if (err.status !== 404) throw err;
      return null; // the node was deleted meanwhile
    }) : Promise.resolve(null),
    api("GET", "/api/v1/tokens"),
    api("GET", "/api/v1/admin-tokens"),
    api("GET", "/api/v1/audit?limit=200"),
  ]);
  state.topology = null;
  d.page = nodes;
  l.page = links;
  if (!links) l.node = null;
  state.tokens = tokens.tokens;
  state.adminTokens = adminTokens.admin_tokens;
  state.audit = audit.entries;
  renderSummary();
  renderTokens();
  renderAdminTokens();
  renderAudit();
}

function countsText(counts) {
  const parts = Object.entries(counts).filter(([, n]) => n).map(([k, n]) => `${n} ${k.replaceAll("_", " ")}`);
  return parts.length ? parts.join(", ") : "none";
}

function groupRow(group, title) {
  const p = group.problems;
  const cellOf = (n, kind) => el("td", { class: n ? `num ${kind}` : "num", text: String(n) });
  return el(
    "tr",
    { "data-group": group.value },
    el("th", { scope: "row" }, el("button", { type: "button", class: "link", text: group.value, onclick: () => drill(`${title} ${group.value}`, group.query) })),
    el("td", { class: "num", text: String(group.nodes.total) }),
    cellOf(group.nodes.offline, "bad"),
    cellOf(p.links_down, "bad"),
    cellOf(p.relayed, "warn"),
    cellOf(p.conflicts, "bad"),
  );
}

function renderSummary() {
  showView("summary");
  const s = state.summary;
  renderHeader(s.network, s.version);
  const totalLinks = Object.values(s.links).reduce((a, b) => a + b, 0);
  const fields = [
    ["Nodes", `${s.nodes.total} (${s.nodes.online} online, ${s.nodes.offline} offline)`],
    ["Links", `${totalLinks}: ${countsText(s.links)}`],
    ["Routes", countsText(s.routes)],
    ["HA groups", String(s.ha_groups)],
    ["Warnings", countsText(s.warnings)],
  ];
  $("#summary-counts").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-field": k.toLowerCase(), text: v })]));
  $("#summary-problems").replaceChildren(
    el("li", {}, el("button", { type: "button", class: "link", text: `All nodes (${s.nodes.total})`, onclick: () => drill("All nodes", "") })),
    ...s.problems.map((p) => {
      const text = PROBLEM_UNIT[p.problem] === "nodes" ? `${p.count} nodes` : `${p.count} ${PROBLEM_UNIT[p.problem]} on ${p.nodes} nodes`;
      return el(
        "li",
        { "data-problem": p.problem },
        el("button", { type: "button", class: "link", disabled: !p.nodes, text: PROBLEM_LABEL[p.problem], onclick: () => drill(PROBLEM_LABEL[p.problem], p.query) }),
        " ",
        el("span", { class: p.count ? "bad" : "muted", text }),
      );
    }),
  );
  $("#summary-tags tbody").replaceChildren(
    ...(s.tags.length ? s.tags.map((g) => groupRow(g, "Tag")) : [el("tr", {}, el("td", { colspan: "6", text: "no node has a tag" }))]),
  );
  const weight = (g) => Object.values(g.problems).reduce((a, b) => a + b, 0);
  const sites = [...s.sites].sort((a, b) => weight(b) - weight(a) || a.value.localeCompare(b.value));
  $("#summary-site-count").textContent = `(${sites.length})`;
  $("#summary-sites tbody").replaceChildren(
    ...(sites.length ? sites.map((g) => groupRow(g, "Site")) : [el("tr", {}, el("td", { colspan: "6", text: "no site has more than one node" }))]),
  );
  renderDrillNodes();
  renderDrillLinks();
}

function linksText(c) {
  return [`${c.direct} direct`, ...[["tcp_direct", "tcp-direct"], ["relay", "relay"], ["down", "down"], ["unknown", "unknown"]].filter(([k]) => c[k]).map(([k, label]) => `${c[k]} ${label}`)].join(", ");
}

function rangeText(page, what) {
  if (!page.total) return `no ${what}`;
  if (!page[what].length) return `none from ${page.offset + 1} (of ${page.total})`;
  return `${page.offset + 1}-${page.offset + page[what].length} of ${page.total}`;
}

function renderDrillNodes() {
  const d = state.drill;
  const page = d.page;
  $("#drill-nodes-title").textContent = visible(d.title);
  $("#drill-nodes-range").textContent = rangeText(page, "nodes");
  $("#drill-nodes-prev").disabled = page.offset === 0;
  $("#drill-nodes-next").disabled = page.offset + page.nodes.length >= page.total;
  const rows = page.nodes.map((n) => el(
    "tr",
    { "data-node": n.name },
    el("th", { scope: "row" }, el("button", { type: "button", class: "link", text: n.name, onclick: () => showLinks(n.name) })),
    el("td", {}, pill(n.static ? "static" : n.online ? "online" : "offline")),
    el("td", { text: n.site }),
    el("td", { class: "num", text: n.overlay_ip }),
    el("td", { text: linksText(n.links) }),
    el("td", {}, ...n.problems.map((p) => pill("warn", PROBLEM_LABEL[p]))),
    el("td", { text: n.static ? "–" : n.agent_version || "unknown" }),
  ));
  $("#drill-nodes-table tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "7", text: "no nodes" }))]));
}

function renderDrillLinks() {
  const l = state.links;
  $("#drill-links").hidden = !l.node;
  if (!l.node) return;
  const page = l.page;
  $("#drill-links-title").textContent = visible(`Links of ${page.node}`);
  $("#drill-links-state").value = l.state;
  $("#drill-links-range").textContent = rangeText(page, "links");
  $("#drill-links-prev").disabled = page.offset === 0;
  $("#drill-links-next").disabled = page.offset + page.links.length >= page.total;
  const rows = page.links.map((lk) => el(
    "tr",
    { "data-peer": lk.b, "data-path": lk.path },
    el("th", { scope: "row", text: lk.b }),
    el("td", {}, pill(lk.path, PATH_LABEL[lk.path])),
    el("td", { class: "num", text: fmtRtt(lk.rtt_ms) }),
    el("td", { class: "num", text: `${fmtBytes(lk.rx_bytes)} / ${fmtBytes(lk.tx_bytes)}` }),
    el("td", { text: fmtAgo(lk.last_handshake) }),
    el("td", { text: lk.p2p }),
  ));
  $("#drill-links-table tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "6", text: "no links" }))]));
}

async function drill(title, query) {
  state.drill = { title, query, offset: 0, page: state.drill.page };
  await loadDrillNodes();
  $("#drill-nodes").scrollIntoView({ block: "nearest" });
}

async function loadDrillNodes() {
  const d = state.drill;
  try {
    d.page = await api("GET", pagePath("/api/v1/topology/nodes", d.query, d.offset));
    renderDrillNodes();
  } catch (err) {
    say(`Could not list the nodes: ${err.message}`, true);
  }
}

async function loadLinks() {
  const l = state.links;
  try {
    l.page = await api("GET", pagePath(linksPath(l.node), l.state ? { state: l.state } : {}, l.offset));
    renderDrillLinks();
  } catch (err) {
    say(`Could not list the links of ${l.node}: ${err.message}`, true);
  }
}

async function showLinks(name) {
  state.links = { node: name, state: "", offset: 0, page: null };
  await loadLinks();
  $("#drill-links").scrollIntoView({ block: "nearest" });
}

function wireSummary() {
  const turn = (box, step, load) => {
    box.offset = Math.max(0, box.offset + step);
    load();
  };
  $("#drill-nodes-prev").addEventListener("click", () => turn(state.drill, -PAGE, loadDrillNodes));
  $("#drill-nodes-next").addEventListener("click", () => turn(state.drill, PAGE, loadDrillNodes));
  $("#drill-links-prev").addEventListener("click", () => turn(state.links, -PAGE, loadLinks));
  $("#drill-links-next").addEventListener("click", () => turn(state.links, PAGE, loadLinks));
  $("#drill-links-state").addEventListener("change", (ev) => {
    state.links.state = ev.target.value;
    state.links.offset = 0;
    loadLinks();
  });
  $("#drill-links-close").addEventListener("click", () => {
    state.links = { node: null, state: "", offset: 0, page: null };
    renderDrillLinks();
  });
}

// --- topology -----------------------------------------------------------------------------------

function linkTitle(link) {
  const parts = [`${link.a} ↔ ${link.b}: ${PATH_LABEL[link.path]}`];
  if (link.rtt_ms !== null) parts.push(`RTT ${fmtRtt(link.rtt_ms)}`);
  parts.push(`P2P ${link.p2p}`);
  if (link.last_handshake) parts.push(`handshake ${fmtAgo(link.last_handshake)}`);
  return parts.join(", ");
}

function renderTopology() {
  const root = $("#topology");
  const held = document.activeElement && document.activeElement.closest
    ? document.activeElement.closest("#topology [data-node]") : null;
  const focused = held ? held.dataset.node : null;
  root.replaceChildren();
  const nodes = [...state.topology.nodes].sort((a, b) => a.name.localeCompare(b.name));
  const n = nodes.length;
  const cx = 500;
  const cy = 500;
  const dense = n > 12;
  const radius = dense ? 300 : n <= 6 ? 280 : 330;
  const pad = dense ? 110 : 0; // room for the radial labels
  root.classList.toggle("dense", dense);
  root.setAttribute("viewBox", `${-pad} ${-pad} ${1000 + 2 * pad} ${1000 + 2 * pad}`);
  const pos = new Map();
  nodes.forEach((node, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(n, 1);
    pos.set(node.name, { x: cx + radius * Math.cos(angle), y: cy + radius * Math.sin(angle), angle });
  });

  const spokes = svg("g", { "aria-hidden": "true" });
  for (const p of pos.values()) spokes.append(svg("line", { class: "spoke", x1: cx, y1: cy, x2: p.x, y2: p.y }));
  root.append(spokes);

  const links = svg("g", { class: `links${dense ? " dense" : ""}${state.selected ? " focused" : ""}` });
  for (const link of state.topology.links) {
    const a = pos.get(link.a);
    const b = pos.get(link.b);
    if (!a || !b) continue;
    const group = svg("g", {
      class: `link-group${state.selected && (link.a === state.selected || link.b === state.selected) ? " highlight" : ""}`,
      "data-link": `${link.a}|${link.b}`,
      "data-path": link.path,
    });
    const title = svg("title");
    title.textContent = linkTitle(link);
    group.append(title);
    group.append(svg("line", { class: "link-hit", x1: a.x, y1: a.y, x2: b.x, y2: b.y }));
    group.append(svg("line", { class: `link link-${link.path}`, x1: a.x, y1: a.y, x2: b.x, y2: b.y }));
    links.append(group);
  }
  root.append(links);

  const central = svg("g", { class: "central" });
  central.append(svg("circle", { cx, cy, r: 26 }));
  const ctext = svg("text", { x: cx, y: cy + 50, "text-anchor": "middle" });
  ctext.textContent = "central node · relay";
  central.append(ctext);
  const ctitle = svg("title");
  ctitle.textContent = "Central node: coordinator and TCP relay (no overlay address)";
  central.append(ctitle);
  root.append(central);

  for (const node of nodes) {
    const p = pos.get(node.name);
    const status = node.static ? "static" : node.online ? "online" : "offline";
    const g = svg("g", {
      class: `node ${status}${state.selected === node.name ? " selected" : ""}`,
      tabindex: "0",
      role: "button",
      "data-node": node.name,
      "aria-label": `${node.name}, ${status}, ${node.overlay_ip}${node.subnets.length ? `, subnets ${node.subnets.join(" ")}` : ""}. Show details`,
      "aria-pressed": state.selected === node.name ? "true" : "false",
    });
    g.append(svg("circle", { cx: p.x, cy: p.y, r: n > 20 ? 11 : 15 }));
    const subnetText = (limit) => {
      const shown = node.subnets.slice(0, limit).join(", ");
      return node.subnets.length > limit ? `${shown} +${node.subnets.length - limit}` : shown;
    };
    const lx = p.x + Math.cos(p.angle) * 24;
    const ly = p.y + Math.sin(p.angle) * 24;
    if (dense) {
      // many gateways: labels run along the radius, flipped on the left so they read left to right
      const flip = Math.cos(p.angle) < -1e-6;
      const rot = (p.angle * 180) / Math.PI + (flip ? 180 : 0);
      const common = { x: lx, "text-anchor": flip ? "end" : "start", transform: `rotate(${rot.toFixed(2)} ${lx.toFixed(1)} ${ly.toFixed(1)})` };
      // the name keeps to the same side of the radius on both halves, so neighbours never collide
      const label = svg("text", { ...common, y: flip ? ly + 30 : ly - 10 });
      label.textContent = node.name;
      g.append(label);
      if (node.subnets.length) {
        const sub = svg("text", { ...common, class: "subnets", y: flip ? ly - 6 : ly + 22 });
        sub.textContent = subnetText(1);
        g.append(sub);
      }
    } else {
      const right = Math.cos(p.angle) >= -0.01;
      const vertical = Math.abs(Math.cos(p.angle)) < 0.3;
      const above = vertical && Math.sin(p.angle) < 0;
      const anchor = vertical ? "middle" : right ? "start" : "end";
      const dy = vertical ? (above ? (node.subnets.length ? -26 : -6) : 18) : 6;
      const label = svg("text", { x: lx, y: ly + dy, "text-anchor": anchor });
      label.textContent = node.name;
      g.append(label);
      if (node.subnets.length) {
        const sub = svg("text", { class: "subnets", x: lx, y: ly + dy + 20, "text-anchor": anchor });
        sub.textContent = subnetText(2);
        g.append(sub);
      }
    }
    const title = svg("title");
    title.textContent = `${node.name} (${status}) ${node.overlay_ip}${node.subnets.length ? `\n${node.subnets.join("\n")}` : ""}`;
    g.append(title);
    g.addEventListener("click", () => openDetails(node.name));
    g.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        openDetails(node.name);
      }
    });
    root.append(g);
  }
  if (!n) {
    const empty = svg("text", { x: cx, y: cy + 90, "text-anchor": "middle", class: "subnets" });
    empty.textContent = "No gateways yet: create a token and enroll one.";
    root.append(empty);
  }
  // Redrawing replaces every element: give keyboard focus back to the node that had it.
  const again = focused && root.querySelector(`[data-node="${CSS.escape(focused)}"]`);
  if (again) again.focus();
}

// --- node details -------------------------------------------------------------------------------

function openDetails(name) {
  state.selected = name;
  renderTopology();
  renderDetails();
  $("#details").focus();
}

function closeDetails() {
  const name = state.selected;
  state.selected = null;
  renderTopology();
  renderDetails();
  const g = name && document.querySelector(`#topology [data-node="${CSS.escape(name)}"]`);
  if (g) g.focus();
}

function pairOverride(a, b) {
  const p = state.pairs.find((x) => (x.a === a && x.b === b) || (x.a === b && x.b === a));
  return p ? p.p2p : "";
}

function renderDetails() {
  const aside = $("#details");
  const node = state.selected ? nodeByName(state.selected) : null;
  if (!node) {
    state.selected = null;
    aside.hidden = true;
    return;
  }
  aside.hidden = false;
  $("#details-title").textContent = node.name;
  const status = state.statuses.get(node.name);
  const fields = [
    ["State", node.static ? "static peer" : node.online ? "online" : "offline"],
    ["Overlay IP", node.overlay_ip],
    ["eth0 IP", node.eth0_ip || (status && status.report.eth0_ip) || "–"],
    ["Public IP", node.public_ip || "–"],
    ["Endpoints", node.endpoints.join(", ") || "–"],
    ["Listen port", String(node.listen_port)],
    // the version its agent last reported (none from a report sent by another client or stored before 0.2.0; a static peer runs no agent)
    ["Agent version", node.static ? "–" : node.agent_version || "unknown"],
    // what the agent set on its interface, then the two limits the netmap's MTU comes from
    ["Tunnel MTU", node.interface_mtu ? String(node.interface_mtu) : "–"],
    ["MTU ceiling", node.mtu ? String(node.mtu) : `network default (${state.topology.network.mtu})`],
    ["Underlay max MTU", node.max_mtu ? String(node.max_mtu) : "–"],
    ["Tags", node.tags.join(", ") || "–"],
    ["Public key", node.public_key],
    ["Last seen", fmtAgo(node.last_seen)],
    ["Last report", status ? fmtAgo(status.reported_at) : "never"],
  ];
  $("#details-fields").replaceChildren(
    ...fields.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
  );
  $("#details-p2p").value = node.p2p;
  // Not while the admin is typing in it: a live update must not overwrite an unsent value.
  if (document.activeElement !== $("#details-mtu")) $("#details-mtu").value = node.mtu ? String(node.mtu) : "";

  // Each peer as this node sees it, joined by the coordinator; the link's state (down, unknown) shows
  // where neither end reported a path.
  const linkPath = new Map(
    state.topology.links
      .filter((l) => l.a === node.name || l.b === node.name)
      .map((l) => [l.a === node.name ? l.b : l.a, l.path]),
  );
  const rows = [];
  for (const seen of node.peers) {
    const other = seen.name;
    const path = seen.path || linkPath.get(other) || "unknown";
    const select = el(
      "select",
      {
        "aria-label": `P2P override for ${node.name} and ${other}`,
        "data-pair": other,
        onchange: (ev) => setPair(node.name, other, ev.target.value),
      },
      el("option", { value: "", text: "default" }),
      el("option", { value: "auto", text: "auto" }),
      el("option", { value: "off", text: "off" }),
    );
    select.value = pairOverride(node.name, other);
    rows.push(
      el(
        "tr",
        { "data-peer": other },
        el("th", { scope: "row", text: other }),
        el("td", {}, pill(path, PATH_LABEL[path] || path)),
        el("td", { class: "num", text: fmtRtt(seen.rtt_ms) }),
        el("td", { class: "num", text: `${fmtBytes(seen.rx_bytes)} / ${fmtBytes(seen.tx_bytes)}` }),
        el("td", { text: fmtAgo(seen.last_handshake) }),
        el("td", {}, select),
      ),
    );
  }
  $("#details-peers tbody").replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "6", text: "no peers" }))]),
  );
  const routes = state.topology.routes.filter((r) => r.gateway === node.name);
  $("#details-routes").replaceChildren(
    ...(routes.length
      ? routes.map((r) => el("li", {}, `${routedAs(r)} `, pill(r.state), r.reason ? ` ${r.reason}` : ""))
      : [el("li", { text: "no routes" })]),
  );
}

async function setNodeP2P(name, value) {
  try {
    await api("PATCH", `/api/v1/nodes/${encodeURIComponent(name)}`, { p2p: value });
    say(`P2P for ${name} is now ${value}.`);
    await refresh();
  } catch (err) {
    say(`Could not change P2P for ${name}: ${err.message}`, true);
    await refresh();
  }
}

// The MTU ceiling of a node (empty: back to the network's default) and the network's default: the API
// checks the range and says what is wrong; the message is shown as it comes.
async function setNodeMtu(name, text) {
  const mtu = text.trim() === "" ? null : Number(text);
  try {
    await api("PATCH", `/api/v1/nodes/${encodeURIComponent(name)}`, { mtu });
    say(mtu === null ? `${name} uses the network's default MTU again.` : `MTU ceiling of ${name} is now ${mtu}.`);
  } catch (err) {
    say(`Could not change the MTU of ${name}: ${err.message}`, true);
  }
  await refresh();
}

async function setNetworkMtu(text) {
  try {
    await api("PATCH", "/api/v1/network", { mtu: Number(text) });
    say(`The network's default MTU is now ${Number(text)}.`);
  } catch (err) {
    say(`Could not change the network's MTU: ${err.message}`, true);
  }
  await refresh();
}

async function setPair(a, b, value) {
  try {
    await api("PUT", `/api/v1/pairs/${encodeURIComponent(a)}/${encodeURIComponent(b)}`, {
      p2p: value || null,
    });
    say(value ? `P2P between ${a} and ${b} is now ${value}.` : `P2P override between ${a} and ${b} cleared.`);
    await refresh();
  } catch (err) {
    say(`Could not change the pair ${a}/${b}: ${err.message}`, true);
    await refresh();
  }
}

function confirmDialog(text, okLabel) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
  });
}

async function deleteNode(name) {
  const ok = await confirmDialog(
    `Delete node ${name}? Its peers drop it at their next netmap; its agent can no longer connect.`,
    `Delete ${name}`,
  );
  if (!ok) return;
  try {
    await api("DELETE", `/api/v1/nodes/${encodeURIComponent(name)}`);
    say(`Node ${name} deleted.`);
    if (state.selected === name) state.selected = null;
    await refresh();
  } catch (err) {
    say(`Could not delete ${name}: ${err.message}`, true);
  }
}

// --- nodes table --------------------------------------------------------------------------------

function ipKey(ip) {
  if (!ip) return "";
  return ip.includes(".") ? ip.split(".").map((x) => x.padStart(3, "0")).join(".") : ip;
}

function sortValue(node, key) {
  if (key === "online") return node.static ? 1 : node.online ? 0 : 2;
  if (key === "overlay_ip" || key === "eth0_ip" || key === "public_ip") return ipKey(node[key]);
  if (key === "subnets") return node.subnets.length;
  if (key === "last_seen") return node.last_seen ? Date.parse(node.last_seen) : 0;
  return String(node[key] ?? "");
}

function renderNodes() {
  const { key, dir } = state.sort;
  const q = state.filter.trim().toLowerCase();
  const all = state.topology.nodes;
  const shown = all
    .filter((n) => {
      if (!q) return true;
      const hay = [n.name, n.overlay_ip, n.eth0_ip, n.public_ip, n.p2p, ...n.subnets, ...n.tags, ...n.endpoints,
        n.online ? "online" : "offline", n.agent_version || ""].join(" ").toLowerCase();
      return hay.includes(q);
    })
    .sort((a, b) => {
      const va = sortValue(a, key);
      const vb = sortValue(b, key);
      return (va < vb ? -1 : va > vb ? 1 : a.name.localeCompare(b.name)) * dir;
    });
  $("#node-count").textContent = q ? `(${shown.length} of ${all.length})` : `(${all.length})`;
  for (const th of document.querySelectorAll("#nodes-table th")) {
    const b = th.querySelector("button");
    if (!b) continue;
    if (b.dataset.sort === key) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
  const rows = shown.map((n) => {
    const status = n.static ? "static" : n.online ? "online" : "offline";
    const p2p = el(
      "select",
      { "aria-label": `P2P policy of ${n.name}`, onchange: (ev) => setNodeP2P(n.name, ev.target.value) },
      el("option", { value: "auto", text: "auto" }),
      el("option", { value: "off", text: "off" }),
    );
    p2p.value = n.p2p;
    return el(
      "tr",
      { "data-node": n.name },
      el("th", { scope: "row" }, el("a", { href: "#topology-section", text: n.name, onclick: (ev) => { ev.preventDefault(); openDetails(n.name); } })),
      el("td", {}, pill(status)),
      el("td", { class: "num", text: n.overlay_ip }),
      el("td", { class: "num", text: n.eth0_ip || "–" }),
      el("td", { class: "num", text: n.public_ip || "–" }),
      el("td", { text: n.subnets.join(", ") || "–" }),
      el("td", {}, p2p),
      el("td", { text: fmtAgo(n.last_seen) }),
      el("td", {}, el("button", { type: "button", class: "secondary", "aria-label": `Delete node ${n.name}`, onclick: () => deleteNode(n.name), text: "Delete" })),
    );
  });
  $("#nodes-table tbody").replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "9", text: q ? "no node matches the filter" : "no nodes" }))]),
  );
}

// --- routes and warnings ------------------------------------------------------------------------

function shadowText(s) {
  return `${s.node} does not install it: overlaps ${s.local_prefix || "a local subnet"} on ${s.interface}`;
}

// A prefix as the other sites reach it: "172.31.0.0/16 as 10.201.0.0/16" when it has an alias (issue 20).
function routedAs(r) {
  return r.alias ? `${r.prefix} as ${r.alias}` : r.prefix;
}

function renderRoutes() {
  const byGateway = new Map();
  for (const r of state.topology.routes) byGateway.set(r.gateway, [...(byGateway.get(r.gateway) || []), r]);
  const blocks = [...byGateway.keys()].sort().map((gw) => {
    const rows = byGateway.get(gw).map((r) => {
      const shadows = r.shadowed_by.map(shadowText);
      const collides =
        r.conflicting_with && !(r.reason || "").includes(r.conflicting_with) ? `collides with ${r.conflicting_with}` : "";
      // Who approved it, as the coordinator says (a rejection's reason already names who rejected it).
      const approved = r.decided_by && r.state !== "rejected" ? `approved by ${r.decided_by}` : "";
      const reason = [r.reason, collides, ...shadows, approved]
        .filter(Boolean)
        .filter((v, i, all) => all.indexOf(v) === i)
        .join("; ");
      const decide =
        r.state === "pending"
          ? [
              " ",
              el("button", { type: "button", class: "secondary", "aria-label": `Approve ${r.prefix} of ${gw}`, onclick: () => decideRoute(gw, r.prefix, "approve"), text: "Approve" }),
              " ",
              el("button", { type: "button", class: "secondary", "aria-label": `Reject ${r.prefix} of ${gw}`, onclick: () => decideRoute(gw, r.prefix, "reject"), text: "Reject" }),
            ]
          : [];
      return el(
        "tr",
        { class: `state-${r.state}${shadows.length ? " is-shadowed" : ""}`, "data-prefix": r.prefix, "data-alias": r.alias || "", "data-state": r.state },
        el("td", { class: "num", text: routedAs(r) }),
        el("td", {}, pill(r.state), shadows.length ? " " : "", shadows.length ? pill("shadowed") : ""),
        el("td", {}, reason || "–", ...decide),
      );
    });
    return el(
      "div",
      { class: "card", "data-gateway": gw },
      el("h3", { text: gw }),
      el(
        "table",
        { class: "data" },
        el("caption", { class: "sr-only", text: `Routes advertised by ${gw}` }),
        el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Prefix" }), el("th", { scope: "col", text: "State" }), el("th", { scope: "col", text: "Reason" }))),
        el("tbody", {}, ...rows),
      ),
    );
  });
  $("#routes").replaceChildren(...(blocks.length ? blocks : [el("p", { class: "card", text: "No subnet routes advertised." })]));
}

// --- HA groups: rendered as /topology joined them (wgmesh/topology.py), no rule of their own -------------

function healthText(h) {
  const seen = h.up + h.down + h.unknown;
  if (!seen) return "no reports";
  return `up for ${h.up} of ${seen}` + (h.down ? `, down for ${h.down}` : "") + (h.unknown ? `, unknown for ${h.unknown}` : "");
}

function failoverText(f) {
  if (!f) return "–";
  const why = f.reason ? `${f.code}: ${f.reason}` : f.code;
  return `${fmtAgo(f.at)} ${f.reported_by}: ${f.moved_from || "–"} → ${f.holder || "–"} (${why})`;
}

function renderHaGroups() {
  const groups = state.topology.ha_groups || [];
  if (!groups.length) {
    $("#ha-groups").replaceChildren(el("p", { class: "none", text: "No HA groups: no site has two gateways advertising one approved prefix." }));
    return;
  }
  const rows = groups.flatMap((g) =>
    g.members.map((m, i) =>
      el(
        "tr",
        { class: `role-${m.role}`, "data-prefix": g.prefix, "data-member": m.node, "data-role": m.role },
        i === 0 ? el("td", { class: "num", rowspan: String(g.members.length), text: g.prefix }) : "",
        i === 0 ? el("td", { rowspan: String(g.members.length), text: g.site }) : "",
        el("th", { scope: "row", text: m.node }),
        el("td", {}, pill(m.role === "primary" ? "active" : "standby", m.role), " ", pill(m.online ? "online" : "offline")),
        el("td", { class: m.health.down ? "bad" : "", text: healthText(m.health) }),
        el("td", { class: "carried-by", text: m.carried_by.join(", ") || "–" }),
        i === 0 ? el("td", { rowspan: String(g.members.length), text: failoverText(g.last_failover) }) : "",
      ),
    ),
  );
  $("#ha-groups").replaceChildren(
    el(
      "table",
      { class: "data", id: "ha-table" },
      el("caption", { class: "sr-only", text: "HA groups" }),
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ...["Prefix", "Site", "Member", "Role", "Health (other agents' probes)", "Carried by", "Last failover"].map((h) =>
            el("th", { scope: "col", text: h }),
          ),
        ),
      ),
      el("tbody", {}, ...rows),
    ),
  );
}

async function decideRoute(gateway, prefix, verb) {
  const ok = await confirmDialog(
    verb === "approve"
      ? `Approve ${prefix} of ${gateway}? Every gateway routes it into the tunnel to ${gateway}.`
      : `Reject ${prefix} of ${gateway}? It stays out of every netmap while ${gateway} advertises it.`,
    verb === "approve" ? "Approve" : "Reject",
  );
  if (!ok) return;
  try {
    const route = await api("POST", `/api/v1/nodes/${encodeURIComponent(gateway)}/routes/${verb}`, { prefix });
    say(`${prefix} of ${gateway}: ${route.state}.`);
    await refresh();
  } catch (err) {
    say(`Could not ${verb} ${prefix} of ${gateway}: ${err.message}`, true);
  }
}

function renderWarnings() {
  const warnings = state.topology.warnings;
  $("#warning-count").textContent = warnings.length ? String(warnings.length) : "";
  $("#warnings").replaceChildren(
    ...(warnings.length ? warnings.map((w) => el("li", { text: w })) : [el("li", { class: "none", text: "No warnings." })]),
  );
}

// --- tokens -------------------------------------------------------------------------------------

function renderTokens() {
  const now = Date.now();
  const rows = [...state.tokens].sort((a, b) => b.id - a.id).map((t) => {
    const expired = t.expires_at && Date.parse(t.expires_at) <= now;
    const st = t.revoked ? "revoked" : expired ? "expired" : "active";
    return el(
      "tr",
      { "data-token": String(t.id), "data-state": st },
      el("td", { class: "num", text: String(t.id) }),
      el("td", { text: t.description || "–" }),
      el("td", { text: t.reusable ? "yes" : "no" }),
      el("td", { class: "num", text: String(t.uses) }),
      el("td", { text: t.expires_at ? new Date(t.expires_at).toLocaleString() : "never" }),
      el("td", {}, pill(st === "active" ? "active" : "unknown", st)),
      el("td", {}, st === "active"
        ? el("button", { type: "button", class: "secondary", "aria-label": `Revoke token ${t.id}`, text: "Revoke", onclick: () => revokeToken(t.id) })
        : ""),
    );
  });
  $("#tokens-table tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "7", text: "no tokens" }))]));
}

async function createToken(event) {
  event.preventDefault();
  const expires = $("#token-expires").value;
  const body = {
    reusable: $("#token-reusable").checked,
    expires_in: expires ? Number(expires) : null,
    description: $("#token-description").value,
    p2p: $("#token-p2p").value,
  };
  try {
    const created = await api("POST", "/api/v1/tokens", body);
    $("#token-description").value = "";
    await showSecret("#token-form", created.token, `Token ${created.id} created.`);
  } catch (err) {
    say(`Could not create the token: ${err.message}`, true);
  }
}

// A new secret, shown once in the one secret card, moved under the form that made it.
async function showSecret(form, secret, message) {
  $(form).after($("#token-secret"));
  $("#token-secret-value").textContent = secret;
  $("#token-secret").hidden = false;
  say(message);
  await refresh();
  $("#token-secret-dismiss").focus();
}

async function revokeToken(id) {
  try {
    await api("DELETE", `/api/v1/tokens/${id}`);
    say(`Token ${id} revoked.`);
    await refresh();
  } catch (err) {
    say(`Could not revoke token ${id}: ${err.message}`, true);
  }
}

// --- admin tokens and audit ----------------------------------------------------------------------

function renderAdminTokens() {
  const rows = state.adminTokens.map((t) => {
    const st = t.revoked_at ? "revoked" : "active";
    return el(
      "tr",
      { "data-admin-token": t.name, "data-state": st },
      el("td", { text: t.name }),
      el("td", { text: t.read_only ? "read-only" : "full" }),
      el("td", { text: t.source }),
      el("td", { text: new Date(t.created_at).toLocaleString() }),
      el("td", {}, pill(st === "active" ? "active" : "unknown", st)),
      el("td", {}, st === "active"
        ? el("button", { type: "button", class: "secondary", "aria-label": `Revoke ${t.name} (admin)`, text: "Revoke", onclick: () => revokeAdminToken(t.name) })
        : ""),
    );
  });
  $("#admin-tokens-table tbody").replaceChildren(...rows);
}

function renderAudit() {
  const rows = [...state.audit].reverse().map((e) => el(
    "tr",
    { "data-audit": String(e.id) },
    el("td", { text: new Date(e.at).toLocaleString() }),
    el("td", { text: e.actor }),
    el("td", { text: e.action }),
    el("td", { text: e.target || "–" }),
    el("td", { text: Object.keys(e.detail).length ? JSON.stringify(e.detail) : "–" }),
    el("td", { text: e.client || "–" }),
  ));
  $("#audit-table tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "6", text: "no entries" }))]));
}

async function createAdminToken(event) {
  event.preventDefault();
  const body = { name: $("#admin-token-name").value, read_only: $("#admin-token-read-only").checked };
  try {
    const created = await api("POST", "/api/v1/admin-tokens", body);
    $("#admin-token-name").value = "";
    await showSecret("#admin-token-form", created.token, `Admin token ${created.name} created.`);
  } catch (err) {
    say(`Could not create the admin token: ${err.message}`, true);
  }
}

async function revokeAdminToken(name) {
  const ok = await confirmDialog(`Revoke admin token ${name}? Its dashboard sessions end at once.`, "Revoke");
  if (!ok) return;
  try {
    await api("DELETE", `/api/v1/admin-tokens/${encodeURIComponent(name)}`);
    say(`Admin token ${name} revoked.`);
    await refresh();
  } catch (err) {
    say(`Could not revoke admin token ${name}: ${err.message}`, true);
  }
}

// --- start --------------------------------------------------------------------------------------

function wire() {
  wireSummary();
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#details-close").addEventListener("click", closeDetails);
  $("#details").addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") closeDetails();
  });
  $("#details-p2p").addEventListener("change", (ev) => setNodeP2P(state.selected, ev.target.value));
  $("#details-mtu-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    setNodeMtu(state.selected, $("#details-mtu").value);
  });
  $("#network-mtu-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    setNetworkMtu($("#network-mtu").value);
  });
  $("#details-delete").addEventListener("click", () => deleteNode(state.selected));
  $("#node-filter").addEventListener("input", (ev) => {
    state.filter = ev.target.value;
    renderNodes();
  });
  for (const b of document.querySelectorAll("#nodes-table th button")) {
    b.addEventListener("click", () => {
      const key = b.dataset.sort;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      renderNodes();
    });
  }
  $("#token-form").addEventListener("submit", createToken);
  $("#admin-token-form").addEventListener("submit", createAdminToken);
  $("#token-secret-dismiss").addEventListener("click", () => {
    $("#token-secret").hidden = true;
    $("#token-secret-value").textContent = "";
  });
}

async function start() {
  wire();
  try {
    const session = await api("GET", "/api/v1/session");
    await enterApp(session);
  } catch (_) {
    showLogin();
  }
}

document.addEventListener("DOMContentLoaded", start);
