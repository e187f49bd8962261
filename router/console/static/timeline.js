// The customer's whole cross-channel timeline, oldest at the top: messages in and out on every
// channel, this conversation's notes between them, and replies still on their way. Message
// text is only ever set as text (dir="auto", so Persian and English each run their own way);
// e-mail HTML, already sanitised by the email connector, is shown in a sandboxed frame
// without scripts (srcdoc, sandbox="").

import { download } from "./api.js";
import { channelIcon } from "./channels.js";
import { h, text } from "./dom.js";
import { number, t, when } from "./i18n.js";

export class Timeline {
  constructor(list, pending, { onError }) {
    this.list = list;
    this.pendingList = pending;
    this.onError = onError;
    this.keys = []; // ids in display order, to append rather than redraw
    this.pending = new Map(); // reply id → node
  }

  clear() {
    this.list.replaceChildren();
    this.pendingList.replaceChildren();
    this.keys = [];
    this.pending.clear();
  }

  /** Draw the context's timeline; returns true when only new entries were added at the end. */
  set(ctx, names) {
    const conv = ctx.conversation;
    const entries = [
      ...ctx.timeline.map((i) => ({ key: "i:" + i.id, at: i.occurred_at, node: () => this.message(i, ctx, conv) })),
      ...ctx.notes.map((n) => ({ key: "n:" + n.id, at: n.created_at, node: () => this.note(n, names) })),
    ].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
    const keys = entries.map((e) => e.key);
    const appendOnly = this.keys.length > 0 && this.keys.every((k, n) => keys[n] === k);
    if (appendOnly) {
      for (const entry of entries.slice(this.keys.length)) this.list.append(entry.node());
    } else {
      this.list.replaceChildren(...entries.map((e) => e.node()));
    }
    this.keys = keys;
    // replies that are on the timeline now are no longer pending
    for (const item of ctx.timeline) {
      for (const [replyId, node] of this.pending) {
        if (item.direction === "out" && (item.source_id || "").includes(replyId)) {
          node.remove();
          this.pending.delete(replyId);
        }
      }
    }
    return appendOnly;
  }

  message(item, ctx, conv) {
    const out = item.direction === "out";
    const customerName = (ctx.customer && ctx.customer.display_name) || item.display_name || t("timeline.customer");
    const other = conv && item.conversation_id && item.conversation_id !== conv.id;
    const time = when(item.occurred_at);
    const body = [];
    if (item.subject) body.push(text("div", item.subject, "subject"));
    if (item.html) {
      body.push(emailFrame(item.html));
      if (item.text) {
        body.push(h("details", { class: "plain" }, h("summary", { text: t("timeline.text") }), text("div", item.text, "text")));
      }
    } else if (item.text) {
      body.push(text("div", item.text, "text"));
    }
    if (item.call) body.push(text("div", callLine(item.call), "text call"));
    if (item.attachments && item.attachments.length) body.push(this.attachments(item.attachments, conv));
    return h("li", { class: `item ${out ? "out" : "in"}${other ? " other" : ""}`, dataset: { id: item.id, channel: item.channel } },
      h("div", { class: "meta" },
        channelIcon(item.channel),
        text("span", out ? t("timeline.agent") : customerName, "who"),
        other ? h("span", { class: "tag", text: t("timeline.otherConv") }) : null,
        h("time", { datetime: item.occurred_at, title: time.other || time.main },
          time.main, time.other ? h("span", { class: "greg", text: ` · ${time.other}` }) : null)),
      ...body);
  }

  note(note, names) {
    const time = when(note.created_at);
    const transfer = note.kind === "transfer";
    const target = note.to_agent ? names.get(note.to_agent) || note.to_agent : note.to_team;
    return h("li", { class: `item note${transfer ? " transfer" : ""}`, dataset: { id: note.id } },
      h("div", { class: "meta" },
        h("span", { class: "tag", text: transfer ? t("timeline.transfer") : t("timeline.note") }),
        text("span", note.author_name || "", "who"),
        transfer && target ? text("span", `→ ${target}`, "who") : null,
        h("time", { datetime: note.created_at }, time.main, time.other ? h("span", { class: "greg", text: ` · ${time.other}` }) : null)),
      note.text ? text("div", note.text, "text") : null);
  }

  attachments(list, conv) {
    return h("ul", { class: "attachments" }, list.map((att) => {
      const label = `${att.name || "attachment"} (${size(att.size)})`;
      if (att.omitted || !conv) {
        return h("li", {}, text("span", label), " ", h("span", { class: "sub", text: t("timeline.notStored") }));
      }
      const link = h("a", {
        href: "#",
        dir: "auto",
        text: label,
        on: {
          click: (event) => {
            event.preventDefault();
            download(`/api/v1/conversations/${encodeURIComponent(conv.id)}/attachments/${att.sha256}`, att.name)
              .catch((err) => this.onError(err));
          },
        },
      });
      return h("li", {}, link);
    }));
  }

  /** A reply just sent: shown below the timeline until its copy is recorded there. */
  addPending(replyId, body) {
    const node = h("li", { class: "item out pending", dataset: { reply: replyId } },
      h("div", { class: "meta" }, text("span", t("timeline.agent"), "who"), h("span", { class: "status", text: t("reply.sending") })),
      text("div", body, "text"));
    this.pending.set(replyId, node);
    this.pendingList.append(node);
  }

  replyStatus(replyId, status, error) {
    const node = this.pending.get(replyId);
    if (!node) return;
    const label = node.querySelector(".status");
    if (status === "failed") {
      node.classList.add("failed");
      label.textContent = t("reply.failed", { error: error || "?" });
    } else if (status === "retrying") {
      label.textContent = t("reply.retrying");
    }
  }
}

function emailFrame(html) {
  // sandbox="" before srcdoc: no scripts, no forms, no popups, no same-origin access
  const frame = h("iframe", { class: "email", sandbox: "", referrerpolicy: "no-referrer", title: t("timeline.html") });
  // the frame inherits the console's policy; this one narrows it further for mail: our
  // stylesheet only, no images at all (not even from this origin), nothing else
  const policy = `default-src 'none'; style-src ${location.origin}/console/email.css`;
  frame.srcdoc =
    '<!doctype html><html><head><meta charset="utf-8">' +
    `<meta http-equiv="Content-Security-Policy" content="${policy}">` +
    '<link rel="stylesheet" href="/console/email.css"></head><body dir="auto">' +
    html +
    "</body></html>";
  return h("div", { class: "email-wrap" }, frame);
}

function size(bytes) {
  if (!Number.isFinite(bytes)) return "?";
  if (bytes < 1024) return `${number(bytes)} B`;
  if (bytes < 1024 * 1024) return `${number(Math.round(bytes / 102.4) / 10)} KB`;
  return `${number(Math.round(bytes / 104857.6) / 10)} MB`;
}

function callLine(call) {
  const secs = Math.round(call.duration || 0);
  const mm = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
  return `☎ ${mm}${call.disposition ? " · " + call.disposition : ""}`;
}
