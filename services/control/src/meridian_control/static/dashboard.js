// Meridian control page: plain JavaScript, no build step, no third-party code.
// The token lives in this tab's sessionStorage and goes out only in the Authorization header
// and as the WebSocket's first message. Data is rendered with textContent, never as HTML.
"use strict";

(() => {
  const KEY = "meridian.control.token";
  const WS_PATH = "/v1/ws/portfolio";
  const CURVE_POINTS = 600;
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(KEY);
  let socket = null;
  let live = false;
  let retry = 0;
  let timers = [];
  let killState = null;
  let curve = { account: null, capital: 0, points: [] };  // points: [{t: ms, v: number}]

  // ---------------------------------------------------------------- the API

  class Refused extends Error {}

  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${token}` };
    if (options.body) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { ...options, headers, cache: "no-store" });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (response.status === 401) {
      forget("The token was refused.");
      throw new Refused("unauthorized");
    }
    if (!response.ok) throw new Error(describe(body) || `HTTP ${response.status}`);
    return body;
  }

  function describe(body) {
    if (!body) return "";
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((e) => e.msg).join("; ");
    return "";
  }

  function say(text, isError = false) {
    const el = $("message");
    el.textContent = text;
    el.className = isError ? "error" : "";
  }

  function failed(error) {
    if (!(error instanceof Refused)) say(error.message, true);
  }

  // ---------------------------------------------------------------- formatting

  const number = (x, digits = 2) => (x === null || x === undefined) ? "" :
    Number(x).toLocaleString("en-US", { maximumFractionDigits: digits });
  const when = (iso) => iso ? iso.replace("T", " ").slice(0, 16) + "Z" : "";

  function cell(row, text, cls = "") {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  const sign = (x) => Number(x) > 0 ? "pos" : Number(x) < 0 ? "neg" : "";

  // ---------------------------------------------------------------- rendering

  function renderPositions(positions) {
    const body = $("positions").querySelector("tbody");
    body.replaceChildren();
    for (const p of positions) {
      const row = document.createElement("tr");
      row.dataset.symbol = p.symbol;
      row.dataset.account = p.account;
      cell(row, p.account, "text");
      cell(row, `${p.exchange}:${p.symbol}`, "text");
      cell(row, p.side, "text");
      cell(row, p.quantity).className = "quantity";
      cell(row, number(p.average_price, 8));
      cell(row, number(p.mark_price, 8));
      cell(row, number(p.unrealized_pnl), sign(p.unrealized_pnl));
      cell(row, number(p.realized_pnl), sign(p.realized_pnl));
      cell(row, number(p.fees_paid));
      cell(row, number(p.funding_paid));
      cell(row, number(p.net_pnl), `net ${sign(p.net_pnl)}`);
      cell(row, when(p.as_of));
      body.appendChild(row);
    }
    if (!positions.length) {
      const row = document.createElement("tr");
      cell(row, "no positions yet", "text").colSpan = 12;
      body.appendChild(row);
    }
  }

  function renderDecisions(decisions) {
    const body = $("decisions").querySelector("tbody");
    body.replaceChildren();
    for (const d of decisions) {
      const row = document.createElement("tr");
      cell(row, when(d.time), "text");
      cell(row, d.symbol, "text");
      cell(row, d.approved ? "approved" : "rejected", d.approved ? "text pos" : "text neg");
      cell(row, d.side, "text");
      cell(row, d.quantity);
      cell(row, number(d.reference_price, 8));
      const rules = cell(row, d.failed_rules.map((r) => r.rule).join(", "), "wrap");
      rules.title = d.failed_rules.map((r) => `${r.rule}: ${r.detail}`).join("\n");
      body.appendChild(row);
    }
  }

  function renderKill(state) {
    killState = state;
    const el = $("kill-state");
    el.textContent = state.engaged ? "ENGAGED" : "clear";
    el.className = state.engaged ? "engaged" : "clear";
    $("kill-detail").textContent = state.time ?
      `— ${state.reason} (${state.actor}, ${when(state.time)})` : "— never set";
    const b = state.breaker;
    $("breaker").textContent = b ? `Breaker: ${b.level}${b.until ? " until " + when(b.until) : ""}` +
      (b.reason ? ` — ${b.reason}` : "") : "Breaker: never announced";
    const button = $("kill-toggle");
    button.textContent = state.engaged ? "Clear kill switch" : "Engage kill switch";
    button.disabled = false;
  }

  function renderCurve() {
    const svg = $("equity-chart");
    svg.replaceChildren();
    const pts = curve.points;
    if (!pts.length) {
      $("equity-latest").textContent = "";
      $("equity-range").textContent = "no equity marked yet";
      return;
    }
    const W = 800, H = 240, pad = 8;
    const t0 = pts[0].t, t1 = pts[pts.length - 1].t;
    let lo = Math.min(curve.capital, ...pts.map((p) => p.v));
    let hi = Math.max(curve.capital, ...pts.map((p) => p.v));
    if (hi === lo) { hi += 1; lo -= 1; }
    const x = (t) => t1 === t0 ? W / 2 : ((t - t0) / (t1 - t0)) * W;
    const y = (v) => pad + (1 - (v - lo) / (hi - lo)) * (H - 2 * pad);
    const ns = "http://www.w3.org/2000/svg";
    const base = document.createElementNS(ns, "line");
    base.setAttribute("x1", "0"); base.setAttribute("x2", String(W));
    base.setAttribute("y1", String(y(curve.capital))); base.setAttribute("y2", String(y(curve.capital)));
    svg.appendChild(base);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" "));
    svg.appendChild(line);
    const last = pts[pts.length - 1];
    $("equity-latest").textContent = `${number(last.v)} (${curve.account}, ${when(new Date(last.t).toISOString())})`;
    $("equity-range").textContent = `${when(new Date(t0).toISOString())} … ${when(new Date(t1).toISOString())}` +
      ` · low ${number(lo)} · high ${number(hi)} · dashed: capital ${number(curve.capital)}`;
  }

  // ---------------------------------------------------------------- loading

  async function loadKill() { renderKill(await api("/v1/kill-switch")); }
  async function loadPositions() { renderPositions((await api("/v1/positions")).positions); }
  async function loadDecisions() { renderDecisions((await api("/v1/decisions?limit=25")).decisions); }

  async function loadCurve() {
    const body = await api(`/v1/equity?max_points=${CURVE_POINTS}`);
    curve = {
      account: body.account, capital: Number(body.initial_capital),
      points: body.points.map((p) => ({ t: Date.parse(p.time), v: Number(p.equity) })),
    };
    renderCurve();
  }

  function extendCurve(equity) {
    const mine = equity.find((e) => e.account === curve.account) || (curve.account ? null : equity[0]);
    if (!mine) return;
    const t = Date.parse(mine.time);
    const pts = curve.points;
    if (!curve.account) curve.account = mine.account;
    if (pts.length && t < pts[pts.length - 1].t) return;
    if (pts.length && t === pts[pts.length - 1].t) pts.pop();
    pts.push({ t, v: Number(mine.equity) });
    if (pts.length > 2 * CURVE_POINTS) { loadCurve().catch(failed); return; }
    renderCurve();
  }

  // ---------------------------------------------------------------- live updates

  function setLive(text, cls) {
    const el = $("live");
    el.textContent = text;
    el.className = `badge ${cls}`;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${WS_PATH}`);
    setLive("connecting", "");
    socket.onopen = () => socket.send(JSON.stringify({ token }));
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "error") {
        live = false;
        setLive("database down", "down");
        say(message.detail, true);
        return;
      }
      if (!live) say("");
      live = true;
      retry = 0;
      setLive("live", "live");
      renderPositions(message.positions);
      extendCurve(message.equity);
    };
    socket.onclose = (event) => {
      live = false;
      socket = null;
      if (event.code === 1008) { forget("The live stream refused the token."); return; }
      if (!token) return;
      setLive("reconnecting", "down");
      retry = Math.min(retry + 1, 5);
      timers.push(setTimeout(connect, 1000 * 2 ** (retry - 1)));
    };
  }

  function every(ms, fn) {
    timers.push(setInterval(() => fn().catch(failed), ms));
  }

  // ---------------------------------------------------------------- the kill switch

  async function toggleKill(event) {
    event.preventDefault();
    if (!killState) return;
    const reason = $("kill-reason").value.trim();
    if (!reason) { say("A reason is required.", true); return; }
    const engaged = !killState.engaged;
    $("kill-toggle").disabled = true;
    try {
      const done = await api("/v1/kill-switch", {
        method: "POST", body: JSON.stringify({ engaged, reason, actor: "dashboard" }),
      });
      say(`Kill switch ${done.engaged ? "engaged" : "cleared"}: published on ${done.topic} (id ${done.id}).`);
      $("kill-reason").value = "";
      await loadKill();
    } catch (error) {
      failed(error);
      $("kill-toggle").disabled = false;
    }
  }

  // ---------------------------------------------------------------- session

  function start() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("logout").hidden = false;
    say("");
    Promise.all([loadKill(), loadPositions(), loadCurve(), loadDecisions()]).catch(failed);
    connect();
    every(5000, loadKill);
    every(10000, loadDecisions);
    every(5000, async () => { if (!live) await loadPositions(); });  // while the stream is down
  }

  function forget(why) {
    token = null;
    sessionStorage.removeItem(KEY);
    for (const t of timers) { clearTimeout(t); clearInterval(t); }
    timers = [];
    if (socket) { socket.onclose = null; socket.close(); socket = null; }
    live = false;
    setLive("offline", "");
    $("dashboard").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = why || "";
    $("token").value = "";
    $("token").focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const given = $("token").value.trim();
      if (!given) return;
      token = given;
      sessionStorage.setItem(KEY, token);
      $("login-error").textContent = "";
      start();
    });
    $("logout").addEventListener("click", () => forget(""));
    $("kill-form").addEventListener("submit", toggleKill);
    if (token) start(); else forget("");
  });
})();
