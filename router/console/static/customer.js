// The customer panel: name, every identifier, earlier conversations and how they ended, open
// signals, and merge suggestions (supervisors decide them; agents see them).

import { channelIcon } from "./channels.js";
import { h, text } from "./dom.js";
import { t, when } from "./i18n.js";

export function renderCustomer(root, ctx, { canDecide, decide, decided = new Map() }) {
  const c = ctx.customer || {};
  const section = (title, ...content) => h("section", {}, h("h3", { text: title }), ...content);
  const none = () => h("p", { class: "sub", text: t("customer.none") });
  const identifiers = (c.identifiers || []).map((id) => {
    const [kind, ...rest] = id.split(":");
    return h("li", {}, h("span", { class: "kind", text: t(`kind.${kind}`) }), " ", h("bdi", { dir: "ltr", text: rest.join(":") }));
  });
  const earlier = (ctx.earlier_conversations || []).map((e) => {
    const opened = when(e.opened_at);
    const outcome = t(`state.${e.state}`) + (e.resolved_at ? ` · ${when(e.resolved_at).main}` : "");
    return h("li", {},
      channelIcon(e.channel),
      h("time", { datetime: e.opened_at || "", text: opened.main }),
      h("div", { class: "sub" }, outcome, e.agent_name ? text("span", " · " + t("customer.by", { name: e.agent_name })) : null));
  });
  const signals = (ctx.signals || []).map((s) =>
    h("li", { class: `signal ${s.severity || ""}` }, h("b", { text: s.kind || "" }), " ", text("span", s.detail || "")));
  // a suggestion decided here stays in the panel with its outcome (the context no longer
  // lists it once decided), so the decision does not vanish on the next refresh
  const open = (ctx.merge_suggestions || []).filter((s) => !decided.has(s.id));
  const shown = [...open.map((s) => [s, null]), ...[...decided.values()].map((d) => [d.suggestion, d.confirm])];
  const suggestions = shown.map(([s, outcome]) => {
    const others = (s.customers || []).filter((id) => id !== c.id);
    const status = h("p", { class: "sub", role: "status" });
    let buttons = null;
    if (outcome !== null) {
      status.textContent = t(outcome ? "customer.merged" : "customer.rejected");
    } else if (canDecide) {
      buttons = h("div", { class: "row" },
        h("button", { type: "button", class: "primary", text: t("customer.merge"),
          on: { click: (e) => decide(s, true, e.currentTarget.parentNode, status) } }),
        h("button", { type: "button", text: t("customer.reject"),
          on: { click: (e) => decide(s, false, e.currentTarget.parentNode, status) } }));
    } else {
      buttons = h("p", { class: "sub", text: t("customer.supervisorOnly") });
    }
    return h("li", { class: "suggestion", dataset: { suggestion: s.id, decided: outcome === null ? "" : String(outcome) } },
      h("bdi", { dir: "ltr", class: "ident", text: s.identifier || "" }),
      h("div", { class: "sub", text: t(`customer.reason.${s.reason}`) }),
      others.map((id) => h("div", { class: "sub" }, t("customer.other", { id: id.slice(0, 8) }))),
      buttons,
      status);
  });
  const parts = [
    h("h2", { class: "customer-name" }, text("span", c.display_name || t("customer.noName"))),
    c.segment ? h("p", { class: "sub" }, t("customer.segment") + ": ", text("span", c.segment)) : null,
    section(t("customer.identifiers"), identifiers.length ? h("ul", { class: "idents" }, identifiers) : none()),
    section(t("customer.suggestions"), suggestions.length ? h("ul", {}, suggestions) : none()),
    section(t("customer.signals"), signals.length ? h("ul", {}, signals) : none()),
    section(t("customer.earlier"), earlier.length ? h("ul", { class: "earlier" }, earlier) : none()),
  ];
  root.replaceChildren(...parts.filter(Boolean));
}
