// core-dict's console: sign in, keys, lookups, claims, sync status.
import "./style.css";
import { Code } from "@connectrpc/connect";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  AccountType,
  ClaimStatus,
  ClaimType,
  EntryStatus,
  KeyType,
  OwnerType,
  Reason,
  SyncResult,
  type Account,
  type Claim,
  type Entry,
} from "./gen/dict/v1/dict_pb";
import { currentSession, dict, endToEndId, failure, parseToken, signIn, signOut, uuid, type Failure } from "./api";
import { append, clearFieldErrors, facts, field, h, input, select, showFieldErrors } from "./dom";

const app = document.getElementById("app")!;

// Timers of the screen on show; a new screen stops them.
let timers: number[] = [];
function every(ms: number, fn: () => void): void {
  timers.push(window.setInterval(fn, ms));
}
function stopTimers(): void {
  timers.forEach((t) => window.clearInterval(t));
  timers = [];
}

// ---- names ----

const keyTypes: [KeyType, string][] = [
  [KeyType.CPF, "CPF"],
  [KeyType.CNPJ, "CNPJ"],
  [KeyType.PHONE, "Phone"],
  [KeyType.EMAIL, "Email"],
  [KeyType.EVP, "Random (EVP)"],
];
const accountTypes: [AccountType, string][] = [
  [AccountType.CACC, "Checking (CACC)"],
  [AccountType.SVGS, "Savings (SVGS)"],
  [AccountType.SLRY, "Salary (SLRY)"],
  [AccountType.TRAN, "Payment (TRAN)"],
];
const reasonNames: Record<Reason, string> = {
  [Reason.UNSPECIFIED]: "Unspecified",
  [Reason.USER_REQUESTED]: "User requested",
  [Reason.ACCOUNT_CLOSURE]: "Account closure",
  [Reason.BRANCH_TRANSFER]: "Branch transfer",
  [Reason.RECONCILIATION]: "Reconciliation",
  [Reason.FRAUD]: "Fraud",
  [Reason.RFB_VALIDATION]: "Tax authority (RFB) validation",
  [Reason.DEFAULT_OPERATION]: "Default operation (deadline passed)",
};
const updateReasons = [Reason.USER_REQUESTED, Reason.BRANCH_TRANSFER, Reason.RECONCILIATION, Reason.RFB_VALIDATION];
const deleteReasons = [Reason.USER_REQUESTED, Reason.ACCOUNT_CLOSURE, Reason.RECONCILIATION, Reason.FRAUD, Reason.RFB_VALIDATION];

const keyTypeName = (t: KeyType) => KeyType[t] ?? String(t);
const accountTypeName = (t: AccountType) => AccountType[t] ?? String(t);
const entryStatusName = (s: EntryStatus) => EntryStatus[s] ?? String(s);
const claimStatusName = (s: ClaimStatus) => (s === ClaimStatus.UNSPECIFIED ? "NOT_CREATED" : (ClaimStatus[s] ?? String(s)));
const claimTypeName = (t: ClaimType) => ClaimType[t] ?? String(t);

function reasonOptions(reasons: Reason[]): [string, string][] {
  return reasons.map((r) => [String(r), reasonNames[r]]);
}
function enumOptions<T extends number>(list: [T, string][]): [string, string][] {
  return list.map(([v, l]) => [String(v), l]);
}

function badge(text: string, kind = ""): HTMLElement {
  return h("span", { class: "badge " + kind.toLowerCase() }, text.replace(/_/g, " "));
}

function when(ts?: Timestamp): string {
  if (!ts) {
    return "";
  }
  return timestampDate(ts).toLocaleString();
}

function accountText(a?: Account): string {
  if (!a) {
    return "";
  }
  return `${a.participant} · branch ${a.branch || "—"} · account ${a.number} · ${accountTypeName(a.type)}`;
}

/** "2d 03:04:05 left", or "passed 00:01:02 ago", counting to deadline. */
function countdown(deadline: Date, now = Date.now()): string {
  let ms = deadline.getTime() - now;
  const past = ms < 0;
  ms = Math.abs(ms);
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const hh = String(Math.floor((s % 86400) / 3600)).padStart(2, "0");
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  const span = (d > 0 ? `${d}d ` : "") + `${hh}:${mm}:${ss}`;
  return past ? `ended ${span} ago` : `${span} left`;
}

function liveCountdown(ts?: Timestamp): HTMLElement | null {
  if (!ts) {
    return null;
  }
  const deadline = timestampDate(ts);
  const out = h("span", { class: "countdown", "data-deadline": deadline.toISOString() });
  const tick = () => {
    out.textContent = `${deadline.toLocaleString()} (${countdown(deadline)})`;
  };
  tick();
  every(1000, tick);
  return out;
}

// ---- messages ----

function alertBox(f: Failure): HTMLElement {
  return h(
    "div",
    { class: "alert error", role: "alert" },
    h("p", { class: "alert-message" }, f.message),
    f.reason ? h("p", { class: "alert-reason" }, f.reason) : null,
  );
}

function notice(text: string): HTMLElement {
  return h("div", { class: "alert ok", role: "status" }, text);
}

/** Shows a failure in box; the fields the form has go under their inputs. */
function showFailure(box: HTMLElement, err: unknown, form?: HTMLElement): Failure {
  const f = failure(err);
  box.replaceChildren();
  if (f.code === Code.Unauthenticated) {
    box.append(alertBox(f), h("p", {}, h("a", { href: "#/signin", onclick: () => signOut() }, "Sign in again")));
    return f;
  }
  let rest = f.fields;
  if (form) {
    rest = showFieldErrors(form, f.fields);
  }
  const box2 = alertBox(f);
  if (rest.size > 0 && !(rest.size === 1 && f.message.includes([...rest.values()][0]))) {
    const ul = h("ul", { class: "violations" });
    for (const [name, msg] of rest) {
      ul.append(h("li", {}, name ? `${name}: ${msg}` : msg));
    }
    box2.append(ul);
  }
  box.append(box2);
  return f;
}

function busy(btn: HTMLButtonElement, on: boolean): void {
  btn.disabled = on;
  btn.setAttribute("aria-busy", String(on));
}

// ---- layout ----

const screens: [string, string][] = [
  ["#/keys", "Keys"],
  ["#/lookup", "Lookup"],
  ["#/claims", "Claims"],
  ["#/sync", "Sync"],
];

function layout(title: string, ...body: (Node | null)[]): HTMLElement {
  const s = currentSession()!;
  const here = location.hash.split("/").slice(0, 2).join("/");
  const nav = h("nav", { "aria-label": "Screens" });
  for (const [href, label] of screens) {
    nav.append(h("a", { href, "aria-current": here === href ? "page" : undefined }, label));
  }
  const main = h("main", { id: "main" }, h("h1", {}, title));
  append(main, ...body);
  return h(
    "div",
    { class: "shell" },
    h(
      "header",
      {},
      h("a", { class: "brand", href: "#/keys" }, "core-dict"),
      nav,
      h(
        "div",
        { class: "who" },
        h("span", { class: "participant", title: s.subject }, `ISPB ${s.participant}`),
        h(
          "button",
          {
            type: "button",
            class: "link",
            onclick: () => {
              signOut();
              location.hash = "#/signin";
            },
          },
          "Sign out",
        ),
      ),
    ),
    main,
  );
}

// ---- sign in ----

function signInScreen(): HTMLElement {
  const token = h("textarea", { name: "token", rows: 5, required: true, autocomplete: "off", spellcheck: "false" });
  const box = h("div", { class: "messages" });
  const btn = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    {
      class: "card narrow",
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        box.replaceChildren();
        const s = parseToken(token.value);
        if (!s) {
          box.append(h("div", { class: "alert error", role: "alert" }, "This is not a token: paste the JWT the identity provider (or `core-dict token`) issued."));
          return;
        }
        busy(btn, true);
        signIn(s);
        try {
          await dict.getSyncStatus({});
        } catch (err) {
          const f = failure(err);
          if (f.code === Code.Unauthenticated) {
            signOut();
            showFailure(box, err);
            busy(btn, false);
            return;
          }
        }
        busy(btn, false);
        location.hash = "#/keys";
      },
    },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste a bearer token for your participant. It stays in this tab only."),
    field("Token", token),
    box,
    h("div", { class: "actions" }, btn),
  );
  return h("main", { class: "signin", id: "main" }, form);
}

// ---- keys ----

function entryCard(e: Entry, onChange: () => void): HTMLElement {
  const box = h("div", { class: "messages" });
  const card = h(
    "article",
    { class: "card entry", "data-key": e.key },
    h(
      "div",
      { class: "card-head" },
      h("h2", { class: "key" }, e.key),
      badge(keyTypeName(e.keyType)),
      badge(entryStatusName(e.status), entryStatusName(e.status)),
      e.pendingOperation ? badge("waiting: " + e.pendingOperation, "pending") : null,
    ),
    facts([
      ["Account", accountText(e.account)],
      ["Owner", e.owner ? `${e.owner.name}${e.owner.tradeName ? " (" + e.owner.tradeName + ")" : ""} · ${e.owner.taxId}` : ""],
      ["Owned since", when(e.keyOwnedSince)],
      ["Updated", when(e.updatedAt)],
      ["Refused", e.failureReason ? `${e.failureReason}: ${e.failureMessage}` : ""],
    ]),
    box,
  );
  if (e.status === EntryStatus.ACTIVE && !e.pendingOperation) {
    const reason = select("reason", reasonOptions(deleteReasons));
    const del = h("button", { type: "submit", class: "danger" }, "Delete key");
    const delForm = h(
      "form",
      {
        class: "inline",
        hidden: true,
        onsubmit: async (ev: Event) => {
          ev.preventDefault();
          busy(del, true);
          try {
            await dict.deleteKey({ requestId: uuid(), key: e.key, keyType: e.keyType, reason: Number(reason.value) as Reason });
            box.replaceChildren(notice(`Delete of ${e.key} sent to the directory.`));
            onChange();
          } catch (err) {
            showFailure(box, err, delForm);
          }
          busy(del, false);
        },
      },
      field("Reason for the delete", reason),
      h("div", { class: "actions" }, del),
    );
    card.append(
      h(
        "div",
        { class: "actions" },
        h("a", { class: "button secondary", href: "#/keys/edit/" + encodeURIComponent(e.key) }, "Edit"),
        h("button", { type: "button", class: "secondary", onclick: () => (delForm.hidden = !delForm.hidden) }, "Delete…"),
      ),
      delForm,
    );
  }
  return card;
}

function keysScreen(): HTMLElement {
  const params = new URLSearchParams(location.hash.split("?")[1] ?? "");
  const ownerTaxId = input("owner_tax_id", { inputmode: "numeric", value: params.get("owner") ?? "" });
  const branch = input("account.branch", { inputmode: "numeric", maxlength: 4 });
  const number = input("account.number", { inputmode: "numeric", maxlength: 20 });
  const accType = select("account.type", [["", "Any"], ...enumOptions(accountTypes)]);
  const pageSize = select("page_size", [["10", "10"], ["50", "50"], ["100", "100"]], "10");
  const list = h("div", { class: "list", "aria-live": "polite" });
  const box = h("div", { class: "messages" });
  const pages = pager(() => void load());

  const filters = h(
    "form",
    {
      class: "card filters",
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        pages.restart();
        void load();
      },
    },
    h("h2", {}, "Filter"),
    h(
      "div",
      { class: "grid" },
      field("Owner CPF or CNPJ", ownerTaxId),
      field("Branch", branch),
      field("Account number", number),
      field("Account type", accType),
      field("Page size", pageSize),
    ),
    h("p", { class: "hint" }, "Filter by owner or by account (number and type), not both; no filter lists every key."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Search")),
  );

  async function load(quiet = false): Promise<void> {
    if (!quiet) {
      box.replaceChildren();
    }
    clearFieldErrors(filters);
    const byAccount = number.value.trim() !== "" || branch.value.trim() !== "" || accType.value !== "";
    try {
      const res = await dict.listKeys({
        ownerTaxId: ownerTaxId.value.trim(),
        account: byAccount
          ? { branch: branch.value.trim(), number: number.value.trim(), type: Number(accType.value || 0) as AccountType }
          : undefined,
        pageSize: Number(pageSize.value),
        pageToken: pages.token(),
      });
      list.replaceChildren(
        ...(res.entries.length === 0
          ? [h("p", { class: "empty" }, "No keys match.")]
          : res.entries.map((e) => entryCard(e, () => void load(true)))),
      );
      pages.shown(res.nextPageToken);
    } catch (err) {
      showFailure(box, err, filters);
    }
  }
  // Keys waiting for the directory change on their own: refresh while any is.
  every(1500, () => {
    if (list.querySelector(".badge.pending")) {
      void load(true);
    }
  });
  void load();
  const flash = sessionStorage.getItem("flash");
  sessionStorage.removeItem("flash");
  return layout(
    "Keys",
    flash ? notice(flash) : null,
    h("div", { class: "actions" }, h("a", { class: "button", href: "#/keys/new" }, "New key")),
    filters,
    box,
    list,
    pages.el,
  );
}

function ownerFields(prefix: string, o?: { type?: OwnerType; taxId?: string; name?: string; tradeName?: string }, editable = true) {
  const type = select(prefix + ".type", [
    [String(OwnerType.NATURAL_PERSON), "Natural person (CPF)"],
    [String(OwnerType.LEGAL_PERSON), "Legal person (CNPJ)"],
  ], String(o?.type ?? OwnerType.NATURAL_PERSON));
  const taxId = input(prefix + ".tax_id", { inputmode: "numeric", maxlength: 18, value: o?.taxId ?? "" });
  const name = input(prefix + ".name", { maxlength: 150, value: o?.name ?? "" });
  const tradeName = input(prefix + ".trade_name", { maxlength: 100, value: o?.tradeName ?? "" });
  if (!editable) {
    type.disabled = true;
    taxId.readOnly = true;
  }
  return { type, taxId, name, tradeName };
}

function accountFields(prefix: string, a?: Account) {
  const branch = input(prefix + ".branch", { inputmode: "numeric", maxlength: 4, value: a?.branch ?? "0001" });
  const number = input(prefix + ".number", { inputmode: "numeric", maxlength: 20, value: a?.number ?? "" });
  const type = select(prefix + ".type", enumOptions(accountTypes), String(a?.type ?? AccountType.CACC));
  const opened = input(prefix + ".opened_at", {
    type: "date",
    value: a?.openedAt ? timestampDate(a.openedAt).toISOString().slice(0, 10) : "",
  });
  return { branch, number, type, opened };
}

function accountValue(f: ReturnType<typeof accountFields>) {
  const s = currentSession()!;
  return {
    participant: s.participant,
    branch: f.branch.value.trim(),
    number: f.number.value.trim(),
    type: Number(f.type.value) as AccountType,
    openedAt: f.opened.value ? timestampFromDate(new Date(f.opened.value + "T00:00:00Z")) : undefined,
  };
}

function newKeyScreen(): HTMLElement {
  const keyType = select("key_type", enumOptions(keyTypes), String(KeyType.CPF));
  const key = input("key", { maxlength: 77 });
  const keyField = field("Key", key, "CPF or CNPJ digits, +5561912345678, or an email; none for a random key.");
  const acc = accountFields("account");
  const own = ownerFields("owner");
  const box = h("div", { class: "messages" });
  const btn = h("button", { type: "submit" }, "Create key");
  const sync = () => {
    keyField.hidden = keyType.value === String(KeyType.EVP);
  };
  keyType.addEventListener("change", sync);
  const form: HTMLFormElement = h(
    "form",
    {
      class: "card",
      novalidate: true,
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        box.replaceChildren();
        clearFieldErrors(form);
        busy(btn, true);
        try {
          const res = await dict.createKey({
            requestId: uuid(),
            keyType: Number(keyType.value) as KeyType,
            key: keyType.value === String(KeyType.EVP) ? "" : key.value.trim(),
            account: accountValue(acc),
            owner: {
              type: Number(own.type.value) as OwnerType,
              taxId: own.taxId.value.trim(),
              name: own.name.value.trim(),
              tradeName: own.tradeName.value.trim(),
            },
          });
          const e = res.entry!;
          sessionStorage.setItem("flash", `Key ${e.key} created: ${entryStatusName(e.status)}${e.pendingOperation ? ", waiting for the directory" : ""}.`);
          location.hash = "#/keys";
        } catch (err) {
          showFailure(box, err, form);
        }
        busy(btn, false);
      },
    },
    h("fieldset", {}, h("legend", {}, "Key"), h("div", { class: "grid" }, field("Key type", keyType), keyField)),
    h(
      "fieldset",
      {},
      h("legend", {}, "Account"),
      h("div", { class: "grid" }, field("Branch", acc.branch), field("Account number", acc.number), field("Account type", acc.type), field("Opened on", acc.opened)),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Owner"),
      h("div", { class: "grid" }, field("Owner type", own.type), field("CPF or CNPJ", own.taxId), field("Name", own.name), field("Trade name", own.tradeName, "Legal persons only.")),
    ),
    box,
    h("div", { class: "actions" }, btn, h("a", { class: "button secondary", href: "#/keys" }, "Cancel")),
  );
  sync();
  return layout("New key", form);
}

function editKeyScreen(key: string): HTMLElement {
  const holder = h("div", {}, h("p", { class: "loading" }, "Loading…"));
  const box = h("div", { class: "messages" });
  void (async () => {
    try {
      const e = (await dict.getKey({ key })).entry!;
      const acc = accountFields("account", e.account);
      const own = ownerFields("owner", e.owner, false);
      const reason = select("reason", reasonOptions(updateReasons));
      const btn = h("button", { type: "submit" }, "Save");
      const form: HTMLFormElement = h(
        "form",
        {
          class: "card",
          novalidate: true,
          onsubmit: async (ev: Event) => {
            ev.preventDefault();
            box.replaceChildren();
            busy(btn, true);
            try {
              await dict.updateKey({
                requestId: uuid(),
                key: e.key,
                keyType: e.keyType,
                account: accountValue(acc),
                owner: { type: e.owner?.type, taxId: e.owner?.taxId, name: own.name.value.trim(), tradeName: own.tradeName.value.trim() },
                reason: Number(reason.value) as Reason,
              });
              sessionStorage.setItem("flash", `Update of ${e.key} sent to the directory.`);
              location.hash = "#/keys";
            } catch (err) {
              showFailure(box, err, form);
            }
            busy(btn, false);
          },
        },
        h("p", {}, h("strong", {}, e.key), " ", badge(keyTypeName(e.keyType)), " ", badge(entryStatusName(e.status), entryStatusName(e.status))),
        h(
          "fieldset",
          {},
          h("legend", {}, "Account"),
          h("div", { class: "grid" }, field("Branch", acc.branch), field("Account number", acc.number), field("Account type", acc.type), field("Opened on", acc.opened)),
        ),
        h(
          "fieldset",
          {},
          h("legend", {}, "Owner"),
          h("div", { class: "grid" }, field("CPF or CNPJ", own.taxId), field("Name", own.name), field("Trade name", own.tradeName)),
        ),
        field("Reason", reason),
        box,
        h("div", { class: "actions" }, btn, h("a", { class: "button secondary", href: "#/keys" }, "Cancel")),
      );
      holder.replaceChildren(form);
    } catch (err) {
      holder.replaceChildren(box);
      showFailure(box, err);
    }
  })();
  return layout("Edit key", holder);
}

// ---- lookup ----

function lookupScreen(): HTMLElement {
  const s = currentSession()!;
  const key = input("key", { maxlength: 77 });
  const payer = input("payer_id", { inputmode: "numeric", maxlength: 18 });
  const e2e = input("end_to_end_id", { maxlength: 32, value: endToEndId(s.participant) });
  const keyType = select("key_type", [["0", "Infer from the key"], ...enumOptions(keyTypes)]);
  const out = h("div", { class: "result", "aria-live": "polite" });
  const btn = h("button", { type: "submit" }, "Look up");
  const form: HTMLFormElement = h(
    "form",
    {
      class: "card",
      novalidate: true,
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        stopTimers();
        out.replaceChildren();
        clearFieldErrors(form);
        busy(btn, true);
        try {
          const res = await dict.lookupKey({
            key: key.value.trim(),
            payerId: payer.value.trim(),
            endToEndId: e2e.value.trim(),
            keyType: Number(keyType.value) as KeyType,
          });
          const pv = res.payerView;
          const e = res.entry;
          out.append(
            h(
              "article",
              { class: "card payer-view" },
              h("h2", {}, "What the payer sees"),
              facts([
                ["Key", pv?.key ?? ""],
                ["Name", pv?.name ?? ""],
                ["Trade name", pv?.tradeName ?? ""],
                ["CPF/CNPJ", pv?.taxIdMasked ?? ""],
                ["Institution", pv?.participantName ?? ""],
                ["Key type", e ? keyTypeName(e.keyType) : ""],
                ["Account", accountText(e?.account)],
                ["End-to-end id", e2e.value.trim()],
              ]),
            ),
          );
        } catch (err) {
          const f = showFailure(out, err, form);
          if (f.code === Code.ResourceExhausted) {
            const retryAt = new Date(Date.now() + (f.retryAfterMs ?? 0));
            const left = h("strong", { class: "retry-in" });
            const tick = () => {
              const ms = retryAt.getTime() - Date.now();
              left.textContent = ms > 0 ? countdown(retryAt) : "now";
              btn.disabled = ms > 0;
            };
            tick();
            every(500, tick);
            out.append(
              h(
                "div",
                { class: "card bucket", role: "status" },
                h("h2", {}, "Lookups limited"),
                facts([
                  ["Bucket", "empty: no token left for this lookup (anti-scanning)"],
                  ["Retry at", f.retryAfterMs !== undefined ? retryAt.toLocaleTimeString() : "not given"],
                  ["Retry in", left],
                ]),
              ),
            );
          }
        }
        if (!btn.disabled || !out.querySelector(".retry-in")) {
          busy(btn, false);
        } else {
          btn.setAttribute("aria-busy", "false");
        }
        // Each lookup needs its own end-to-end id.
        e2e.value = endToEndId(s.participant);
      },
    },
    h(
      "div",
      { class: "grid" },
      field("Key", key),
      field("Key type", keyType),
      field("Payer's CPF or CNPJ", payer),
      field("End-to-end id", e2e, "A new one is made for each lookup."),
    ),
    h("div", { class: "actions" }, btn),
  );
  return layout("Lookup", h("p", {}, "Look any key up as a payer would see it before a payment."), form, out);
}

// ---- claims ----

function myRoles(c: Claim): { donor: boolean; claimer: boolean } {
  const me = currentSession()!.participant;
  return { donor: c.donorParticipant === me, claimer: c.claimerAccount?.participant === me };
}

function claimCard(c: Claim): HTMLElement {
  const r = myRoles(c);
  return h(
    "article",
    { class: "card claim", "data-claim": c.id },
    h(
      "div",
      { class: "card-head" },
      h("h2", { class: "key" }, h("a", { href: "#/claims/" + encodeURIComponent(c.id) }, c.key)),
      badge(claimTypeName(c.type)),
      badge(claimStatusName(c.status), claimStatusName(c.status)),
      c.pendingOperation ? badge("waiting: " + c.pendingOperation, "pending") : null,
      badge(r.donor ? "you are the donor" : r.claimer ? "you are the claimer" : "", "role"),
    ),
    facts([
      ["Claim", c.id],
      ["Donor", c.donorParticipant],
      ["Claimer", accountText(c.claimerAccount)],
      ["Resolution ends", c.status === ClaimStatus.OPEN || c.status === ClaimStatus.WAITING_RESOLUTION ? liveCountdown(c.resolutionPeriodEnd) : when(c.resolutionPeriodEnd)],
    ]),
  );
}

const claimStatuses: [ClaimStatus, string][] = [
  [ClaimStatus.OPEN, "Open"],
  [ClaimStatus.WAITING_RESOLUTION, "Waiting resolution"],
  [ClaimStatus.CONFIRMED, "Confirmed"],
  [ClaimStatus.CANCELLED, "Cancelled"],
  [ClaimStatus.COMPLETED, "Completed"],
];

// pager pages a list by page token: the tokens of the pages shown so far,
// the Previous and Next buttons and the page number. load shows the page
// whose token token() gives; it calls shown() with the next page's token.
function pager(load: () => void) {
  const prev = h("button", { type: "button", class: "secondary", disabled: true }, "Previous page");
  const next = h("button", { type: "button", class: "secondary", disabled: true }, "Next page");
  const info = h("span", { class: "page-info" });
  const tokens: string[] = [""];
  let page = 0;
  let nextToken = "";
  prev.addEventListener("click", () => {
    if (page > 0) {
      page--;
      load();
    }
  });
  next.addEventListener("click", () => {
    if (nextToken) {
      tokens[page + 1] = nextToken;
      page++;
      load();
    }
  });
  return {
    el: h("div", { class: "pager" }, prev, info, next),
    token: () => tokens[page],
    restart: () => {
      tokens.length = 1;
      page = 0;
    },
    shown: (token: string) => {
      nextToken = token;
      prev.disabled = page === 0;
      next.disabled = token === "";
      info.textContent = `Page ${page + 1}`;
    },
  };
}

function claimsScreen(): HTMLElement {
  const asDonor = h("input", { type: "checkbox", name: "as_donor", checked: true });
  const asClaimer = h("input", { type: "checkbox", name: "as_claimer", checked: true });
  const statusBoxes = claimStatuses.map(([v, l]) => [h("input", { type: "checkbox", name: "statuses", value: String(v) }), l] as const);
  const pageSize = select("page_size", [["10", "10"], ["50", "50"], ["100", "100"]], "10");
  const list = h("div", { class: "list", "aria-live": "polite" });
  const box = h("div", { class: "messages" });
  const pages = pager(() => void load());
  const filters = h(
    "form",
    {
      class: "card filters",
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        pages.restart();
        void load();
      },
    },
    h("h2", {}, "Filter"),
    h(
      "fieldset",
      { class: "checks" },
      h("legend", {}, "Role"),
      h("label", {}, asDonor, " As donor"),
      h("label", {}, asClaimer, " As claimer"),
    ),
    h("fieldset", { class: "checks" }, h("legend", {}, "Status (none: all)"), ...statusBoxes.map(([b, l]) => h("label", {}, b, " " + l))),
    h("div", { class: "grid" }, field("Page size", pageSize)),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Search")),
  );
  async function load(quiet = false): Promise<void> {
    if (!quiet) {
      box.replaceChildren();
    }
    try {
      const res = await dict.listClaims({
        asDonor: asDonor.checked,
        asClaimer: asClaimer.checked,
        statuses: statusBoxes.filter(([b]) => b.checked).map(([b]) => Number(b.value) as ClaimStatus),
        pageSize: Number(pageSize.value),
        pageToken: pages.token(),
      });
      stopTimers();
      startPolling();
      list.replaceChildren(...(res.claims.length === 0 ? [h("p", { class: "empty" }, "No claims match.")] : res.claims.map(claimCard)));
      pages.shown(res.nextPageToken);
    } catch (err) {
      showFailure(box, err, filters);
    }
  }
  function startPolling(): void {
    every(2000, () => {
      if (list.querySelector(".badge.pending")) {
        void load(true);
      }
    });
  }
  void load();
  const flash = sessionStorage.getItem("flash");
  sessionStorage.removeItem("flash");
  return layout(
    "Claims",
    flash ? notice(flash) : null,
    h("div", { class: "actions" }, h("a", { class: "button", href: "#/claims/new" }, "Open a claim")),
    filters,
    box,
    list,
    pages.el,
  );
}

function newClaimScreen(): HTMLElement {
  const type = select("type", [
    [String(ClaimType.PORTABILITY), "Portability (same owner, another institution)"],
    [String(ClaimType.OWNERSHIP), "Ownership (another owner)"],
  ]);
  const keyType = select("key_type", enumOptions(keyTypes.filter(([t]) => t !== KeyType.EVP)), String(KeyType.CPF));
  const key = input("key", { maxlength: 77 });
  const acc = accountFields("claimer_account");
  const own = ownerFields("claimer");
  const box = h("div", { class: "messages" });
  const btn = h("button", { type: "submit" }, "Open claim");
  const form: HTMLFormElement = h(
    "form",
    {
      class: "card",
      novalidate: true,
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        box.replaceChildren();
        clearFieldErrors(form);
        busy(btn, true);
        try {
          const res = await dict.createClaim({
            requestId: uuid(),
            type: Number(type.value) as ClaimType,
            keyType: Number(keyType.value) as KeyType,
            key: key.value.trim(),
            claimerAccount: accountValue(acc),
            claimer: { type: Number(own.type.value) as OwnerType, taxId: own.taxId.value.trim(), name: own.name.value.trim(), tradeName: own.tradeName.value.trim() },
          });
          location.hash = "#/claims/" + encodeURIComponent(res.claim!.id);
        } catch (err) {
          showFailure(box, err, form);
        }
        busy(btn, false);
      },
    },
    h("fieldset", {}, h("legend", {}, "Claim"), h("div", { class: "grid" }, field("Claim type", type), field("Key type", keyType), field("Key", key))),
    h(
      "fieldset",
      {},
      h("legend", {}, "Your account for the key"),
      h("div", { class: "grid" }, field("Branch", acc.branch), field("Account number", acc.number), field("Account type", acc.type), field("Opened on", acc.opened)),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Claimer"),
      h("div", { class: "grid" }, field("Owner type", own.type), field("CPF or CNPJ", own.taxId), field("Name", own.name), field("Trade name", own.tradeName)),
    ),
    box,
    h("div", { class: "actions" }, btn, h("a", { class: "button secondary", href: "#/claims" }, "Cancel")),
  );
  return layout("Open a claim", form);
}

/** The cancel reasons the rules allow this side now (the server checks again). */
function cancelReasons(c: Claim, donor: boolean): Reason[] {
  const out = [Reason.ACCOUNT_CLOSURE, Reason.FRAUD, Reason.RECONCILIATION, Reason.RFB_VALIDATION];
  const resolutionEnded = c.resolutionPeriodEnd ? timestampDate(c.resolutionPeriodEnd).getTime() <= Date.now() : false;
  if (!donor || c.type === ClaimType.PORTABILITY) {
    out.unshift(Reason.USER_REQUESTED);
  }
  if (donor && c.type === ClaimType.PORTABILITY && resolutionEnded) {
    out.push(Reason.DEFAULT_OPERATION);
  }
  if (!donor && c.type === ClaimType.OWNERSHIP && c.createdAt && timestampDate(c.createdAt).getTime() + 30 * 86400e3 <= Date.now()) {
    out.push(Reason.DEFAULT_OPERATION);
  }
  return out;
}

function confirmReasons(c: Claim): Reason[] {
  const out = [Reason.USER_REQUESTED, Reason.ACCOUNT_CLOSURE];
  if (c.type === ClaimType.OWNERSHIP && c.resolutionPeriodEnd && timestampDate(c.resolutionPeriodEnd).getTime() <= Date.now()) {
    out.push(Reason.DEFAULT_OPERATION);
  }
  return out;
}

function claimScreen(id: string): HTMLElement {
  const holder = h("div", {}, h("p", { class: "loading" }, "Loading…"));
  const box = h("div", { class: "messages" });
  let shown = "";

  function action(label: string, run: () => Promise<unknown>, cls = ""): HTMLButtonElement {
    const b = h("button", { type: "button", class: cls, "data-action": label.toLowerCase() }, label);
    b.addEventListener("click", async () => {
      box.replaceChildren();
      busy(b, true);
      try {
        await run();
        await load();
      } catch (err) {
        showFailure(box, err);
      }
      busy(b, false);
    });
    return b;
  }

  function render(c: Claim): void {
    stopTimers();
    const r = myRoles(c);
    const open = c.status === ClaimStatus.OPEN || c.status === ClaimStatus.WAITING_RESOLUTION;
    const actions = h("div", { class: "actions" });
    const forms: HTMLElement[] = [];
    if (!c.pendingOperation) {
      if (r.donor && c.status === ClaimStatus.OPEN) {
        actions.append(action("Acknowledge", () => dict.acknowledgeClaim({ id: c.id })));
      }
      if (r.donor && open) {
        const reason = select("confirm_reason", reasonOptions(confirmReasons(c)));
        forms.push(
          h(
            "div",
            { class: "inline" },
            field("Reason to confirm", reason),
            action("Confirm", () => dict.confirmClaim({ id: c.id, reason: Number(reason.value) as Reason })),
          ),
        );
      }
      if (r.claimer && c.status === ClaimStatus.CONFIRMED) {
        actions.append(action("Complete", () => dict.completeClaim({ id: c.id, requestId: uuid() })));
      }
      if ((r.donor || r.claimer) && (open || c.status === ClaimStatus.CONFIRMED)) {
        const reason = select("cancel_reason", reasonOptions(cancelReasons(c, r.donor)));
        forms.push(
          h(
            "div",
            { class: "inline" },
            field("Reason to cancel", reason),
            action("Cancel claim", () => dict.cancelClaim({ id: c.id, reason: Number(reason.value) as Reason }), "danger"),
          ),
        );
      }
    }
    holder.replaceChildren(
      h(
        "article",
        { class: "card claim-detail", "data-claim": c.id, "data-status": claimStatusName(c.status) },
        h(
          "div",
          { class: "card-head" },
          h("h2", { class: "key" }, c.key),
          badge(claimTypeName(c.type)),
          badge(claimStatusName(c.status), claimStatusName(c.status)),
          c.pendingOperation ? badge("waiting: " + c.pendingOperation, "pending") : null,
        ),
        facts([
          ["Claim", c.id],
          ["Your role", r.donor ? "Donor" : r.claimer ? "Claimer" : "—"],
          ["Key type", keyTypeName(c.keyType)],
          ["Donor", c.donorParticipant],
          ["Claimer account", accountText(c.claimerAccount)],
          ["Claimer", c.claimer ? `${c.claimer.name} · ${c.claimer.taxId}` : ""],
          ["Resolution period ends", open ? liveCountdown(c.resolutionPeriodEnd) : when(c.resolutionPeriodEnd)],
          ["Completion period ends", c.status === ClaimStatus.CONFIRMED || open ? liveCountdown(c.completionPeriodEnd) : when(c.completionPeriodEnd)],
          ["Opened", when(c.createdAt)],
          ["Updated", when(c.updatedAt)],
          ["Cancel reason", c.cancelReason ? reasonNames[c.cancelReason] : ""],
          ["Refused", c.failureReason ? `${c.failureReason}: ${c.failureMessage}` : ""],
        ]),
        c.pendingOperation ? h("p", { class: "hint" }, `Waiting for the directory to answer the ${c.pendingOperation.toLowerCase()}…`) : null,
        actions,
        ...forms,
      ),
    );
    // While the directory has not answered, or the other side may act, refresh.
    every(c.pendingOperation ? 1000 : 3000, () => void load());
  }

  async function load(): Promise<void> {
    try {
      const c = (await dict.getClaim({ id })).claim!;
      const sig = JSON.stringify([c.id, c.status, c.pendingOperation, c.failureReason, c.updatedAt?.seconds.toString()]);
      if (sig !== shown) {
        shown = sig;
        render(c);
        if (c.id !== id) {
          history.replaceState(null, "", "#/claims/" + encodeURIComponent(c.id));
        }
      }
    } catch (err) {
      showFailure(box, err);
    }
  }
  void load();
  return layout("Claim", h("p", {}, h("a", { href: "#/claims" }, "← All claims")), box, holder);
}

// ---- sync ----

function syncScreen(): HTMLElement {
  const list = h("div", { class: "list" });
  const box = h("div", { class: "messages" });
  const load = async () => {
    try {
      const res = await dict.getSyncStatus({});
      list.replaceChildren(
        ...res.statuses.map((s) =>
          h(
            "article",
            { class: "card sync", "data-key-type": keyTypeName(s.keyType) },
            h("div", { class: "card-head" }, h("h2", {}, keyTypeName(s.keyType)), badge(SyncResult[s.result] ?? String(s.result), SyncResult[s.result] ?? "")),
            facts([
              ["Entries", s.entryCount.toString()],
              ["VSync", h("code", {}, s.vsync)],
              ["Last check", s.lastCheck ? when(s.lastCheck) : "never"],
            ]),
          ),
        ),
      );
    } catch (err) {
      showFailure(box, err);
    }
  };
  void load();
  return layout(
    "Sync status",
    h("p", {}, "The VSync of this participant's keys, per key type, and the last check against the directory."),
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => void load() }, "Refresh")),
    box,
    list,
  );
}

// ---- routing ----

function route(): void {
  stopTimers();
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/keys";
  const s = currentSession();
  if (!s || (s.expires && s.expires < Date.now())) {
    if (s) {
      signOut();
    }
    app.replaceChildren(signInScreen());
    document.title = "Sign in · core-dict";
    if (path !== "/signin") {
      history.replaceState(null, "", "#/signin");
    }
    return;
  }
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  let screen: HTMLElement;
  switch (parts[0]) {
    case "keys":
      screen = parts[1] === "new" ? newKeyScreen() : parts[1] === "edit" && parts[2] ? editKeyScreen(parts[2]) : keysScreen();
      break;
    case "lookup":
      screen = lookupScreen();
      break;
    case "claims":
      screen = parts[1] === "new" ? newClaimScreen() : parts[1] ? claimScreen(parts[1]) : claimsScreen();
      break;
    case "sync":
      screen = syncScreen();
      break;
    default:
      history.replaceState(null, "", "#/keys");
      screen = keysScreen();
  }
  app.replaceChildren(screen);
  document.title = (screen.querySelector("h1")?.textContent ?? "Console") + " · core-dict";
  screen.querySelector<HTMLElement>("main h1")?.focus?.();
}

window.addEventListener("hashchange", route);
route();
