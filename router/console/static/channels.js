import { h } from "./dom.js";
import { t } from "./i18n.js";

const KNOWN = new Set(["email", "sms", "telegram", "webchat", "call", "api"]);

/** The channel's icon, named for screen readers and on hover. */
export function channelIcon(channel, cls = "chan") {
  const name = KNOWN.has(channel) ? channel : "api";
  const label = t(`channel.${name}`);
  return h("img", { class: cls, src: `/console/icons/${name}.svg`, alt: label, title: label, width: 18, height: 18 });
}

export function setChannelIcon(img, channel) {
  const name = KNOWN.has(channel) ? channel : "api";
  img.src = `/console/icons/${name}.svg`;
  img.alt = img.title = t(`channel.${name}`);
}
