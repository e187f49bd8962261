// Keyboard shortcuts. Letters are matched by key position (event.code), so they work with a
// Persian keyboard layout too; they act only when no text box has the focus.

import { h } from "./dom.js";
import { t } from "./i18n.js";

export const SHORTCUTS = [
  [["Enter", "A"], "help.offer"],
  [["D", "Esc"], "help.decline"],
  [["J", "K"], "help.next"],
  [["1", "2", "3"], "help.lists"],
  [["R"], "help.reply"],
  [["N"], "help.note"],
  [["Ctrl+Enter"], "help.send"],
  [["E"], "help.resolve"],
  [["T"], "help.transfer"],
  [["L"], "help.lang"],
  [["?"], "help.help"],
  [["Esc"], "help.escape"],
];

export function renderHelp(root) {
  root.replaceChildren(...SHORTCUTS.flatMap(([keys, help]) => [
    h("dt", {}, keys.flatMap((k, n) => [n ? " / " : null, h("kbd", { text: k })])),
    h("dd", { text: t(help) }),
  ]));
}

export function isEditable(node) {
  return !!node && (node.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(node.tagName));
}

const LETTERS = {
  KeyA: "accept",
  KeyD: "decline",
  KeyJ: "next",
  KeyK: "previous",
  Digit1: "listMine",
  Digit2: "listQueue",
  Digit3: "listAll",
  KeyR: "reply",
  KeyN: "note",
  KeyE: "resolve",
  KeyT: "transfer",
  KeyL: "language",
};

/** ``actions``: name → function returning true when it did something. */
export function installKeys(actions) {
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing) return;
    const target = event.target;
    const typing = isEditable(target);
    const dialog = document.querySelector("dialog[open]");
    let done = false;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      done = typing && actions.send(target);
    } else if (event.key === "Escape") {
      if (typing && !dialog) {
        target.blur();
        done = true;
      } else if (!dialog) {
        done = actions.decline();
      }
    } else if (typing || dialog || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    } else if (event.key === "Enter") {
      // a focused button or link keeps its own Enter
      if (!target.closest || !target.closest("button, a, summary")) done = actions.accept();
    } else if (event.key === "?" || event.key === "؟" || (event.code === "Slash" && event.shiftKey)) {
      done = actions.help();
    } else if (LETTERS[event.code] && !event.shiftKey) {
      done = actions[LETTERS[event.code]]();
    }
    if (done) event.preventDefault();
  });
}
