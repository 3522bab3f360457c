// Lindi console: login, ticket actions through the API (with the session's CSRF token),
// SLA countdowns, and a live queue. No framework, no build step.
"use strict";

const csrf = () => (document.querySelector('meta[name="csrf"]') || {}).content || "";

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": csrf() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((data.error && data.error.message) || r.statusText);
  return data;
}

function show(msg) {
  const el = document.getElementById("msg");
  if (el) el.textContent = msg;
}

// Login.
const login = document.getElementById("login");
if (login) {
  login.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(login);
    try {
      await api("POST", "/api/v1/session", { user: f.get("user"), password: f.get("password") });
      location.href = "/console/tickets";
    } catch (e) {
      show(e.message);
    }
  });
}

const logout = document.getElementById("logout");
if (logout) {
  logout.addEventListener("click", async () => {
    await api("DELETE", "/api/v1/session").catch(() => {});
    location.href = "/console/login";
  });
}

// SLA countdowns.
function fmt(ms) {
  const m = Math.round(Math.abs(ms) / 60000);
  if (m < 60) return m + "m";
  const h = Math.floor(m / 60);
  return h < 48 ? h + "h " + (m % 60) + "m" : Math.floor(h / 24) + "d";
}
function tick() {
  const now = Date.now();
  document.querySelectorAll(".sla[data-due]").forEach((el) => {
    const left = Number(el.dataset.due) / 1e6 - now;
    const label = el.dataset.label;
    el.textContent = left >= 0 ? label + " in " + fmt(left) : label + " overdue " + fmt(left);
    el.classList.toggle("overdue", left < 0);
    el.classList.toggle("soon", left >= 0 && left < 15 * 60000);
  });
}
tick();
setInterval(tick, 1000);

// The live queue: refresh the table every 15 s.
const queue = document.getElementById("queue");
if (queue) {
  setInterval(async () => {
    try {
      const r = await fetch(location.href, { credentials: "same-origin" });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.getElementById("queue");
      if (fresh) {
        queue.innerHTML = fresh.innerHTML;
        tick();
      }
    } catch (e) {
      /* keep the last table */
    }
  }, 15000);
}

// Ticket actions.
const actions = document.querySelector(".actions[data-ticket]");
if (actions) {
  const id = actions.dataset.ticket;
  const base = "/api/v1/tickets/" + id;
  const act = {
    ack: () => api("POST", base + "/ack", {}),
    assign: () => api("POST", base + "/assign", { assignee: document.getElementById("assign-to").value }),
    transition: () => {
      const body = { to: document.getElementById("transition-to").value };
      const res = document.getElementById("resolution").value;
      if (res) body.resolution = res;
      const assignee = document.getElementById("assign-to").value;
      if (assignee) body.assignee = assignee;
      return api("POST", base + "/transition", body);
    },
    tlp: () => api("POST", base + "/tlp", { tlp: document.getElementById("tlp-to").value }),
    comment: () => api("POST", base + "/comment", { body: document.getElementById("comment").value }),
  };
  document.querySelectorAll("button[data-act]").forEach((b) => {
    b.addEventListener("click", async () => {
      try {
        await act[b.dataset.act]();
        location.reload();
      } catch (e) {
        show(e.message);
      }
    });
  });
  document.querySelectorAll("input[data-task]").forEach((c) => {
    c.addEventListener("change", async () => {
      try {
        await api("POST", base + "/tasks/" + c.dataset.task + "/done", {});
        location.reload();
      } catch (e) {
        show(e.message);
      }
    });
  });
}

// Team profile: the admin's form, saved as one PUT; a new public link on request.
const profile = document.getElementById("profile");
if (profile) {
  profile.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    for (const el of profile.elements) {
      if (!el.name) continue;
      if (el.name === "members_public") body[el.name] = el.checked;
      else if (el.name === "tlp_label") body[el.name] = el.value || null;
      else if (el.dataset.kind === "keys") {
        body[el.name] = el.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
          const [key_id = "", fingerprint = "", user_id = "", url = ""] = l.split("|").map((x) => x.trim());
          return { key_id, fingerprint, user_id, url };
        });
      } else if (el.dataset.kind === "lines") {
        body[el.name] = el.value.split("\n").map((l) => l.trim()).filter(Boolean);
      } else body[el.name] = el.value;
    }
    try {
      await api("PUT", "/api/v1/profile", body);
      location.reload();
    } catch (e) {
      show(e.message);
    }
  });
}
const rotateLink = document.getElementById("rotate-link");
if (rotateLink) {
  rotateLink.addEventListener("click", async () => {
    if (!confirm("Make a new public link? The current one stops working.")) return;
    await api("POST", "/api/v1/profile/link").catch((e) => alert(e.message));
    location.reload();
  });
}

// Constituents' incident report: the form becomes one POST; the list below shows it.
const report = document.getElementById("report");
if (report) {
  report.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(report);
    const lines = (k) => (f.get(k) || "").split("\n").map((l) => l.trim()).filter(Boolean);
    const body = {
      constituency: f.get("constituency"),
      rsit_type: f.get("rsit_type"),
      what: f.get("what"),
      seen_at: f.get("seen_at"),
      affected_assets: lines("affected_assets"),
      evidence: lines("evidence"),
      contact: { name: f.get("contact_name"), email: f.get("contact_email") || "", phone: f.get("contact_phone") || "" },
      severity: f.get("severity"),
      tlp: f.get("tlp"),
    };
    try {
      const r = await api("POST", "/api/v1/reports", body);
      show("Ticket #" + r.ticket_id + " opened (" + r.state + ").");
      setTimeout(() => location.reload(), 800);
    } catch (e) {
      show(e.message);
    }
  });
}
