// Drive the Lindi console in headless Chromium: log in, find the ticket a real detection
// opened, acknowledge it, assign it, move it through the workflow, and see the escalation
// stop. Screenshots of each page go to $SCREENSHOTS. Exits non-zero on the first failure.
//
// Env: LINDI_URL, LINDI_USER, LINDI_PASSWORD, SCREENSHOTS, CHROMIUM (default
// /usr/bin/chromium), TICKET_TITLE (the title to look for in the queue).
import { chromium } from "playwright-core";

const url = process.env.LINDI_URL;
const shots = process.env.SCREENSHOTS || ".";
const title = process.env.TICKET_TITLE;
const step = (s) => console.log("step: " + s);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(15000);

  step("an anonymous visit goes to the login page");
  await page.goto(url + "/console/tickets");
  await page.waitForURL("**/console/login");
  await page.screenshot({ path: shots + "/console-login.png" });

  step("a wrong password is refused");
  await page.fill("input[name=user]", process.env.LINDI_USER);
  await page.fill("input[name=password]", "not the password");
  await page.click("button[type=submit]");
  await page.waitForSelector("#msg:has-text('wrong user name or password')");

  step("log in");
  await page.fill("input[name=password]", process.env.LINDI_PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForURL("**/console/tickets");
  const row = page.locator("#queue tbody tr", { hasText: title });
  await row.first().waitFor();
  await page.waitForSelector(".sla:not(:empty)");
  await page.screenshot({ path: shots + "/console-queue.png", fullPage: true });

  step("open the ticket");
  await row.first().locator("td.title a").click();
  await page.waitForSelector(".ticket-head");
  await page.waitForSelector("text=not acknowledged");
  await page.screenshot({ path: shots + "/console-ticket-new.png", fullPage: true });

  step("acknowledge");
  await page.click("button[data-act=ack]");
  await page.waitForSelector("text=acknowledged by " + process.env.LINDI_USER);

  step("assign");
  await page.fill("#assign-to", process.env.LINDI_USER);
  await page.click("button[data-act=assign]");
  await page.waitForSelector("#assignee:has-text('" + process.env.LINDI_USER + "')");

  step("move through the workflow");
  for (const to of ["triage", "containment", "eradication"]) {
    await page.selectOption("#transition-to", to);
    await page.click("button[data-act=transition]");
    await page.waitForSelector(".state:has-text('" + to + "')");
  }

  step("comment and tick a task");
  await page.fill("#comment", "Host isolated; re-imaging.");
  await page.click("button[data-act=comment]");
  await page.waitForSelector(".comment:has-text('Host isolated')");
  await page.locator("input[data-task]").first().check();
  await page.waitForSelector("input[data-task]:checked");

  step("the escalation stopped");
  const text = await page.textContent("main");
  if (!/acknowledged · policy/.test(text)) throw new Error("escalation state is not acknowledged");
  await page.screenshot({ path: shots + "/console-ticket.png", fullPage: true });

  step("agents page");
  await page.click("header nav a:has-text('Agents')");
  await page.waitForSelector("table.queue");
  await page.screenshot({ path: shots + "/console-agents.png", fullPage: true });

  step("effectiveness page");
  await page.click("header nav a:has-text('Effectiveness')");
  await page.waitForSelector("figure.chart");
  const eff = await page.textContent("main");
  if (!/MTTA/.test(eff) || !/bank-a/.test(eff)) throw new Error("effectiveness page lacks figures");
  await page.screenshot({ path: shots + "/console-effectiveness.png", fullPage: true });

  step("log out");
  await page.click("#logout");
  await page.waitForURL("**/console/login");
  console.log("console e2e: ok");
} finally {
  await browser.close();
}
