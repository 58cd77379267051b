// The console's browser test: Debian's Chromium, headless, driven by
// playwright-core. web/console_ext_test.go (go test ./web/, part of
// `make test`) starts two participants and dictsim and runs this with:
//   CONSOLE_URL_A, CONSOLE_TOKEN_A, CONSOLE_ISPB_A   the donor (participant A)
//   CONSOLE_URL_B, CONSOLE_TOKEN_B, CONSOLE_ISPB_B   the claimer (participant B)
//   CONSOLE_CPF          a fresh valid CPF: A's key, then B's by portability
//   CONSOLE_PAYER_CPF    the payer of the lookup
//   CONSOLE_SCREENSHOTS  where the screenshots go (git-ignored)
//   CHROMIUM             the browser (default /usr/bin/chromium)
// It exits non-zero on a console error, a failed request (no answer or an
// HTTP status >= 400), an RPC that is not gRPC-Web, a page wider than the
// viewport at 360 or 1440 px, or a step that does not happen.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name, def) => {
  const v = process.env[name] ?? def;
  if (v === undefined || v === "") {
    throw new Error(`${name} is not set`);
  }
  return v;
};
const A = { url: env("CONSOLE_URL_A"), token: env("CONSOLE_TOKEN_A"), ispb: env("CONSOLE_ISPB_A") };
const B = { url: env("CONSOLE_URL_B"), token: env("CONSOLE_TOKEN_B"), ispb: env("CONSOLE_ISPB_B") };
const cpf = env("CONSOLE_CPF");
const payerCPF = env("CONSOLE_PAYER_CPF");
const shots = env("CONSOLE_SCREENSHOTS");
const widths = [360, 1440];
const wait = 90_000; // the machine may be loaded; the directory answers asynchronously

mkdirSync(shots, { recursive: true });
const problems = [];
let rpcCount = 0;
const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

function watch(page, who) {
  page.on("console", (m) => {
    if (m.type() === "error") {
      problems.push(`${who}: console error: ${m.text()}`);
    }
  });
  page.on("pageerror", (e) => problems.push(`${who}: uncaught: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`${who}: request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on("response", (r) => {
    if (r.status() >= 400) {
      problems.push(`${who}: HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
    }
  });
  page.on("request", (r) => {
    if (new URL(r.url()).pathname.startsWith("/dict.v1.CoreDictService/")) {
      rpcCount++;
      const ct = r.headers()["content-type"] ?? "";
      if (!/^application\/grpc-web(\+proto)?$/.test(ct)) {
        problems.push(`${who}: ${r.url()} sent as ${ct || "no content type"}, want application/grpc-web+proto`);
      }
    }
  });
  page.on("response", async (r) => {
    if (new URL(r.url()).pathname.startsWith("/dict.v1.CoreDictService/")) {
      const ct = r.headers()["content-type"] ?? "";
      if (!ct.startsWith("application/grpc-web")) {
        problems.push(`${who}: ${r.url()} answered as ${ct}, want application/grpc-web+proto`);
      }
    }
  });
}

// shoot saves the page at both widths, failing when it is wider than the viewport.
async function shoot(page, name) {
  const size = page.viewportSize();
  for (const width of widths) {
    await page.setViewportSize({ width, height: 900 });
    await page.waitForTimeout(150);
    const o = await page.evaluate(() => {
      const vw = window.innerWidth;
      const wide = [...document.querySelectorAll("body *")]
        .filter((el) => el.getBoundingClientRect().right > vw + 0.5)
        .slice(0, 3)
        .map((el) => `${el.tagName.toLowerCase()}${el.className ? "." + String(el.className).replace(/ /g, ".") : ""} (right ${Math.round(el.getBoundingClientRect().right)})`);
      return { scroll: document.documentElement.scrollWidth, body: document.body.scrollWidth, vw, wide };
    });
    if (o.scroll > o.vw || o.body > o.vw) {
      problems.push(`${name} at ${width} px: page is ${Math.max(o.scroll, o.body)} px wide; too wide: ${o.wide.join(", ")}`);
    }
    await page.screenshot({ path: join(shots, `${name}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize(size);
  log(`screenshot ${name}`);
}

async function signIn(page, who) {
  await page.goto(who.url + "/");
  await page.locator("textarea[name=token]").waitFor();
  await page.fill("textarea[name=token]", who.token);
  await page.click("button[type=submit]");
  await page.locator("h1", { hasText: "Keys" }).waitFor({ timeout: wait });
  const shown = await page.locator(".participant").textContent();
  if (!shown?.includes(who.ispb)) {
    throw new Error(`signed in as ${shown}, want ISPB ${who.ispb}`);
  }
}

async function fillOwnerAndAccount(page, prefix, ownerPrefix, taxId, name) {
  await page.fill(`[name="${prefix}.branch"]`, "0001");
  await page.fill(`[name="${prefix}.number"]`, String(Math.floor(Math.random() * 1e8)).padStart(8, "0"));
  await page.fill(`[name="${prefix}.opened_at"]`, "2020-01-02");
  await page.fill(`[name="${ownerPrefix}.tax_id"]`, taxId);
  await page.fill(`[name="${ownerPrefix}.name"]`, name);
}

async function claimStatus(page, status) {
  await page.locator(`.claim-detail[data-status="${status}"]`).waitFor({ timeout: wait });
  await page.locator(".claim-detail .badge.pending").waitFor({ state: "detached", timeout: wait });
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
let failed = false;
try {
  const ctxA = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const ctxB = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  ctxA.setDefaultTimeout(wait);
  ctxB.setDefaultTimeout(wait);
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  watch(a, "A");
  watch(b, "B");

  // Sign in.
  await a.goto(A.url + "/");
  await a.locator("textarea[name=token]").waitFor();
  await shoot(a, "signin");
  await signIn(a, A);
  log("A signed in");

  // An invalid CNPJ: the server's BadRequest message shows under the key.
  await a.click("text=New key");
  await a.selectOption("select[name=key_type]", { label: "CNPJ" });
  await a.fill("[name=key]", "11.222.333/0001-00");
  await a.selectOption('select[name="owner.type"]', { label: "Legal person (CNPJ)" });
  await fillOwnerAndAccount(a, "account", "owner", "11.222.333/0001-00", "Empresa Exemplo");
  await a.click("button:has-text('Create key')");
  const keyError = a.locator('[data-error-for="key"]');
  await keyError.waitFor({ state: "visible" });
  const keyMsg = (await keyError.textContent())?.trim() ?? "";
  if (!/cnpj/i.test(keyMsg)) {
    throw new Error(`the invalid CNPJ's message is ${JSON.stringify(keyMsg)}, want the server's words about the CNPJ`);
  }
  const alert = (await a.locator(".alert.error .alert-message").textContent()) ?? "";
  if (/^\[?invalid_argument\]?$/i.test(alert.trim()) || /^\[\w+\]/.test(alert.trim())) {
    throw new Error(`the error shows a raw code: ${alert}`);
  }
  log(`invalid CNPJ refused: ${keyMsg}`);
  await shoot(a, "key-invalid-cnpj");

  // A CPF key: created, then listed, active once the directory confirms it.
  await a.selectOption("select[name=key_type]", { label: "CPF" });
  await a.fill("[name=key]", cpf);
  await a.selectOption('select[name="owner.type"]', { label: "Natural person (CPF)" });
  await fillOwnerAndAccount(a, "account", "owner", cpf, "Maria da Silva");
  await a.click("button:has-text('Create key')");
  await a.locator("h1", { hasText: "Keys" }).waitFor();
  const card = a.locator(`article.entry[data-key="${cpf}"]`);
  await card.waitFor();
  await card.locator(".badge.active").waitFor({ timeout: wait });
  await card.locator(".badge.pending").waitFor({ state: "detached" });
  log("CPF key active in A's list");
  await shoot(a, "keys");

  // An update: the key moves to another account number.
  await card.locator("a:has-text('Edit')").click();
  const newNumber = String(Math.floor(Math.random() * 1e8)).padStart(8, "0");
  await a.fill('[name="account.number"]', newNumber);
  await a.selectOption("select[name=reason]", { label: "Branch transfer" });
  await a.click("button:has-text('Save')");
  await a.locator("h1", { hasText: "Keys" }).waitFor();
  await card.locator(".facts", { hasText: `account ${newNumber}` }).waitFor({ timeout: wait });
  await card.locator(".badge.pending").waitFor({ state: "detached" });
  log("key updated");

  // A lookup, as a payer sees it: the CPF masked.
  await a.click("nav >> text=Lookup");
  await a.fill("[name=key]", cpf);
  await a.fill("[name=payer_id]", payerCPF);
  await a.click("button:has-text('Look up')");
  const view = a.locator(".payer-view");
  await view.waitFor();
  const text = (await view.textContent()) ?? "";
  const masked = `***.${cpf.slice(3, 6)}.${cpf.slice(6, 9)}-**`;
  if (!text.includes(masked) || !text.includes("Maria da Silva")) {
    throw new Error(`payer view ${JSON.stringify(text)} lacks ${masked} or the name`);
  }
  log("lookup shows the masked CPF");
  await shoot(a, "lookup");

  // B opens a portability claim over the key.
  await signIn(b, B);
  await b.click("nav >> text=Claims");
  await b.click("text=Open a claim");
  await b.selectOption("select[name=type]", { index: 0 });
  await b.selectOption("select[name=key_type]", { label: "CPF" });
  await b.fill("[name=key]", cpf);
  await fillOwnerAndAccount(b, "claimer_account", "claimer", cpf, "Maria da Silva");
  await b.click("button:has-text('Open claim')");
  await claimStatus(b, "OPEN");
  log("B's claim is open");

  // A, the donor, finds it, acknowledges and confirms it.
  await a.click("nav >> text=Claims");
  const claimCard = a.locator("article.claim", { hasText: cpf });
  await claimCard.waitFor();
  await claimCard.locator(".badge.role", { hasText: "donor" }).waitFor();
  await shoot(a, "claims");
  await claimCard.locator("h2 a").click();
  await claimStatus(a, "OPEN");
  const cd = a.locator(".claim-detail .countdown").first();
  const before = await cd.textContent();
  await a.waitForTimeout(2100);
  const after = await cd.textContent();
  if (!before || before === after || !/left/.test(after ?? "")) {
    throw new Error(`the resolution deadline does not count down: ${before} then ${after}`);
  }
  await shoot(a, "claim-detail");
  await a.click("button[data-action=acknowledge]");
  await claimStatus(a, "WAITING_RESOLUTION");
  log("A acknowledged");
  await a.selectOption("select[name=confirm_reason]", { label: "User requested" });
  await a.click("button[data-action=confirm]");
  await claimStatus(a, "CONFIRMED");
  log("A confirmed");

  // B completes; both see it completed.
  await claimStatus(b, "CONFIRMED");
  await b.click("button[data-action=complete]");
  await claimStatus(b, "COMPLETED");
  await claimStatus(a, "COMPLETED");
  log("claim completed on both sides");
  await shoot(a, "claim-completed");

  // Sync status, one card per key type.
  await a.click("nav >> text=Sync");
  await a.locator("article.sync").first().waitFor();
  if ((await a.locator("article.sync").count()) < 5) {
    throw new Error(`sync status shows ${await a.locator("article.sync").count()} key types, want 5`);
  }
  await shoot(a, "sync");

  await a.waitForTimeout(300);
  if (rpcCount === 0) {
    problems.push("no RPC was seen: the console did not call the service");
  }
  log(`${rpcCount} gRPC-Web requests`);
} catch (err) {
  failed = true;
  console.error(`step failed: ${err?.stack ?? err}`);
  for (const ctx of browser.contexts()) {
    for (const [i, p] of ctx.pages().entries()) {
      await p.screenshot({ path: join(shots, `failure-${browser.contexts().indexOf(ctx)}-${i}.png`), fullPage: true }).catch(() => {});
      console.error(`page at failure: ${p.url()}\n${((await p.locator("body").innerText().catch(() => "")) || "").slice(0, 2000)}`);
    }
  }
} finally {
  await browser.close();
}
for (const p of problems) {
  console.error(p);
}
if (failed || problems.length > 0) {
  console.error(`FAIL: ${problems.length} problem(s)${failed ? " and a failed step" : ""}`);
  process.exit(1);
}
console.log("PASS");
