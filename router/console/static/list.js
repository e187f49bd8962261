// The conversation lists: mine, my team's queue, and (supervisors) everyone.

import { channelIcon } from "./channels.js";
import { h, text } from "./dom.js";
import { number, short, t } from "./i18n.js";

export function renderList(root, conversations, { openId, names, me, open }) {
  if (!conversations.length) {
    root.replaceChildren(h("li", { class: "empty", text: t("lists.empty") }));
    return;
  }
  root.replaceChildren(...conversations.map((c) => {
    const assignee = c.assignee && c.assignee !== me ? names.get(c.assignee) || "" : "";
    return h("li", {},
      h("button", {
        type: "button",
        class: `conv-row${c.id === openId ? " open" : ""}`,
        "aria-current": c.id === openId ? "true" : null,
        dataset: { id: c.id },
        on: { click: () => open(c.id) },
      },
        channelIcon(c.channel),
        h("span", { class: "row-main" },
          text("span", c.customer_name || t("customer.noName"), "name"),
          h("span", { class: "sub" },
            h("span", { class: `state ${c.state}`, text: t(`state.${c.state}`) }),
            assignee ? text("span", " · " + assignee) : null)),
        h("span", { class: "row-side" },
          c.priority ? h("span", { class: "badge", text: number(c.priority) }) : null,
          h("time", { datetime: c.last_message_at || c.opened_at || "", text: short(c.last_message_at || c.opened_at) }))));
  }));
}
