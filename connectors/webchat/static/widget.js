/* omnihub web chat widget. Embed with:
 *   <script src="https://chat.example.com/widget.js" data-inbox="default" async></script>
 * Optional: data-lang="fa|en", data-prechat="true", and window.omnihubChat = {identity:
 * {user_id, email, name, hash}} (hash: README, "Web chat", signed identity) set before the tag.
 * API: OmnihubChat.open(), .close(), .reset() (call on logout).
 * No framework; all text goes in with textContent, never innerHTML. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.OmnihubChat) return;
  var BASE = new URL(script.src, location.href).origin;
  var INBOX = script.getAttribute("data-inbox") || "default";
  var cfg = window.omnihubChat || {};
  var root = document.documentElement;
  var LANG = (script.getAttribute("data-lang") || root.lang || navigator.language || "en")
    .slice(0, 2).toLowerCase() === "fa" ? "fa" : "en";
  var RTL = (root.dir || getComputedStyle(root).direction) === "rtl" || LANG === "fa";
  var T = {
    fa: { title: "پشتیبانی", open: "گفتگو با ما", ph: "پیام خود را بنویسید…", send: "ارسال",
      attach: "پیوست فایل", close: "بستن", online: "آنلاین", connecting: "در حال اتصال…",
      offline: "آفلاین؛ پیام‌ها پس از اتصال ارسال می‌شوند", typing: "پشتیبان در حال نوشتن است…",
      queued: "در صف ارسال", sent: "ارسال شد", failed: "ارسال نشد", big: "فایل بزرگ‌تر از حد مجاز است",
      type: "این نوع فایل پذیرفته نمی‌شود", upFail: "بارگذاری فایل انجام نشد",
      hi: "سلام! چطور می‌توانیم کمکتان کنیم؟", name: "نام", email: "ایمیل", phone: "تلفن همراه",
      start: "شروع گفتگو", skip: "بعداً", limit: "کمی صبر کنید؛ پیام‌ها خیلی سریع ارسال شدند" },
    en: { title: "Support", open: "Chat with us", ph: "Type your message…", send: "Send",
      attach: "Attach a file", close: "Close", online: "Online", connecting: "Connecting…",
      offline: "Offline — messages will be sent once you are back", typing: "Support is typing…",
      queued: "Queued", sent: "Sent", failed: "Not sent", big: "The file is too large",
      type: "This file type is not accepted", upFail: "The upload failed",
      hi: "Hi! How can we help?", name: "Name", email: "Email", phone: "Mobile",
      start: "Start chat", skip: "Later", limit: "Please wait a moment: too many messages" }
  }[LANG];

  // ------------------------------------------------------------------ storage
  var P = "omnihub:" + INBOX + ":";
  function load(k, d) { try { var v = localStorage.getItem(P + k); return v ? JSON.parse(v) : d; } catch (e) { return d; } }
  function save(k, v) { try { localStorage.setItem(P + k, JSON.stringify(v)); } catch (e) { /* full or blocked */ } }
  var COOKIE = "omnihub_" + INBOX.replace(/[^a-z0-9_-]/g, "") + "=";
  function cookie() { var m = document.cookie.split("; ").filter(function (c) { return c.indexOf(COOKIE) === 0; })[0]; return m ? decodeURIComponent(m.slice(COOKIE.length)) : null; }
  function setCookie(v, age) { document.cookie = COOKIE + encodeURIComponent(v || "") + "; path=/; max-age=" + age + "; SameSite=Lax" + (location.protocol === "https:" ? "; Secure" : ""); }
  var state = { visitor: load("visitor", null) || cookie(), session: load("session", null),
    outbox: load("outbox", []), cache: load("cache", []), profile: load("profile", null) };
  function persist() { save("visitor", state.visitor); save("session", state.session); save("outbox", state.outbox); save("cache", state.cache.slice(-50)); }

  // ------------------------------------------------------------------ DOM
  function icon(d) {  // stroke icons drawn here: no emoji font needed on the visitor's machine
    var NS = "http://www.w3.org/2000/svg", svg = document.createElementNS(NS, "svg"), path = document.createElementNS(NS, "path");
    svg.setAttribute("viewBox", "0 0 24 24"); svg.setAttribute("width", "22"); svg.setAttribute("height", "22"); svg.setAttribute("aria-hidden", "true");
    path.setAttribute("d", d); path.setAttribute("fill", "none"); path.setAttribute("stroke", "currentColor");
    path.setAttribute("stroke-width", "2"); path.setAttribute("stroke-linecap", "round"); path.setAttribute("stroke-linejoin", "round");
    svg.append(path); return svg;
  }
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }
  var host = el("div"); host.id = "omnihub-chat";
  var shadow = host.attachShadow({ mode: "open" });
  var css = el("style");
  css.textContent = ":host{all:initial}*{box-sizing:border-box;font-family:system-ui,-apple-system,'Segoe UI',Tahoma,'Vazirmatn','Noto Sans Arabic',sans-serif}" +
    ".w{position:fixed;bottom:20px;inset-inline-end:20px;z-index:2147483000;font-size:14px;color:#1f2933;display:flex;flex-direction:column;align-items:flex-end}" +
    ".l{width:58px;height:58px;border-radius:50%;border:0;background:#0b6bcb;color:#fff;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25);position:relative;display:flex;align-items:center;justify-content:center}.l svg{width:28px;height:28px}" +
    ".b{position:absolute;top:-2px;inset-inline-end:-2px;background:#d92d20;color:#fff;border-radius:10px;font-size:11px;padding:1px 6px;display:none}" +
    ".p{display:none;flex-direction:column;width:min(370px,calc(100vw - 24px));height:min(540px,calc(100vh - 100px));background:#fff;border-radius:14px;box-shadow:0 10px 40px rgba(0,0,0,.25);overflow:hidden;margin-bottom:12px}" +
    ".w.o .p{display:flex}.h{background:#0b6bcb;color:#fff;padding:12px 14px;display:flex;align-items:center;gap:8px}" +
    ".h strong{flex:1;font-size:15px}.s{font-size:11px;opacity:.9}.x{background:none;border:0;color:#fff;font-size:20px;cursor:pointer}" +
    ".g{flex:1;overflow-y:auto;padding:12px;background:#f4f6f8;display:flex;flex-direction:column;gap:6px}" +
    ".m{max-width:80%;padding:8px 11px;border-radius:14px;white-space:pre-wrap;word-wrap:break-word;line-height:1.55}" +
    ".m.in{align-self:flex-end;background:#0b6bcb;color:#fff}.m.out{align-self:flex-start;background:#fff;border:1px solid #dde3ea}" +
    ".m .t{display:block;font-size:10px;opacity:.75;margin-top:3px}.m.q{opacity:.7}.m.f{background:#fde8e7;color:#8a1c12}" +
    ".m img{max-width:100%;border-radius:8px;display:block;margin-top:4px}.m a{color:inherit}" +
    ".n{align-self:center;font-size:12px;color:#52606d;text-align:center}.y{font-size:12px;color:#52606d;padding:0 14px 4px;min-height:18px;background:#f4f6f8}" +
    ".f{display:flex;gap:6px;padding:8px;border-top:1px solid #e4e7eb;align-items:flex-end}" +
    "textarea{flex:1;resize:none;border:1px solid #cbd2d9;border-radius:10px;padding:8px;font-size:14px;max-height:110px;min-height:38px}" +
    ".f button{border:0;border-radius:10px;background:#0b6bcb;color:#fff;padding:9px 12px;cursor:pointer}.f .a{background:#e4e7eb;color:#1f2933;padding:7px 8px;display:flex}" +
    ".pc{display:flex;flex-direction:column;gap:8px;padding:14px}.pc input{border:1px solid #cbd2d9;border-radius:8px;padding:8px}" +
    ".pc div{display:flex;gap:8px}.pc button{flex:1;border:0;border-radius:8px;padding:9px;cursor:pointer;background:#0b6bcb;color:#fff}.pc .k{background:#e4e7eb;color:#1f2933}";
  var w = el("div", "w"); w.dir = RTL ? "rtl" : "ltr"; w.lang = LANG;
  var panel = el("div", "p"); panel.setAttribute("role", "dialog"); panel.setAttribute("aria-label", T.title);
  var head = el("div", "h"), titleEl = el("strong", null, T.title), status = el("span", "s", T.connecting);
  var closeBtn = el("button", "x", "×"); closeBtn.setAttribute("aria-label", T.close);
  head.append(titleEl, status, closeBtn);
  var log = el("div", "g"); log.setAttribute("aria-live", "polite");
  var typingEl = el("div", "y");
  var form = el("form", "f"), input = el("textarea"), attachBtn = el("button", "a"), sendBtn = el("button", null, T.send);
  var file = el("input"); file.type = "file"; file.hidden = true;
  input.rows = 1; input.placeholder = T.ph; input.dir = "auto"; input.setAttribute("aria-label", T.ph);
  attachBtn.type = "button"; attachBtn.title = T.attach; attachBtn.setAttribute("aria-label", T.attach); sendBtn.type = "submit";
  attachBtn.append(icon("M20 11.5l-7.6 7.6a5 5 0 0 1-7.1-7.1l7.9-7.9a3.4 3.4 0 0 1 4.8 4.8l-7.9 7.9a1.7 1.7 0 0 1-2.4-2.4l7.2-7.2"));
  form.append(attachBtn, input, sendBtn, file);
  panel.append(head, log, typingEl, form);
  var launcher = el("button", "l"), badge = el("span", "b");
  launcher.append(icon("M21 12a8 8 0 0 1-11.6 7.1L4 20.5l1.4-4.9A8 8 0 1 1 21 12z"));
  launcher.setAttribute("aria-label", T.open); launcher.title = T.open; launcher.append(badge);
  w.append(panel, launcher); shadow.append(css, w);

  var shown = {}, unread = 0, limits = { text: 4000, upload_bytes: 10485760, upload_types: [] };
  function fmt(at) { var d = at ? new Date(at) : new Date(); return isNaN(d) ? "" : d.toLocaleTimeString(LANG === "fa" ? "fa-IR" : "en-GB", { hour: "2-digit", minute: "2-digit" }); }
  function url(u) { return u && u.charAt(0) === "/" ? BASE + u : u; }
  function render(item) {
    var node = (item.client_id && shown["c:" + item.client_id]) || (item.id && shown["i:" + item.id]);
    var fresh = !node;
    if (fresh) { node = el("div"); log.append(node); }
    node.className = "m " + (item.direction === "out" ? "out" : "in") + (item.state === "queued" ? " q" : "") + (item.state === "failed" ? " f" : "");
    node.dir = "auto"; node.textContent = "";
    if (item.text) node.append(el("span", null, item.text));
    (item.attachments || []).forEach(function (a) {
      if (/^image\//.test(a.type || "") && a.url) { var img = el("img"); img.src = url(a.url); img.alt = a.name || ""; node.append(img); }
      else { var link = el("a", null, a.name || "file"); if (a.url) { link.href = url(a.url); link.target = "_blank"; link.rel = "noopener"; } node.append(link); }
    });
    var meta = fmt(item.at) + (item.state === "queued" ? " · " + T.queued : item.state === "failed" ? " · " + T.failed + (item.error ? ": " + item.error : "") : "");
    node.append(el("span", "t", meta));
    if (item.client_id) shown["c:" + item.client_id] = node;
    if (item.id) { shown["i:" + item.id] = node; node.setAttribute("data-id", item.id); }
    log.scrollTop = log.scrollHeight;
    return fresh;
  }
  function remember(item) {
    state.cache = state.cache.filter(function (c) { return !(c.id && c.id === item.id) && !(item.client_id && c.client_id === item.client_id); });
    state.cache.push(item); persist();
  }
  function note(text) { var n = el("div", "n", text); log.append(n); log.scrollTop = log.scrollHeight; setTimeout(function () { n.remove(); }, 6000); }
  function setStatus(s) { status.textContent = T[s]; w.setAttribute("data-status", s); }
  function clearLog() { log.textContent = ""; shown = {}; }
  function greet() { if (!log.querySelector(".m")) log.append(el("div", "n", T.hi)); }

  // ------------------------------------------------------------------ socket
  var ws = null, backoff = 1000, retryTimer = null, pingTimer = null, pongDue = 0, ready = false, inflight = {};
  function send(frame) { if (ws && ready && ws.readyState === 1) { ws.send(JSON.stringify(frame)); return true; } return false; }
  function connect() {
    clearTimeout(retryTimer);
    if (ws || navigator.onLine === false) return;
    setStatus("connecting");
    var sock = ws = new WebSocket(BASE.replace(/^http/, "ws") + "/ws?inbox=" + encodeURIComponent(INBOX));
    sock.onopen = function () {
      sock.send(JSON.stringify({ type: "hello", visitor: state.visitor, session: state.session,
        identity: cfg.identity || null, profile: state.profile }));
    };
    sock.onmessage = function (ev) { var f; try { f = JSON.parse(ev.data); } catch (e) { return; } onFrame(f); };
    sock.onclose = function () {
      if (ws !== sock) return;
      ws = null; ready = false; inflight = {}; clearInterval(pingTimer);
      setStatus(navigator.onLine === false ? "offline" : "connecting");
      var wait = Math.min(backoff, 30000) * (0.75 + Math.random() * 0.5);
      backoff = Math.min(backoff * 2, 30000);
      retryTimer = setTimeout(connect, wait);
    };
  }
  function drop() { if (ws) { var s = ws; try { s.close(); } catch (e) { /* closing */ } s.onclose && s.onclose(); } }
  function flush() {
    state.outbox.forEach(function (m) {
      if (inflight[m.client_id]) return;
      if (send({ type: "message", client_id: m.client_id, text: m.text, attachments: m.attachments })) inflight[m.client_id] = true;
    });
  }
  function onFrame(f) {
    if (f.type === "welcome") {
      if (f["new"] && state.visitor) { state.cache = []; state.outbox = []; clearLog(); }
      state.visitor = f.visitor; state.session = f.session; limits = f.limits || limits;
      setCookie(f.visitor, 31536000); persist();
      if (f.title) titleEl.textContent = f.title;
      input.maxLength = limits.text;
      file.accept = (limits.upload_types || []).join(",");
      ready = true; backoff = 1000; setStatus("online");
      clearInterval(pingTimer);
      pingTimer = setInterval(function () {
        if (pongDue && Date.now() > pongDue) { pongDue = 0; drop(); return; }
        if (send({ type: "ping" })) pongDue = Date.now() + 10000;
      }, 25000);
    } else if (f.type === "pong") {
      pongDue = 0;
    } else if (f.type === "history") {
      var stored = {}, ids = {}, last = f.items.length ? f.items[f.items.length - 1].at : "";
      clearLog();
      f.items.forEach(function (it) { render(it); ids[it.id] = true; if (it.client_id) stored[it.client_id] = true; });
      // acked moments ago but not on the timeline yet (the pipeline is a little behind): keep
      // showing them; older ones missing from the history are simply beyond its window
      var pendingIngest = state.cache.filter(function (it) { return it.id && !ids[it.id] && it.at && it.at > last; });
      pendingIngest.forEach(render);
      // stored already (its ack was lost): never send it again
      state.outbox = state.outbox.filter(function (m) { return !stored[m.client_id]; });
      state.cache = f.items.concat(pendingIngest).slice(-50);
      state.outbox.forEach(function (m) { render(pending(m)); });
      persist(); greet(); flush();
    } else if (f.type === "ack") {
      var m = take(f.client_id);
      if (m) { var item = { id: f.id, client_id: m.client_id, direction: "in", text: m.text, attachments: m.attachments, at: f.at }; render(item); remember(item); }
    } else if (f.type === "message") {
      if (render(f)) { if (f.direction === "out") { typingEl.textContent = ""; if (!w.classList.contains("o")) { unread++; badge.textContent = unread; badge.style.display = "block"; } } }
      remember(f);
    } else if (f.type === "typing" && f.who === "agent") {
      typingEl.textContent = f.state === "start" ? T.typing : "";
      clearTimeout(typingEl.timer);
      if (f.state === "start") typingEl.timer = setTimeout(function () { typingEl.textContent = ""; }, 8000);
    } else if (f.type === "error") {
      onError(f);
    }
  }
  function onError(f) {
    var m = f.client_id && state.outbox.filter(function (x) { return x.client_id === f.client_id; })[0];
    if (m && f.retry) {
      delete inflight[m.client_id];
      if (f.code === "rate_limited") note(T.limit);
      setTimeout(flush, Math.max(1, f.retry_after || 2) * 1000);
    } else if (m) {
      take(m.client_id);
      render({ client_id: m.client_id, direction: "in", text: m.text, attachments: m.attachments, at: m.at, state: "failed", error: f.message });
    } else if (f.code !== "history_unavailable") {
      note(f.message || T.failed);
    }
  }
  function take(clientId) {
    var found = null;
    state.outbox = state.outbox.filter(function (m) { if (m.client_id === clientId) { found = m; return false; } return true; });
    delete inflight[clientId]; persist(); return found;
  }
  function pending(m) { return { client_id: m.client_id, direction: "in", text: m.text, attachments: m.attachments, at: m.at, state: "queued" }; }
  function uid() { return (crypto.randomUUID ? crypto.randomUUID() : Date.now().toString(36) + Math.random().toString(36).slice(2)).replace(/[^A-Za-z0-9_-]/g, ""); }
  function queue(text, attachments) {
    var m = { client_id: uid(), text: text || null, attachments: attachments || [], at: new Date().toISOString() };
    state.outbox.push(m); persist(); render(pending(m)); flush();
  }

  // ------------------------------------------------------------------ typing, sending, uploads
  var typingSent = 0, typingStop = null;
  input.addEventListener("input", function () {
    if (Date.now() - typingSent > 2000 && send({ type: "typing", state: "start" })) typingSent = Date.now();
    clearTimeout(typingStop);
    typingStop = setTimeout(function () { send({ type: "typing", state: "stop" }); typingSent = 0; }, 4000);
  });
  input.addEventListener("keydown", function (e) { if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); } });
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = ""; clearTimeout(typingStop); typingSent = 0;
    queue(text);
  });
  attachBtn.addEventListener("click", function () { file.click(); });
  file.addEventListener("change", function () {
    var f = file.files && file.files[0]; file.value = "";
    if (!f) return;
    if (f.size > limits.upload_bytes) return note(T.big);
    if (limits.upload_types.length && limits.upload_types.indexOf(f.type) < 0) return note(T.type);
    if (!state.visitor) return note(T.offline);
    var body = new FormData(); body.append("visitor", state.visitor); body.append("file", f, f.name);
    fetch(BASE + "/upload?inbox=" + encodeURIComponent(INBOX), { method: "POST", body: body })
      .then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error((j.error && j.error.message) || T.upFail); return j.attachment; }); })
      .then(function (a) { queue(null, [a]); })
      .catch(function (err) { note(T.upFail + (err && err.message ? ": " + err.message : "")); });
  });

  // ------------------------------------------------------------------ pre-chat form
  function prechat() {
    if (script.getAttribute("data-prechat") !== "true" || state.profile || cfg.identity) return;
    var pc = el("form", "pc"), fields = {};
    [["name", "text"], ["email", "email"], ["phone", "tel"]].forEach(function (d) {
      var i = el("input"); i.type = d[1]; i.placeholder = T[d[0]]; i.dir = "auto"; fields[d[0]] = i; pc.append(i);
    });
    var row = el("div"), go = el("button", null, T.start), skip = el("button", "k", T.skip);
    skip.type = "button"; row.append(go, skip); pc.append(row);
    log.style.display = "none"; form.style.display = "none"; panel.insertBefore(pc, typingEl);
    function done() { pc.remove(); log.style.display = ""; form.style.display = ""; input.focus(); }
    skip.addEventListener("click", function () { state.profile = {}; save("profile", {}); done(); });
    pc.addEventListener("submit", function (e) {
      e.preventDefault();
      state.profile = { name: fields.name.value.trim() || null, email: fields.email.value.trim() || null, phone: fields.phone.value.trim() || null };
      save("profile", state.profile); send({ type: "profile", name: state.profile.name, email: state.profile.email, phone: state.profile.phone }); done();
    });
  }

  // ------------------------------------------------------------------ open, close, reset
  function open() { w.classList.add("o"); unread = 0; badge.style.display = "none"; input.focus(); log.scrollTop = log.scrollHeight; }
  function close() { w.classList.remove("o"); }
  launcher.addEventListener("click", function () { w.classList.contains("o") ? close() : open(); });
  closeBtn.addEventListener("click", close);
  window.addEventListener("online", function () { backoff = 1000; connect(); });
  window.addEventListener("offline", function () { setStatus("offline"); drop(); clearTimeout(retryTimer); });
  window.OmnihubChat = {
    open: open, close: close,
    reset: function () {  // the host site's user logged out: forget this visitor here
      ["visitor", "session", "outbox", "cache", "profile"].forEach(function (k) { try { localStorage.removeItem(P + k); } catch (e) { /* blocked */ } });
      setCookie("", 0);
      state = { visitor: null, session: null, outbox: [], cache: [], profile: null };
      cfg = window.omnihubChat || {}; clearLog(); greet(); drop();
    }
  };
  function start() {
    document.body.append(host);
    state.cache.forEach(render);  // last known chat at once; the server's history replaces it
    state.outbox.forEach(function (m) { render(pending(m)); });
    greet(); prechat(); setStatus(navigator.onLine === false ? "offline" : "connecting"); connect();
  }
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();
