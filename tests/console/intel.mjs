// The national picture in headless Chromium: an admin who sees every constituency opens the
// Intel page and finds the indicator a sector's agent matched, with the sector that reported
// it; a responder limited to one constituency has no Intel page. Exits non-zero on the first
// failure; a screenshot goes to $SCREENSHOTS.
//
// Env: LINDI_URL, LINDI_ADMIN, LINDI_RESPONDER, LINDI_PASSWORD, INDICATOR_VALUE, SECTOR,
// SCREENSHOTS, CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const url = process.env.LINDI_URL;
const shots = process.env.SCREENSHOTS || ".";
const step = (s) => console.log("step: " + s);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const login = async (page, user) => {
  await page.goto(url + "/console/login");
  await page.fill("input[name=user]", user);
  await page.fill("input[name=password]", process.env.LINDI_PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForURL("**/console/tickets");
};
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(15000);

  step("the admin opens the national picture");
  await login(page, process.env.LINDI_ADMIN);
  await page.click("header nav a:has-text('Intel')");
  await page.waitForURL("**/console/intel");
  const row = page.locator("table.queue tbody tr", { hasText: process.env.INDICATOR_VALUE });
  await row.first().waitFor();
  const text = await row.first().innerText();
  if (!text.includes(process.env.SECTOR)) {
    throw new Error(`the indicator's row does not name sector ${process.env.SECTOR}: ${text}`);
  }
  await page.locator("table.queue tbody tr", { hasText: "unclassified" }).first().waitFor();
  await page.screenshot({ path: shots + "/console-intel.png", fullPage: true });
  await page.click("#logout");
  await page.waitForURL("**/console/login");

  step("a responder of one constituency has no Intel page");
  await login(page, process.env.LINDI_RESPONDER);
  if ((await page.locator("header nav a:has-text('Intel')").count()) !== 0) {
    throw new Error("a responder of one constituency sees the Intel tab");
  }
  const res = await page.goto(url + "/console/intel");
  if (res.status() < 400) {
    throw new Error(`/console/intel answered ${res.status()} to a responder of one constituency`);
  }
  console.log("console intel: ok");
} finally {
  await browser.close();
}
