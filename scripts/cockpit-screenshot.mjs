// Logs in to Cockpit with headless Chromium, opens a process instance's incidents tab, waits
// until the incident's message shows, and saves a screenshot of the page.
//
//   PROCOS_ENGINE_PASSWORD=… node scripts/cockpit-screenshot.mjs <playwright-core dir> \
//     <engine base URL> <user> <process instance id> <expected text> <out.png>
//
// Exit 0 only when the text appeared: the screenshot shows what a person would see in Cockpit.
import { createRequire } from "node:module";
import path from "node:path";

const [modules, base, user, instance, expected, out] = process.argv.slice(2);
const password = process.env.PROCOS_ENGINE_PASSWORD;
if (!out || !password) {
  console.error(
    "usage: PROCOS_ENGINE_PASSWORD=… cockpit-screenshot.mjs <playwright-core dir> <base URL> <user> <instance id> <expected text> <out.png>",
  );
  process.exit(2);
}
const require = createRequire(path.join(modules, "package.json"));
const { chromium } = require("playwright-core");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  // Chromium's own background traffic has nowhere to go on a closed network; as root it needs
  // --no-sandbox.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  await page.goto(`${base}/camunda/app/cockpit/default/#/login`);
  await page.locator("input[type=password]").waitFor({ timeout: 60_000 });
  await page.locator("form input[type=text]").first().fill(user);
  await page.locator("input[type=password]").fill(password);
  await page.locator("form button[type=submit]").click();
  // The dashboard's navigation appears once the session exists.
  await page.getByRole("link", { name: "Processes" }).first().waitFor({ timeout: 60_000 });
  await page.goto(
    `${base}/camunda/app/cockpit/default/#/process-instance/${instance}/runtime?tab=incidents-tab`,
  );
  await page.getByText(expected, { exact: false }).first().waitFor({ timeout: 60_000 });
  // Let the diagram finish rendering its incident badge.
  await page.waitForTimeout(1500);
  await page.screenshot({ path: out, fullPage: true });
  console.log(`cockpit-screenshot: ${out}`);
} catch (error) {
  console.error(`cockpit-screenshot: ${error.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
