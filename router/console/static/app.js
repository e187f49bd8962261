// The agent console: login, presence, offers, conversation lists, the conversation with its
// customer's whole timeline, replies, notes, resolve and transfer, kept live by the agent
// stream. State lives here; the other modules draw.

import * as api from "./api.js";
import { setChannelIcon } from "./channels.js";
import { renderCustomer } from "./customer.js";
import { $, $$, debounce, h, show, text } from "./dom.js";
import * as i18n from "./i18n.js";
import { installKeys, isEditable, renderHelp } from "./keys.js";
import { renderList } from "./list.js";
import { Offers } from "./offers.js";
import { Stream } from "./stream.js";
import { Timeline } from "./timeline.js";

const { t } = i18n;
const PRESENCE = "omnihub.presence";
const LISTS = ["mine", "queue", "all"];
const PAGE = 50;

const state = {
  me: null,
  list: "mine",
  lists: { mine: [], queue: [], all: [] },
  openId: null,
  ctx: null,
  older: [], // timeline pages loaded with "earlier"
  olderNext: null,
  names: new Map(), // agent id → name
  teams: [],
  mode: "reply",
  presence: sessionStorage.getItem(PRESENCE) || "online",
  connection: "connecting",
  connInfo: {},
  typingTimer: null,
  decided: new Map(), // merge suggestions decided in the open conversation → outcome
};

const stream = new Stream({ token: () => api.session.token, onFrame, onState: onConnection });
const offers = new Offers($("#offers"), {
  accept: acceptOffer,
  decline: (offer) => api.post(`/api/v1/agents/offers/${encodeURIComponent(offer.id)}/decline`),
  names: () => state.names,
  // the tab's title counts waiting offers, for an agent looking at another window
  changed: () => {
    document.title = (offers.size ? `(${i18n.number(offers.size)}) ` : "") + t("app.title");
  },
});
const timeline = new Timeline($("#timeline"), $("#pending"), { onError: fail });

const isLead = () => state.me && ["supervisor", "admin"].includes(state.me.role);

// ------------------------------------------------------------------------------ messages
function banner(message) {
  const node = $("#banner");
  node.textContent = message || "";
  show(node, !!message);
}

function toast(message, { action, kind = "info", ms = 5000 } = {}) {
  const node = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, text("span", message));
  if (action) {
    node.append(h("button", { type: "button", class: "link", text: action.label,
      on: { click: () => { node.remove(); action.run(); } } }));
  }
  $("#toasts").append(node);
  setTimeout(() => node.remove(), ms);
}

function fail(err) {
  if (err && err.status === 401) return; // handled: back to the login
  const message = err && err.network ? t("net.error", { message: err.message }) : t("error.generic", { message: err.message });
  toast(message, { kind: "error", ms: 8000 });
}

// ------------------------------------------------------------------------------ login
function showLogin(message) {
  show($("#app-view"), false);
  show($("#login-view"), true);
  const error = $("#login-error");
  error.textContent = message || "";
  show(error, !!message);
  $("#login-email").focus();
}

async function login(event) {
  event.preventDefault();
  const button = $("#login-submit");
  const error = $("#login-error");
  button.disabled = true;
  button.textContent = t("login.busy");
  show(error, false);
  try {
    const res = await api.post("/api/v1/agents/login", {
      email: $("#login-email").value.trim(),
      password: $("#login-password").value,
    });
    api.session.token = res.token;
    $("#login-password").value = "";
    await enter();
  } catch (err) {
    error.textContent = err.network ? t("login.network") : err.status === 401 ? t("login.failed") : t("error.generic", { message: err.message });
    show(error, true);
  } finally {
    button.disabled = false;
    button.textContent = t("login.submit");
  }
}

function loggedOut(message) {
  stream.stop();
  api.session.token = null;
  offers.clear();
  closeConversation();
  state.me = null;
  banner(null);
  showLogin(message);
}

async function logout() {
  try {
    await api.post("/api/v1/agents/logout");
  } catch {
    // the token is dropped here either way
  }
  sessionStorage.removeItem(PRESENCE);
  state.presence = "online";
  loggedOut();
}

async function enter() {
  try {
    state.me = await api.get("/api/v1/agents/me");
  } catch (err) {
    if (err.status === 401 || err.status === 403) return loggedOut(err.status === 401 ? t("login.expired") : err.message);
    return showLogin(err.network ? t("login.network") : err.message);
  }
  show($("#login-view"), false);
  show($("#app-view"), true);
  document.activeElement?.blur();
  drawMe();
  show($('[data-list="all"]'), isLead());
  selectList(state.list === "all" && !isLead() ? "mine" : state.list);
  presenceUI(state.presence);
  stream.start();
  await Promise.all([loadDirectory(), refreshLists(), loadOffers()]);
}

function drawMe() {
  $("#me").textContent = `${state.me.name} · ${t(`role.${state.me.role}`)}`;
}

async function loadDirectory() {
  try {
    const [people, teams] = await Promise.all([api.get("/api/v1/agents/directory"), api.get("/api/v1/teams")]);
    state.names = new Map(people.agents.map((a) => [a.id, a.name]));
    state.directory = people.agents;
    state.teams = teams.teams;
  } catch (err) {
    fail(err);
  }
}

async function loadOffers() {
  try {
    const res = await api.get("/api/v1/agents/offers");
    for (const offer of res.offers) showOffer(offer);
  } catch (err) {
    fail(err);
  }
}

// ------------------------------------------------------------------------------ presence
function presenceUI(status) {
  for (const b of $$("[data-presence]")) {
    b.setAttribute("aria-checked", String(b.dataset.presence === status));
    b.classList.toggle("on", b.dataset.presence === status);
  }
}

async function setPresence(status) {
  state.presence = status;
  sessionStorage.setItem(PRESENCE, status);
  presenceUI(status);
  try {
    const me = await api.post("/api/v1/agents/me/presence", { status });
    presenceUI(me.status);
  } catch (err) {
    fail(err);
  }
}

// ------------------------------------------------------------------------------ stream
function onConnection(kind, info) {
  const wasLost = state.connection === "lost" || !$("#banner").hidden;
  state.connection = kind;
  state.connInfo = info;
  drawConnection();
  if (kind === "open") {
    if (wasLost) toast(t("conn.back"));
    banner(null);
  } else if (kind === "lost") {
    banner(t("conn.lost", { s: i18n.number(info.retryIn) }));
    // a socket refused because the session ended looks like any lost link: ask the API
    if (info.attempt >= 2) api.get("/api/v1/agents/me").catch(() => {});
  }
}

function drawConnection() {
  const conn = $("#conn");
  const kind = state.connection;
  conn.dataset.state = kind;
  conn.textContent = kind === "open" ? t("conn.open") : kind === "lost"
    ? t("conn.lost", { s: i18n.number(state.connInfo.retryIn) }) : t("conn.connecting");
}

function onFrame(frame) {
  switch (frame.type) {
    case "hello":
      // the socket makes the agent online: keep the status they chose
      if (state.presence !== "online") setPresence(state.presence);
      offers.clear(); // the server sends the pending ones again
      refreshLists();
      if (state.openId) refreshOpen();
      break;
    case "offer":
      showOffer(frame.offer);
      break;
    case "offer.cancelled":
    case "offer.declined":
    case "offer.withdrawn":
    case "offer.expired":
      if (frame.type === "offer.expired" && offers.items.has(frame.offer_id)) {
        toast(t("toast.offerMissed", { why: frame.type.split(".")[1] }));
      }
      offers.remove(frame.offer_id);
      break;
    case "message":
      if (frame.conversation_id === state.openId) {
        hideTyping();
        refreshOpenSoon();
      }
      refreshListsSoon();
      break;
    case "reply.status":
      timeline.replyStatus(frame.reply_id, frame.status, frame.error);
      if (frame.status === "failed") toast(t("reply.failed", { error: frame.error || "?" }), { kind: "error", ms: 10000 });
      break;
    case "note":
    case "conversation.changed":
      if (frame.conversation_id === state.openId) refreshOpenSoon();
      refreshListsSoon();
      break;
    case "conversation.resolved":
    case "conversation.transferred":
      toast(t(frame.type === "conversation.resolved" ? "toast.resolvedBy" : "toast.transferredAway"));
      if (frame.conversation_id === state.openId) refreshOpenSoon();
      refreshListsSoon();
      break;
    case "sla":
      toast(t("toast.sla", { severity: frame.severity, kind: frame.kind }), { kind: frame.severity === "critical" ? "error" : "warn", ms: 10000 });
      refreshListsSoon();
      break;
    case "presence":
      presenceUI(frame.status);
      break;
    case "typing":
      showTyping(frame.conversation_id);
      break;
    default:
      // frames this console does not know (yet) are ignored
      break;
  }
}

/** The one place a visitor's typing shows: "typing…" under the open conversation's name. */
function showTyping(conversationId) {
  if (!conversationId || conversationId !== state.openId) return;
  const node = $("#typing");
  node.textContent = t("typing");
  show(node, true);
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(hideTyping, 6000);
}

function hideTyping() {
  clearTimeout(state.typingTimer);
  show($("#typing"), false);
}

// ------------------------------------------------------------------------------ offers
function showOffer(offer) {
  offers.show(offer);
  // take the keys unless the agent is typing: Enter then accepts, Tab reaches Decline
  if (!isEditable(document.activeElement) && !document.querySelector("dialog[open]")) {
    const first = $("#offers .offer:not(.gone):not(.busy) .accept");
    if (first) first.focus();
  }
}

async function acceptOffer(offer) {
  const res = await api.post(`/api/v1/agents/offers/${encodeURIComponent(offer.id)}/accept`);
  selectList("mine");
  await refreshLists();
  await openConversation(res.conversation.id);
}

// ------------------------------------------------------------------------------ lists
function selectList(name) {
  if (name === "all" && !isLead()) return false;
  state.list = name;
  for (const tab of $$("[data-list]")) tab.setAttribute("aria-selected", String(tab.dataset.list === name));
  drawList();
  return true;
}

function drawList() {
  renderList($("#conv-list"), state.lists[state.list] || [], {
    openId: state.openId,
    names: state.names,
    me: state.me && state.me.id,
    open: openConversation,
  });
}

async function refreshLists() {
  if (!state.me) return;
  const scopes = LISTS.filter((s) => s !== "all" || isLead());
  try {
    const pages = await Promise.all(scopes.map((s) => api.get(`/api/v1/conversations?scope=${s}&limit=100`)));
    scopes.forEach((s, n) => {
      state.lists[s] = pages[n].conversations;
      const count = $(`[data-list="${s}"] .count`);
      count.textContent = pages[n].conversations.length ? i18n.number(pages[n].conversations.length) : "";
    });
    drawList();
  } catch (err) {
    if (err.network) banner(t("net.error", { message: err.message }));
    else fail(err);
  }
}
const refreshListsSoon = debounce(refreshLists, 250);

function moveInList(step) {
  const list = state.lists[state.list] || [];
  if (!list.length) return false;
  const at = list.findIndex((c) => c.id === state.openId);
  const next = list[Math.max(0, Math.min(list.length - 1, at < 0 ? 0 : at + step))];
  if (next && next.id !== state.openId) openConversation(next.id);
  return true;
}

// ------------------------------------------------------------------------------ conversation
function closeConversation() {
  state.openId = null;
  state.ctx = null;
  timeline.clear();
  hideTyping();
  show($("#conv-body"), false);
  show($("#conv-empty"), true);
  $("#customer").replaceChildren();
  drawList();
}

async function openConversation(id) {
  if (state.openId !== id) {
    state.openId = id;
    state.older = [];
    state.olderNext = null;
    state.decided = new Map();
    timeline.clear();
    hideTyping();
    $("#composer-text").value = "";
    setMode("reply");
  }
  drawList();
  show($("#conv-empty"), false);
  show($("#conv-body"), true);
  await refreshOpen({ toBottom: true });
}

async function refreshOpen({ toBottom = false } = {}) {
  const id = state.openId;
  if (!id) return;
  let ctx;
  try {
    ctx = await api.get(`/api/v1/conversations/${encodeURIComponent(id)}/context?limit=${PAGE}`);
  } catch (err) {
    if (err.status === 403 || err.status === 404) {
      closeConversation();
      toast(t("conv.gone"), { kind: "error" });
    } else {
      fail(err);
    }
    return;
  }
  if (state.openId !== id) return; // the agent moved on meanwhile
  if (state.older.length === 0) state.olderNext = ctx.timeline_next;
  state.ctx = ctx;
  drawConversation(toBottom);
}
const refreshOpenSoon = debounce(() => refreshOpen(), 250);

function drawConversation(toBottom = false, full = false) {
  const ctx = state.ctx;
  if (!ctx) return;
  const conv = ctx.conversation;
  const name = (ctx.customer && ctx.customer.display_name) || t("customer.noName");
  setChannelIcon($("#conv-channel"), conv.channel);
  $("#conv-name").textContent = name;
  const who = conv.assignee ? state.names.get(conv.assignee) || conv.assignee : t("conv.unassigned");
  $("#conv-sub").textContent = `${t(`channel.${conv.channel}`)} · ${t(`state.${conv.state}`)} · ${who}`;
  const mine = conv.assignee === state.me.id;
  const canAct = conv.active && (mine || isLead());
  const canReopen = !conv.active && (isLead() || [conv.last_agent, conv.resolved_by].includes(state.me.id));
  show($("#act-resolve"), canAct);
  show($("#act-transfer"), canAct);
  show($("#act-reopen"), canReopen);
  $('[data-mode="reply"]').disabled = !canAct;
  if (!canAct && state.mode === "reply") setMode("note");
  else setMode(state.mode);

  const scroller = $("#timeline-scroll");
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  if (full) timeline.clear();
  const seen = new Set(ctx.timeline.map((i) => i.id));
  const all = { ...ctx, timeline: [...ctx.timeline, ...state.older.filter((i) => !seen.has(i.id))] };
  timeline.set(all, state.names);
  show($("#load-earlier"), !!state.olderNext);
  if (toBottom || atBottom) scroller.scrollTop = scroller.scrollHeight;

  renderCustomer($("#customer"), ctx, { canDecide: isLead(), decide, decided: state.decided });
}

async function loadEarlier() {
  if (!state.olderNext || !state.openId) return;
  const scroller = $("#timeline-scroll");
  const before = scroller.scrollHeight - scroller.scrollTop;
  try {
    const page = await api.get(
      `/api/v1/conversations/${encodeURIComponent(state.openId)}/context?limit=${PAGE}&before=${encodeURIComponent(state.olderNext)}`,
    );
    state.older.push(...page.timeline);
    state.olderNext = page.timeline_next;
    drawConversation();
    scroller.scrollTop = scroller.scrollHeight - before; // keep the agent's place
  } catch (err) {
    fail(err);
  }
}

async function decide(suggestion, confirm, buttons, status) {
  buttons.hidden = true;
  try {
    await api.post(`/api/v1/merge-suggestions/${encodeURIComponent(suggestion.id)}/${confirm ? "confirm" : "reject"}`);
    status.textContent = t(confirm ? "customer.merged" : "customer.rejected");
    state.decided.set(suggestion.id, { suggestion, confirm });
    refreshOpenSoon();
  } catch (err) {
    buttons.hidden = false;
    fail(err);
  }
}

// ------------------------------------------------------------------------------ composer
function setMode(mode) {
  if (mode === "reply" && $('[data-mode="reply"]').disabled) mode = "note";
  state.mode = mode;
  for (const b of $$("[data-mode]")) b.setAttribute("aria-selected", String(b.dataset.mode === mode));
  const box = $("#composer-text");
  const channel = state.ctx ? t(`channel.${state.ctx.conversation.channel}`) : "";
  box.placeholder = mode === "reply" ? t("composer.replyHint", { channel }) : t("composer.noteHint");
  box.classList.toggle("note", mode === "note");
  $("#composer-send").textContent = mode === "reply" ? t("composer.send") : t("composer.save");
  composerDirection();
}

/** Typed text takes its own direction (dir="auto"); the empty box and its hint follow the
 * page's language. */
function composerDirection() {
  const box = $("#composer-text");
  box.dir = box.value.trim() ? "auto" : document.documentElement.dir;
}

function clientId() {
  // crypto.randomUUID needs a secure context; the console may be served over plain http
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function submitComposer(event) {
  if (event) event.preventDefault();
  const box = $("#composer-text");
  const body = box.value.trim();
  const id = state.openId;
  if (!body || !id) return;
  const button = $("#composer-send");
  button.disabled = true;
  try {
    if (state.mode === "reply") {
      const res = await api.post(`/api/v1/conversations/${encodeURIComponent(id)}/reply`, { text: body, client_id: clientId() });
      box.value = "";
      composerDirection();
      timeline.addPending(res.reply_id, body);
      const scroller = $("#timeline-scroll");
      scroller.scrollTop = scroller.scrollHeight;
    } else {
      await api.post(`/api/v1/conversations/${encodeURIComponent(id)}/notes`, { text: body });
      box.value = "";
      composerDirection();
      toast(t("toast.noteSaved"));
      await refreshOpen({ toBottom: true });
    }
  } catch (err) {
    fail(err);
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------------------ actions
async function resolve() {
  const id = state.openId;
  if (!id || $("#act-resolve").hidden) return false;
  try {
    await api.post(`/api/v1/conversations/${encodeURIComponent(id)}/resolve`);
    toast(t("toast.resolved"), { action: { label: t("action.reopen"), run: () => reopen(id) }, ms: 8000 });
    await Promise.all([refreshLists(), refreshOpen()]);
  } catch (err) {
    fail(err);
  }
  return true;
}

async function reopen(id = state.openId) {
  if (!id) return;
  try {
    await api.post(`/api/v1/conversations/${encodeURIComponent(id)}/reopen`);
    await Promise.all([refreshLists(), id === state.openId ? refreshOpen() : null]);
  } catch (err) {
    fail(err);
  }
}

function openTransfer() {
  if (!state.openId || $("#act-transfer").hidden) return false;
  fillTransfer();
  $("#transfer-note").value = "";
  show($("#transfer-error"), false);
  $("#transfer-dialog").showModal();
  loadDirectory().then(fillTransfer); // colleagues' status as it is now
  return true;
}

function fillTransfer() {
  const agents = $("#transfer-agent");
  const chosen = agents.value;
  agents.replaceChildren(...(state.directory || [])
    .filter((a) => a.id !== state.me.id)
    .map((a) => h("option", { value: a.id, text: `${a.name} (${t(`presence.${a.status}`)})` })));
  if (chosen) agents.value = chosen;
  const teams = $("#transfer-team");
  const team = teams.value;
  teams.replaceChildren(...state.teams.map((tm) => h("option", { value: tm.id, text: tm.name || tm.id })));
  if (team) teams.value = team;
}

async function submitTransfer(event) {
  event.preventDefault();
  const target = new FormData($("#transfer-form")).get("target");
  const value = target === "agent" ? $("#transfer-agent").value : $("#transfer-team").value;
  const error = $("#transfer-error");
  if (!value) {
    error.textContent = t("transfer.pick");
    show(error, true);
    return;
  }
  const body = { [target === "agent" ? "agent_id" : "team_id"]: value };
  const note = $("#transfer-note").value.trim();
  if (note) body.note = note;
  try {
    await api.post(`/api/v1/conversations/${encodeURIComponent(state.openId)}/transfer`, body);
    $("#transfer-dialog").close();
    toast(t("toast.transferred"));
    await Promise.all([refreshLists(), refreshOpen()]);
  } catch (err) {
    error.textContent = t("error.generic", { message: err.message });
    show(error, true);
  }
}

// ------------------------------------------------------------------------------ language
function switchLanguage() {
  i18n.setLang(i18n.lang === "fa" ? "en" : "fa");
  renderHelp($("#help-keys"));
  if (!state.me) return true;
  drawConnection();
  drawMe();
  drawList();
  if (state.ctx) drawConversation(false, true);
  const pending = [...offers.items.values()].map((i) => i.offer);
  offers.clear();
  pending.forEach((o) => offers.show(o));
  return true;
}

// ------------------------------------------------------------------------------ wiring
function wire() {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  for (const b of $$(".lang-toggle")) b.addEventListener("click", switchLanguage);
  for (const b of $$("[data-presence]")) b.addEventListener("click", () => setPresence(b.dataset.presence));
  for (const b of $$("[data-list]")) b.addEventListener("click", () => selectList(b.dataset.list));
  for (const b of $$("[data-mode]")) b.addEventListener("click", () => { setMode(b.dataset.mode); $("#composer-text").focus(); });
  $("#composer").addEventListener("submit", submitComposer);
  $("#composer-text").addEventListener("input", composerDirection);
  $("#act-resolve").addEventListener("click", resolve);
  $("#act-reopen").addEventListener("click", () => reopen());
  $("#act-transfer").addEventListener("click", openTransfer);
  $("#transfer-form").addEventListener("submit", submitTransfer);
  $("#transfer-cancel").addEventListener("click", () => $("#transfer-dialog").close());
  $("#load-earlier").addEventListener("click", loadEarlier);
  $("#help-button").addEventListener("click", () => $("#help-dialog").showModal());
  $("#help-close").addEventListener("click", () => $("#help-dialog").close());
  api.whenUnauthorized(() => loggedOut(t("login.expired")));
  installKeys({
    send: (target) => {
      if (target.id === "composer-text") submitComposer();
      else if (target.id === "transfer-note") $("#transfer-form").requestSubmit();
      else return false;
      return true;
    },
    accept: () => !!offers.first() && (offers.accept(offers.first()), true),
    decline: () => !!offers.first() && (offers.decline(offers.first()), true),
    next: () => moveInList(1),
    previous: () => moveInList(-1),
    listMine: () => selectList("mine"),
    listQueue: () => selectList("queue"),
    listAll: () => selectList("all"),
    reply: () => {
      if (!state.openId || $('[data-mode="reply"]').disabled) return false;
      setMode("reply");
      $("#composer-text").focus();
      return true;
    },
    note: () => {
      if (!state.openId) return false;
      setMode("note");
      $("#composer-text").focus();
      return true;
    },
    resolve,
    transfer: openTransfer,
    language: switchLanguage,
    help: () => ($("#help-dialog").showModal(), true),
  });
}

i18n.apply();
renderHelp($("#help-keys"));
wire();
if (api.session.token) enter();
else showLogin();
