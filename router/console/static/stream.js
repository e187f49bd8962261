// The agent WebSocket (/api/v1/agents/stream): reconnects with capped exponential backoff
// and jitter, pings to notice a dead link, and hands every frame to one handler. Unknown
// frame types are the handler's business (it ignores them).

const PING_EVERY = 15_000;
const PONG_WITHIN = 10_000;
const MAX_DELAY = 30_000;

export class Stream {
  constructor({ token, onFrame, onState }) {
    this.token = token; // () => current session token
    this.onFrame = onFrame;
    this.onState = onState; // ("connecting" | "open" | "lost", {retryIn})
    this.ws = null;
    this.attempt = 0;
    this.stopped = true;
    this.timers = new Set();
  }

  start() {
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.clearTimers();
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000, "logout");
      this.ws = null;
    }
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  connect() {
    this.clearTimers();
    this.onState("connecting", {});
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/api/v1/agents/stream?token=${encodeURIComponent(this.token())}`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this.retry();
      return;
    }
    this.ws = ws;
    let lastPong = Date.now();
    ws.onopen = () => {
      this.attempt = 0;
      this.every(PING_EVERY, () => {
        if (Date.now() - lastPong > PING_EVERY + PONG_WITHIN) {
          // the link is dead even if the socket does not know: do not wait for its close
          ws.onclose = null;
          ws.close(4000, "no pong");
          this.ws = null;
          this.retry();
          return;
        }
        ws.send(JSON.stringify({ type: "ping" }));
      });
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!frame || typeof frame.type !== "string") return;
      if (frame.type === "pong") {
        lastPong = Date.now();
        return;
      }
      if (frame.type === "hello") this.onState("open", {});
      this.onFrame(frame);
    };
    ws.onclose = () => {
      if (this.ws === ws) this.ws = null;
      if (!this.stopped) this.retry();
    };
  }

  retry() {
    this.clearTimers();
    this.attempt += 1;
    const base = Math.min(MAX_DELAY, 1000 * 2 ** Math.min(this.attempt - 1, 5));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.onState("lost", { retryIn: Math.ceil(delay / 1000), attempt: this.attempt });
    this.later(delay, () => this.connect());
  }

  later(ms, fn) {
    const id = setTimeout(() => {
      this.timers.delete(id);
      fn();
    }, ms);
    this.timers.add(id);
  }

  every(ms, fn) {
    const id = setInterval(fn, ms);
    this.timers.add(id);
  }

  clearTimers() {
    for (const id of this.timers) {
      clearTimeout(id);
      clearInterval(id);
    }
    this.timers.clear();
  }
}
