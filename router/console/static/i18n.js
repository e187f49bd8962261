// Persian and English strings, the page direction, and dates: Persian users see the Jalali
// (solar hijri) date with the Gregorian one beside it; English users the Gregorian date.

const STRINGS = {
  en: {
    "app.title": "omnihub agent console",
    "lang.other": "فارسی",
    "login.title": "Sign in",
    "login.email": "Email",
    "login.password": "Password",
    "login.submit": "Sign in",
    "login.busy": "Signing in…",
    "login.failed": "Wrong email or password.",
    "login.expired": "Your session ended. Sign in again.",
    "login.network": "Cannot reach the server. Check the connection and try again.",
    logout: "Sign out",
    help: "Keyboard shortcuts",
    "presence.label": "My status",
    "presence.online": "Online",
    "presence.away": "Away",
    "presence.offline": "Offline",
    "conn.open": "Live",
    "conn.connecting": "Connecting…",
    "conn.lost": "Connection lost. Retrying in {s} s…",
    "conn.back": "Connected again.",
    "net.error": "Network problem: {message}",
    "lists.mine": "Mine",
    "lists.queue": "Team queue",
    "lists.all": "Everyone",
    "lists.empty": "Nothing here.",
    "conv.empty": "Pick a conversation from the list, or wait for an offer.",
    "conv.loading": "Loading…",
    "conv.gone": "This conversation is no longer yours to see.",
    "conv.with": "with {name}",
    "conv.unassigned": "not assigned",
    "state.open": "Waiting",
    "state.assigned": "Assigned",
    "state.pending": "Pending",
    "state.resolved": "Resolved",
    "channel.email": "Email",
    "channel.sms": "SMS",
    "channel.telegram": "Telegram",
    "channel.webchat": "Web chat",
    "channel.call": "Call",
    "channel.api": "API",
    "offer.title": "New conversation",
    "offer.transfer": "Transferred by {who}",
    "offer.accept": "Accept",
    "offer.decline": "Decline",
    "offer.left": "{s} s left",
    "offer.gone": "Offer expired",
    "offer.priority": "Priority {p}",
    "action.resolve": "Resolve",
    "action.reopen": "Reopen",
    "action.transfer": "Transfer",
    "composer.reply": "Reply",
    "composer.note": "Internal note",
    "composer.replyHint": "Reply by {channel}… (Ctrl+Enter sends)",
    "composer.noteHint": "Note for colleagues; the customer never sees it (Ctrl+Enter saves)",
    "composer.send": "Send",
    "composer.save": "Save note",
    "reply.sending": "Sending…",
    "reply.retrying": "Delivery is being retried…",
    "reply.failed": "Not delivered: {error}",
    "timeline.earlier": "Load earlier messages",
    "timeline.customer": "Customer",
    "timeline.agent": "Agent",
    "timeline.note": "Internal note",
    "timeline.transfer": "Transferred",
    "timeline.html": "Formatted email (sanitised)",
    "timeline.text": "Plain text",
    "timeline.notStored": "kept only in the original message",
    "timeline.otherConv": "other conversation",
    typing: "typing…",
    "customer.title": "Customer",
    "role.agent": "agent",
    "role.supervisor": "supervisor",
    "role.admin": "admin",
    "kind.phone": "phone",
    "kind.email": "email",
    "kind.telegram": "Telegram",
    "kind.webchat": "web chat",
    "kind.api": "API",
    "customer.noName": "(no name)",
    "customer.identifiers": "Identifiers",
    "customer.segment": "Segment",
    "customer.earlier": "Earlier conversations",
    "customer.signals": "Signals",
    "customer.suggestions": "Possible same person",
    "customer.merge": "Same person: merge",
    "customer.reject": "Not the same",
    "customer.supervisorOnly": "A supervisor can confirm or reject this.",
    "customer.none": "None",
    "customer.by": "by {name}",
    "customer.merged": "Merged.",
    "customer.rejected": "Marked as different people.",
    "customer.reason.claimed": "the customer typed an identifier another customer has",
    "customer.reason.cap": "shared by many customers, so not merged automatically",
    "customer.reason.separated": "these two were separated once before",
    "customer.other": "other customer {id}",
    "transfer.title": "Transfer the conversation",
    "transfer.toAgent": "To an agent",
    "transfer.toTeam": "To a team's queue",
    "transfer.note": "Note for whoever takes it",
    "transfer.submit": "Transfer",
    "transfer.cancel": "Cancel",
    "transfer.pick": "Choose where it goes.",
    "toast.resolved": "Conversation resolved.",
    "toast.transferred": "Conversation transferred.",
    "toast.transferredAway": "A conversation of yours was transferred to someone else.",
    "toast.resolvedBy": "A supervisor resolved a conversation of yours.",
    "toast.noteSaved": "Note saved.",
    "toast.sla": "SLA {severity}: {kind}",
    "toast.offerMissed": "The offer was passed on ({why}).",
    "error.generic": "That did not work: {message}",
    "help.title": "Keyboard shortcuts",
    "help.close": "Close",
    "help.offer": "Accept the offer",
    "help.decline": "Decline the offer",
    "help.next": "Next / previous conversation",
    "help.lists": "Mine / team queue / everyone",
    "help.reply": "Write a reply",
    "help.note": "Write an internal note",
    "help.send": "Send the reply or save the note",
    "help.resolve": "Resolve the conversation",
    "help.transfer": "Transfer the conversation",
    "help.lang": "Switch language (فارسی / English)",
    "help.help": "Show this help",
    "help.escape": "Leave the text box, close a dialog",
    "help.notTyping": "Letter keys work when you are not typing in a text box.",
  },
  fa: {
    "app.title": "میز کار پشتیبانی omnihub",
    "lang.other": "English",
    "login.title": "ورود",
    "login.email": "ایمیل",
    "login.password": "گذرواژه",
    "login.submit": "ورود",
    "login.busy": "در حال ورود…",
    "login.failed": "ایمیل یا گذرواژه نادرست است.",
    "login.expired": "نشست شما به پایان رسید. دوباره وارد شوید.",
    "login.network": "به سرور دسترسی نیست. اتصال را بررسی کنید و دوباره تلاش کنید.",
    logout: "خروج",
    help: "میان‌برهای صفحه‌کلید",
    "presence.label": "وضعیت من",
    "presence.online": "آنلاین",
    "presence.away": "دور از میز",
    "presence.offline": "آفلاین",
    "conn.open": "متصل",
    "conn.connecting": "در حال اتصال…",
    "conn.lost": "اتصال قطع شد. تلاش دوباره تا {s} ثانیهٔ دیگر…",
    "conn.back": "اتصال دوباره برقرار شد.",
    "net.error": "مشکل شبکه: {message}",
    "lists.mine": "گفتگوهای من",
    "lists.queue": "صف تیم",
    "lists.all": "همه",
    "lists.empty": "موردی نیست.",
    "conv.empty": "گفتگویی را از فهرست انتخاب کنید یا منتظر گفتگوی تازه بمانید.",
    "conv.loading": "در حال بارگذاری…",
    "conv.gone": "این گفتگو دیگر در دسترس شما نیست.",
    "conv.with": "با {name}",
    "conv.unassigned": "بدون پشتیبان",
    "state.open": "در انتظار",
    "state.assigned": "در دست پشتیبان",
    "state.pending": "معلق",
    "state.resolved": "بسته‌شده",
    "channel.email": "ایمیل",
    "channel.sms": "پیامک",
    "channel.telegram": "تلگرام",
    "channel.webchat": "گفتگوی وب",
    "channel.call": "تماس تلفنی",
    "channel.api": "API",
    "offer.title": "گفتگوی تازه",
    "offer.transfer": "انتقال از طرف {who}",
    "offer.accept": "پذیرفتن",
    "offer.decline": "رد کردن",
    "offer.left": "{s} ثانیه مانده",
    "offer.gone": "مهلت پذیرش تمام شد",
    "offer.priority": "اولویت {p}",
    "action.resolve": "بستن گفتگو",
    "action.reopen": "بازگشایی",
    "action.transfer": "انتقال",
    "composer.reply": "پاسخ",
    "composer.note": "یادداشت داخلی",
    "composer.replyHint": "پاسخ از راه {channel}؛ برای ارسال: Ctrl+Enter",
    "composer.noteHint": "یادداشت برای همکاران (مشتری نمی‌بیند)؛ برای ذخیره: Ctrl+Enter",
    "composer.send": "ارسال",
    "composer.save": "ذخیرهٔ یادداشت",
    "reply.sending": "در حال ارسال…",
    "reply.retrying": "ارسال دوباره امتحان می‌شود…",
    "reply.failed": "ارسال نشد: {error}",
    "timeline.earlier": "پیام‌های قدیمی‌تر",
    "timeline.customer": "مشتری",
    "timeline.agent": "پشتیبان",
    "timeline.note": "یادداشت داخلی",
    "timeline.transfer": "انتقال",
    "timeline.html": "نسخهٔ قالب‌دار ایمیل (پاک‌سازی‌شده)",
    "timeline.text": "متن ساده",
    "timeline.notStored": "فقط در پیام اصلی نگهداری می‌شود",
    "timeline.otherConv": "گفتگوی دیگر",
    typing: "در حال نوشتن…",
    "customer.title": "مشتری",
    "role.agent": "پشتیبان",
    "role.supervisor": "سرپرست",
    "role.admin": "مدیر",
    "kind.phone": "تلفن",
    "kind.email": "ایمیل",
    "kind.telegram": "تلگرام",
    "kind.webchat": "گفتگوی وب",
    "kind.api": "API",
    "customer.noName": "(بی‌نام)",
    "customer.identifiers": "شناسه‌ها",
    "customer.segment": "گروه",
    "customer.earlier": "گفتگوهای پیشین",
    "customer.signals": "هشدارها",
    "customer.suggestions": "شاید همان شخص",
    "customer.merge": "یک نفرند: ادغام",
    "customer.reject": "یکی نیستند",
    "customer.supervisorOnly": "تأیید یا رد این مورد با سرپرست است.",
    "customer.none": "ندارد",
    "customer.by": "پشتیبان: {name}",
    "customer.merged": "ادغام شد.",
    "customer.rejected": "دو شخص جدا ثبت شد.",
    "customer.reason.claimed": "مشتری شناسه‌ای وارد کرده که از آنِ مشتری دیگری است",
    "customer.reason.cap": "میان چند مشتری مشترک است و خودکار ادغام نشد",
    "customer.reason.separated": "این دو پیش‌تر از هم جدا شده‌اند",
    "customer.other": "مشتری دیگر {id}",
    "transfer.title": "انتقال گفتگو",
    "transfer.toAgent": "به یک پشتیبان",
    "transfer.toTeam": "به صف یک تیم",
    "transfer.note": "یادداشت برای پشتیبان بعدی",
    "transfer.submit": "انتقال",
    "transfer.cancel": "انصراف",
    "transfer.pick": "مقصد را انتخاب کنید.",
    "toast.resolved": "گفتگو بسته شد.",
    "toast.transferred": "گفتگو منتقل شد.",
    "toast.transferredAway": "یکی از گفتگوهای شما به شخص دیگری منتقل شد.",
    "toast.resolvedBy": "سرپرست یکی از گفتگوهای شما را بست.",
    "toast.noteSaved": "یادداشت ذخیره شد.",
    "toast.sla": "هشدار زمان پاسخ ({severity}): {kind}",
    "toast.offerMissed": "گفتگو به نفر بعدی رفت ({why}).",
    "error.generic": "انجام نشد: {message}",
    "help.title": "میان‌برهای صفحه‌کلید",
    "help.close": "بستن",
    "help.offer": "پذیرفتن گفتگوی پیشنهادی",
    "help.decline": "رد کردن گفتگوی پیشنهادی",
    "help.next": "گفتگوی بعدی / قبلی",
    "help.lists": "گفتگوهای من / صف تیم / همه",
    "help.reply": "نوشتن پاسخ",
    "help.note": "نوشتن یادداشت داخلی",
    "help.send": "ارسال پاسخ یا ذخیرهٔ یادداشت",
    "help.resolve": "بستن گفتگو",
    "help.transfer": "انتقال گفتگو",
    "help.lang": "تغییر زبان (فارسی / English)",
    "help.help": "نمایش این راهنما",
    "help.escape": "خروج از کادر متن، بستن پنجره",
    "help.notTyping": "کلیدهای حرفی وقتی کار می‌کنند که در کادر متن نمی‌نویسید (با هر چیدمان صفحه‌کلید).",
  },
};

const KEY = "omnihub.lang";
export let lang = pickLanguage();

function pickLanguage() {
  const saved = localStorage.getItem(KEY);
  if (saved === "fa" || saved === "en") return saved;
  const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language];
  return wanted.some((l) => /^fa\b/i.test(l || "")) ? "fa" : "en";
}

export function t(key, vars = {}) {
  const s = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

/** Apply the language to the page: lang/dir and every [data-i18n] element's text. */
export function apply() {
  document.documentElement.lang = lang;
  document.documentElement.dir = lang === "fa" ? "rtl" : "ltr";
  document.title = t("app.title");
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-title]")) {
    node.title = t(node.dataset.i18nTitle);
    node.setAttribute("aria-label", node.title);
  }
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
}

export function setLang(value) {
  lang = value === "fa" ? "fa" : "en";
  localStorage.setItem(KEY, lang);
  formats.clear();
  apply();
}

const formats = new Map();
function fmt(locale, options) {
  const key = locale + JSON.stringify(options);
  if (!formats.has(key)) formats.set(key, new Intl.DateTimeFormat(locale, options));
  return formats.get(key);
}

export function number(n) {
  return new Intl.NumberFormat(lang === "fa" ? "fa-IR" : "en-GB").format(n);
}

/** {main, other}: Jalali and Gregorian for Persian; Gregorian for English. */
export function when(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return { main: "", other: "" };
  if (lang === "fa") {
    return {
      main: fmt("fa-IR-u-ca-persian", { dateStyle: "medium", timeStyle: "short" }).format(date),
      other: fmt("fa-IR-u-ca-gregory", { dateStyle: "medium" }).format(date),
    };
  }
  return { main: fmt("en-GB", { dateStyle: "medium", timeStyle: "short" }).format(date), other: "" };
}

/** Short form for lists: the time today, else the date. */
export function short(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const locale = lang === "fa" ? "fa-IR-u-ca-persian" : "en-GB";
  const today = new Date().toDateString() === date.toDateString();
  return fmt(locale, today ? { timeStyle: "short" } : { month: "short", day: "numeric" }).format(date);
}
