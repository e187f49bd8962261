// Offer pop-ups: who, which channel, the first words, and how long is left to accept (the
// offer's own timeout, measured on the server's clock). The first offer answers the keys.

import { clock } from "./api.js";
import { channelIcon } from "./channels.js";
import { h, text } from "./dom.js";
import { number, t } from "./i18n.js";

export class Offers {
  constructor(root, { accept, decline, names, changed }) {
    this.root = root;
    this.changed = changed || (() => {});
    this.acceptFn = accept;
    this.declineFn = decline;
    this.names = names; // () => Map agent id → name
    this.items = new Map();
    setInterval(() => this.tick(), 250);
  }

  get size() {
    return this.items.size;
  }

  show(offer) {
    if (!offer || !offer.id || this.items.has(offer.id)) return;
    const created = Date.parse(offer.created_at);
    const expires = Date.parse(offer.expires_at);
    const total = Math.max(1000, expires - created || 30_000);
    const customer = (offer.customer && offer.customer.display_name) || t("customer.noName");
    const bar = h("progress", { max: total, value: total });
    const left = h("span", { class: "left" });
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const acceptBtn = h("button", { type: "button", class: "primary accept", on: { click: () => this.accept(offer.id) } },
      t("offer.accept"), " ", h("kbd", { text: "Enter" }));
    const declineBtn = h("button", { type: "button", class: "decline", on: { click: () => this.decline(offer.id) } },
      t("offer.decline"), " ", h("kbd", { text: "D" }));
    const transfer = offer.transfer
      ? h("p", { class: "transfer" },
          t("offer.transfer", { who: this.names().get(offer.transfer.by) || offer.transfer.by || "—" }),
          offer.transfer.note ? text("span", `: ${offer.transfer.note}`) : null)
      : null;
    const node = h("section", { class: "offer card", role: "alertdialog", "aria-label": t("offer.title"), dataset: { offer: offer.id } },
      h("header", {},
        channelIcon(offer.channel),
        h("span", { class: "offer-kind", text: t("offer.title") }),
        offer.priority ? h("span", { class: "badge", text: t("offer.priority", { p: number(offer.priority) }) }) : null),
      text("strong", customer, "offer-name"),
      text("p", offer.preview || "", "preview"),
      transfer,
      h("div", { class: "countdown" }, bar, left),
      error,
      h("div", { class: "row" }, acceptBtn, declineBtn));
    this.items.set(offer.id, { offer, node, bar, left, error, total, expires, busy: false });
    this.root.append(node);
    this.tick();
    this.changed();
  }

  remove(id) {
    const item = this.items.get(id);
    if (!item) return;
    item.node.remove();
    this.items.delete(id);
    this.changed();
  }

  clear() {
    for (const id of [...this.items.keys()]) this.remove(id);
  }

  /** The offer the keys act on: the oldest one still open. */
  first() {
    for (const item of this.items.values()) if (!item.busy && !item.gone) return item.offer.id;
    return null;
  }

  tick() {
    const now = clock.now();
    for (const [id, item] of this.items) {
      const ms = Math.max(0, Math.min(item.total, item.expires - now));
      item.bar.value = ms;
      item.left.textContent = ms > 0 ? t("offer.left", { s: number(Math.ceil(ms / 1000)) }) : t("offer.gone");
      if (ms === 0 && !item.gone) {
        item.gone = true;
        item.node.classList.add("gone");
        setTimeout(() => this.remove(id), 1500);
      }
    }
  }

  async accept(id) {
    return this.act(id, this.acceptFn);
  }

  async decline(id) {
    return this.act(id, this.declineFn);
  }

  async act(id, fn) {
    const item = this.items.get(id);
    if (!item || item.busy || item.gone) return;
    item.busy = true;
    item.node.classList.add("busy");
    try {
      await fn(item.offer);
      this.remove(id);
    } catch (err) {
      item.busy = false;
      item.node.classList.remove("busy");
      item.error.textContent = t("error.generic", { message: err.message });
      item.error.hidden = false;
      if (err.status === 404 || err.status === 409) setTimeout(() => this.remove(id), 2500);
    }
  }
}
