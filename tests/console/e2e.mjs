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

  step("agents page: only the responder's constituency");
  await page.click("header nav a:has-text('Agents')");
  await page.waitForSelector("table.queue");
  const fleet = await page.textContent("main");
  if (!fleet.includes(process.env.AGENT_ID)) throw new Error("own agent missing");
  if (fleet.includes(process.env.OTHER_AGENT_ID)) throw new Error("another constituency's agent shown");
  await page.waitForSelector("span.badge.s-ok");
  await page.screenshot({ path: shots + "/console-agents.png", fullPage: true });

  step("agent detail page");
  await page.click("a:has-text('" + process.env.AGENT_ID + "')");
  await page.waitForSelector("figure.chart path.line");
  await page.waitForSelector("td:has-text('net')");
  await page.screenshot({ path: shots + "/console-agent.png", fullPage: true });
  const other = await page.goto(url + "/console/agents/" + process.env.OTHER_AGENT_ID);
  if (other.status() !== 404) throw new Error("another constituency's agent page: " + other.status());

  step("effectiveness page");
  await page.goto(url + "/console/effectiveness");
  await page.waitForSelector("figure.chart");
  const eff = await page.textContent("main");
  if (!/MTTA/.test(eff) || !/bank-a/.test(eff)) throw new Error("effectiveness page lacks figures");
  await page.screenshot({ path: shots + "/console-effectiveness.png", fullPage: true });

  step("log out");
  await page.click("#logout");
  await page.waitForURL("**/console/login");

  step("an admin sees both constituencies");
  await page.fill("input[name=user]", process.env.LINDI_ADMIN);
  await page.fill("input[name=password]", process.env.LINDI_PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForURL("**/console/tickets");
  await page.locator("#queue tbody tr", { hasText: "bank-b" }).first().waitFor();
  await page.screenshot({ path: shots + "/console-queue-all.png", fullPage: true });

  step("the admin writes the team profile");
  await page.click("header nav a:has-text('Team')");
  await page.waitForSelector("form#profile");
  const fields = {
    team_name: "Example National CSIRT",
    team_short_name: "EX-CSIRT",
    version: "1.4",
    last_update: "2026-12-05",
    time_zone: "Europe/Oslo (UTC+1, UTC+2 from the last Sunday of March to the last Sunday of October)",
    telephone: "+47 21 00 00 00",
    emergency_telephone: "+47 21 00 00 99 (24/7)",
    email: "cert@csirt.example",
    business_hours: "Monday to Friday, 08:00–16:00 local time",
    out_of_hours: "Call the emergency number; the duty officer answers within 15 minutes.",
    mission: "To help the banks and payment institutions of the sector prevent, detect and recover from security incidents.",
    constituency: "Banks and payment institutions licensed in the country, and their service providers.",
    authority: "Coordinates incidents in its constituency under the sector agreement; it advises and does not direct.",
    cooperation_and_disclosure: "Information is shared under TLP 2.0. Constituents are never named to third parties without consent.",
    triage: "Every report is acknowledged within one business hour and prioritised by severity and asset criticality.",
  };
  for (const [name, value] of Object.entries(fields)) {
    await page.fill("[name=" + name + "]", value);
  }
  await page.fill("[name=document_urls]", "https://csirt.example/rfc2350.txt");
  await page.fill("[name=pgp_keys]", "0x5A3B1C9D | 8F1E 2A7C 9B3D 4E6F 0A1B  2C3D 4E5F 6A7B 5A3B 1C9D | cert@csirt.example | https://csirt.example/cert.asc");
  await page.selectOption("[name=tlp_label]", "TLP:CLEAR");
  await page.click("form#profile button[type=submit]");
  await page.waitForSelector("#public-link, #msg:not(:empty)");
  const refused = await page.textContent("#msg").catch(() => "");
  if (refused) throw new Error("saving the profile was refused: " + refused);
  await page.waitForSelector("div.profile h2:has-text('Contact Information')");
  await page.screenshot({ path: shots + "/console-team.png", fullPage: true });
  const link = await page.getAttribute("#public-link", "href");

  step("the public link needs no account");
  const anon = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  const pub = await anon.newPage();
  const res = await pub.goto(url + link);
  if (res.status() !== 200) throw new Error("public profile: " + res.status());
  await pub.waitForSelector("h1:has-text('Example National CSIRT')");
  const doc = await pub.textContent("main");
  for (const h of ["Document Information", "Facsimile Number", "None available.", "Incident Reporting Forms", "Disclaimers"]) {
    if (!doc.includes(h)) throw new Error("public profile lacks " + h);
  }
  await pub.screenshot({ path: shots + "/profile-public.png", fullPage: true });
  await anon.close();

  step("a responder reads the profile but gets no form");
  await page.click("#logout");
  await page.waitForURL("**/console/login");
  await page.fill("input[name=user]", process.env.LINDI_USER);
  await page.fill("input[name=password]", process.env.LINDI_PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForURL("**/console/tickets");
  await page.goto(url + "/console/profile");
  await page.waitForSelector("div.profile h1:has-text('Example National CSIRT')");
  if ((await page.locator("form#profile").count()) !== 0) throw new Error("a responder got the edit form");

  step("an incident report through the form: refused without evidence, then a ticket");
  await page.click("header nav a:has-text('Report')");
  await page.waitForURL("**/console/report");
  if ((await page.locator("header nav a:has-text('Intel')").count()) !== 0) throw new Error("a bank-a responder is offered the national picture");
  await page.selectOption("form#report select[name=rsit_type]", "fraud/phishing");
  await page.fill("form#report textarea[name=what]", "Customers got mails linking to a fake login page");
  await page.fill("form#report input[name=seen_at]", "2026-12-05T03:00:00Z");
  await page.fill("form#report input[name=contact_name]", "Ana");
  await page.fill("form#report input[name=contact_email]", "soc@bank-a.example");
  await page.click("form#report button[type=submit]");
  await page.waitForSelector("#msg:has-text('evidence:')");
  await page.fill("form#report textarea[name=evidence]", "https://login-bank.example/");
  await page.click("form#report button[type=submit]");
  await page.waitForSelector("#msg:has-text('Ticket #')");
  await page.waitForSelector("table.queue td:has-text('fraud/phishing')");
  await page.screenshot({ path: shots + "/console-report.png", fullPage: true });
  await page.click("#logout");
  await page.waitForURL("**/console/login");
  console.log("console e2e: ok");
} finally {
  await browser.close();
}
