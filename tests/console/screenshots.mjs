// Screenshots of each console page on a store seeded with a realistic quarter of data
// (collector/tests/screenshots.rs), checking that each page shows its data. Exits non-zero
// on the first failure.
//
// Env: LINDI_URL, LINDI_USER (an admin), LINDI_PASSWORD, AGENT_ID (an agent to open),
// SCREENSHOTS, CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const url = process.env.LINDI_URL;
const shots = process.env.SCREENSHOTS || ".";
const step = (s) => console.log("step: " + s);
const expect = async (page, text) => {
  const body = await page.textContent("main");
  if (!body.includes(text)) throw new Error(page.url() + " lacks " + JSON.stringify(text));
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.setDefaultTimeout(15000);

  step("log in");
  await page.goto(url + "/console/login");
  await page.fill("input[name=user]", process.env.LINDI_USER);
  await page.fill("input[name=password]", process.env.LINDI_PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForURL("**/console/tickets");
  await page.waitForSelector(".sla:not(:empty)");
  await expect(page, "Cobalt Strike");
  await page.screenshot({ path: shots + "/console-queue.png" });

  step("a ticket");
  await page.locator("#queue tbody tr", { hasText: "containment" }).first().locator("td.title a").click();
  await page.waitForSelector(".ticket-head");
  await expect(page, "acknowledged by");
  await page.screenshot({ path: shots + "/console-ticket.png", fullPage: true });

  step("agents");
  await page.goto(url + "/console/agents");
  await page.waitForSelector("span.badge.s-warn");
  await expect(page, "silent");
  await page.screenshot({ path: shots + "/console-agents.png" });

  step("one agent");
  await page.goto(url + "/console/agents/" + process.env.AGENT_ID);
  await page.waitForSelector("figure.chart path.line");
  await page.screenshot({ path: shots + "/console-agent.png", fullPage: true });

  step("effectiveness");
  await page.goto(url + "/console/effectiveness");
  await page.waitForSelector("figure.chart path.line");
  await expect(page, "gov-health");
  await page.screenshot({ path: shots + "/console-effectiveness.png", fullPage: true });

  step("detectors");
  await page.goto(url + "/console/detectors");
  await expect(page, "group taps");
  await expect(page, "1.0.0");
  await page.screenshot({ path: shots + "/console-detectors.png", fullPage: true });

  step("team profile (empty: the admin's form)");
  await page.goto(url + "/console/profile");
  await page.waitForSelector("form#profile");
  await page.screenshot({ path: shots + "/console-team.png" });
  console.log("screenshots: ok");
} finally {
  await browser.close();
}
