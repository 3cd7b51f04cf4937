// The deploy-history page in a real browser: Debian's chromium driven by playwright-core.
//
// Run by tests/e2e/httpapi/test_history_page.py with:
//   API_URL, READ_TOKEN, WRITE_TOKEN, DEPLOYMENT_ID, WORKSPACE, TARGET_VERSION_ID, ARTIFACTS
// Prints one JSON object with what it saw; screenshots go to $ARTIFACTS.
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = process.env;
const artifacts = env.ARTIFACTS;
mkdirSync(artifacts, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "miosa-chromium-"));
const seen = {};

const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
  viewport: { width: 1200, height: 800 },
});
context.setDefaultTimeout(30000);

async function signIn(page, token) {
  await page.goto(`${env.API_URL}/ui/`);
  await page.fill("#token", token);
  await page.fill("#deployment-id", env.DEPLOYMENT_ID);
  await page.click("#sign-in button[type=submit]");
  await page.waitForSelector("#versions tbody tr");
}

const rowNumbers = (page) =>
  page.$$eval("#versions tbody tr", (rows) => rows.map((row) => Number(row.dataset.number)));

try {
  // A reader: the history, no buttons that change anything.
  const reader = await context.newPage();
  await signIn(reader, env.READ_TOKEN);
  seen.readerRows = await rowNumbers(reader);
  seen.readerPromoteButtons = await reader.locator("button.promote").count();
  seen.readerRollbackVisible = await reader.isVisible("#rollback");
  seen.tokenInSessionStorage = await reader.evaluate(() => sessionStorage.getItem("miosa.token") !== null);
  seen.cookies = (await context.cookies()).length;
  await reader.screenshot({ path: join(artifacts, "history-reader.png"), fullPage: true });
  await reader.click("#sign-out");
  await reader.close();

  // A writer: filter by workspace, then promote with confirmation and watch it go live.
  const page = await context.newPage();
  await signIn(page, env.WRITE_TOKEN);
  seen.liveBefore = (await page.textContent("#dep-live")).trim();
  await page.fill("#workspace", env.WORKSPACE);
  await page.click("#filter button[type=submit]");
  await page.waitForFunction(
    (ws) => [...document.querySelectorAll("#versions tbody tr")].every((row) => row.textContent.includes(ws)),
    env.WORKSPACE,
  );
  seen.filteredRows = await rowNumbers(page);
  await page.screenshot({ path: join(artifacts, "history-filtered.png"), fullPage: true });
  await page.click("#clear-filter");
  await page.waitForFunction((n) => document.querySelectorAll("#versions tbody tr").length === n, seen.readerRows.length);

  const row = page.locator(`#versions tbody tr[data-version-id="${env.TARGET_VERSION_ID}"]`);
  await row.locator("button.promote").click();
  await page.waitForSelector("#confirm[open]");
  seen.confirmText = (await page.textContent("#confirm-text")).trim();
  await page.screenshot({ path: join(artifacts, "history-confirm.png") });
  await page.click("#confirm-ok");
  // The page polls the deployment and re-renders when the live version changes.
  await page.waitForSelector(`#versions tbody tr.is-live[data-version-id="${env.TARGET_VERSION_ID}"]`, { timeout: 60000 });
  seen.liveAfter = (await page.textContent("#dep-live")).trim();
  seen.notice = (await page.textContent("#notice")).trim();
  await page.screenshot({ path: join(artifacts, "history-promoted.png"), fullPage: true });

  // Phone width: rows become cards, nothing overflows horizontally.
  await page.setViewportSize({ width: 375, height: 812 });
  await page.waitForTimeout(300);
  seen.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  await page.screenshot({ path: join(artifacts, "history-phone.png"), fullPage: true });
  console.log(JSON.stringify(seen));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
