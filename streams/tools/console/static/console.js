// The operations console: a map and a live queue of one country's alerts, filters, and an
// alert's detail. Alert text comes from outside: it only ever goes into the page as text
// (textContent, attribute values), never as HTML.
"use strict";

(function () {
  const SEVERITIES = ["low", "medium", "high", "critical"];
  const COLOURS = { critical: "#d7263d", high: "#f46036", medium: "#f3c623", low: "#3fa7d6" };
  const M_PER_DEG_LAT = 111320;

  const alerts = new Map(); // alert_id -> {alert, row, layer, receivedAt}
  const filters = { rule: "", severity: "", tlp: "", area: "", time: "", status: "", assignee: "", taskforce: "" };
  const triage = new Map(); // alert_id -> {own, partners}: the country's triage, the partners' beside
  let session = null; // {user, country, role, csrf, task_forces} once logged in (with accounts)
  const STATUS_TEXT = { new: "new", acknowledged: "acknowledged", in_progress: "in progress", closed: "closed" };
  const REASON_TEXT = { false_positive: "false positive", duplicate: "duplicate",
    true_positive: "true positive", benign_positive: "benign positive",
    automated_closure: "automated closure", other: "other" };
  let pendingDetail = null; // an id from the hash not received (yet)
  let map = null;
  let alertLayer = null;

  // --- small DOM helpers: children given as strings become text nodes -------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function severityOf(alert) {
    return SEVERITIES.includes(alert.severity) ? alert.severity : "low";
  }

  function tlpClass(tlp) {
    const known = { "TLP:RED": "red", "TLP:AMBER+STRICT": "amber", "TLP:AMBER": "amber",
      "TLP:GREEN": "green", "TLP:CLEAR": "clear" };
    return "tlp tlp-" + (known[tlp] || "unknown");
  }

  function time(iso) {
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19) + "Z";
  }

  function shortTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toISOString().slice(11, 19);
  }

  function valueText(value) {
    if (Array.isArray(value)) return value.map(valueText).join(", ");
    if (value && typeof value === "object" && typeof value.lat === "number" && typeof value.lon === "number") {
      return `${value.lat}, ${value.lon}` + (value.precision_m ? ` (${value.precision_m} m cell)` : "");
    }
    if (value !== null && typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  // The value at a path like `evidence[0].fields.plate` in an alert (undefined if absent).
  function lookup(obj, path) {
    if (!path) return undefined;
    let cur = obj;
    for (const part of String(path).match(/[^.[\]]+/g) || []) {
      if (cur === null || cur === undefined) return undefined;
      cur = /^\d+$/.test(part) && Array.isArray(cur) ? cur[Number(part)] : cur[part];
    }
    return cur;
  }

  // --- the map ----------------------------------------------------------------------------

  function setupMap() {
    map = L.map("map", { zoomSnap: 0.25, worldCopyJump: false, attributionControl: true });
    map.attributionControl.setPrefix(false);
    map.attributionControl.addAttribution("Leaflet · © OpenStreetMap contributors (ODbL) · US Census · Natural Earth");
    map.fitBounds([[25.3, -118.5], [34.5, -96.5]]);
    alertLayer = L.featureGroup().addTo(map);
    fetch("api/map").then((r) => r.json()).then((geo) => {
      // The areas of responsibility: the same file that decides each alert's jurisdiction.
      const areas = L.geoJSON(geo, {
        filter: (f) => f.properties && f.properties.kind === "area",
        style: (f) => ({
          color: f.properties.country === "US" ? "#5d7b99" : "#7c8f62",
          weight: 1, fillColor: f.properties.country === "US" ? "#1c3350" : "#2a3a22",
          fillOpacity: 0.55, className: "area-outline",
        }),
        interactive: false,
      }).addTo(map);
      const options = [];
      areas.eachLayer((layer) => {
        const p = layer.feature.properties;
        const el_ = layer.getElement && layer.getElement();
        if (el_) el_.setAttribute("data-area", p.id);
        options.push([p.id, `${p.name} (${p.country})`]);
      });
      const select = document.getElementById("filter-area");
      options.sort((a, b) => a[1].localeCompare(b[1]));
      select.replaceChildren(select.options[0], ...options.map(([v, t]) => el("option", { value: v }, t)));
      select.value = filters.area;
      L.geoJSON(geo, {
        filter: (f) => f.properties && f.properties.kind === "border",
        style: { color: "#e4572e", weight: 2.5, className: "border-line" },
        interactive: false,
      }).addTo(map);
      alertLayer.bringToFront();
      document.getElementById("map").setAttribute("data-loaded", "true");
    }).catch((e) => console.warn("map outlines not loaded", e));
  }

  function mapLayer(alert) {
    const loc = alert.location || {};
    if (typeof loc.lat !== "number" || typeof loc.lon !== "number") return null;
    const sev = severityOf(alert);
    const id = alert.alert_id;
    const group = L.featureGroup();
    const hooks = (layer, kind) => layer.on("add", () => {
      const node = layer.getElement();
      if (node) { node.setAttribute("data-alert-id", id); node.setAttribute("data-kind", kind); }
    });
    if (typeof loc.precision_m === "number" && loc.precision_m > 0) {
      const half = loc.precision_m / 2;
      const dLat = half / M_PER_DEG_LAT;
      const dLon = half / (M_PER_DEG_LAT * Math.cos((loc.lat * Math.PI) / 180));
      const cell = L.rectangle([[loc.lat - dLat, loc.lon - dLon], [loc.lat + dLat, loc.lon + dLon]], {
        color: COLOURS[sev], weight: 1.5, dashArray: "4 3", fillOpacity: 0.25,
        className: "alert-cell sev-" + sev,
      });
      hooks(cell, "cell");
      group.addLayer(cell);
    }
    const marker = L.circleMarker([loc.lat, loc.lon], {
      radius: 7, color: "#ffffff", weight: 1.5, fillColor: COLOURS[sev], fillOpacity: 0.9,
      className: "alert-marker sev-" + sev,
    });
    hooks(marker, "marker");
    group.addLayer(marker);
    const tip = el("div", {}, el("strong", {}, alert.title || alert.rule_id || ""),
      el("br"), `${sev} · ${alert.tlp || ""} · ${shortTime(alert.raised_at)}Z`);
    group.bindTooltip(tip, { direction: "top", offset: [0, -6] });
    group.on("click", () => showAlert(id));
    return group;
  }

  // --- the queue --------------------------------------------------------------------------

  function row(alert) {
    const sev = severityOf(alert);
    const countries = [...new Set((alert.evidence || []).map((e) => e.source && e.source.country))];
    const tr = el("tr", {
      "data-alert-id": alert.alert_id, "data-rule": alert.rule_id, "data-severity": sev,
      "data-tlp": alert.tlp, "data-raised-at": Date.parse(alert.raised_at) || 0,
      "data-received-at": Date.now(), tabindex: 0,
    },
    el("td", { class: "mono", title: time(alert.raised_at) }, shortTime(alert.raised_at)),
    el("td", {}, el("span", { class: "badge sev-" + sev }, sev)),
    el("td", { class: "rule", title: alert.title || "" }, alert.rule_id),
    el("td", {}, el("span", { class: tlpClass(alert.tlp) }, alert.tlp)),
    el("td", {}, `${(alert.evidence || []).length} (${countries.join(", ")})`,
      alert.change === "withdrawn" ? el("span", { class: "badge withdrawn" }, "withdrawn")
        : (alert.version || 1) > 1 ? el("span", { class: "badge updated" }, `v${alert.version}`) : ""),
    el("td", { class: "triage-cell", hidden: !session }, "new"));
    tr.setAttribute("data-change", alert.change || "raised");
    tr.setAttribute("data-version", alert.version || 1);
    tr.addEventListener("click", () => showAlert(alert.alert_id));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") showAlert(alert.alert_id); });
    return tr;
  }

  function insertRow(tr, raisedAt) {
    const body = document.getElementById("queue-body");
    for (const other of body.children) {
      if (Number(other.getAttribute("data-raised-at")) < raisedAt) {
        body.insertBefore(tr, other);
        return;
      }
    }
    body.append(tr);
  }

  function addAlert(alert, live) {
    if (!alert || typeof alert.alert_id !== "string") return;
    const held = alerts.get(alert.alert_id);
    if (held) {
      if ((alert.version || 1) <= (held.alert.version || 1)) return;
      held.row.remove();  // a new version: updated in place, with its history
      if (held.layer && alertLayer.hasLayer(held.layer)) alertLayer.removeLayer(held.layer);
      alerts.delete(alert.alert_id);
    }
    const tr = row(alert);
    if (live) tr.classList.add("new");
    if (alert.change && alert.change !== "raised") tr.classList.add(alert.change);
    const layer = mapLayer(alert);
    const entry = { alert, row: tr, layer, receivedAt: Date.now() };
    alerts.set(alert.alert_id, entry);
    paintTriage(entry);
    insertRow(tr, Date.parse(alert.raised_at) || 0);
    addOption("filter-rule", alert.rule_id);
    addOption("filter-tlp", alert.tlp);
    applyFilter(entry, Date.now());
    updateCounts();
    const panel = document.getElementById("detail");
    const showing = !panel.hidden && panel.getAttribute("data-alert-id") === alert.alert_id;
    if (pendingDetail === alert.alert_id || showing) showDetail(alert.alert_id);
  }

  function addOption(selectId, value) {
    if (typeof value !== "string" || !value) return;
    const select = document.getElementById(selectId);
    if ([...select.options].some((o) => o.value === value)) return;
    const options = [...select.options].slice(1).map((o) => o.value).concat(value).sort();
    const current = select.value;
    select.replaceChildren(select.options[0], ...options.map((v) => el("option", { value: v }, v)));
    select.value = current;
  }

  function jurisdictionText(j) {
    if (!j) return "not stated";
    const area = j.area_name ? `${j.area_name} (${j.country})` : `outside every area (${j.country})`;
    return `${area}, areas version ${j.areas_version}`;
  }

  // --- filters ----------------------------------------------------------------------------

  function matches(alert, now) {
    if (filters.rule && alert.rule_id !== filters.rule) return false;
    if (filters.tlp && alert.tlp !== filters.tlp) return false;
    if (filters.area && !(alert.jurisdiction && alert.jurisdiction.area_id === filters.area)) return false;
    if (filters.severity &&
        SEVERITIES.indexOf(severityOf(alert)) < SEVERITIES.indexOf(filters.severity)) return false;
    if (filters.time) {
      const raised = Date.parse(alert.raised_at);
      if (!(raised >= now - Number(filters.time) * 1000)) return false;
    }
    if (session && (filters.status || filters.assignee || filters.taskforce)) {
      const own = ownState(alert.alert_id);
      if (filters.status === "open" ? own.status === "closed"
        : (filters.status && own.status !== filters.status)) return false;
      const who = own.assignee;
      if (filters.assignee === "@me" && !(who && who.kind === "person" && who.name === session.user)) return false;
      if (filters.assignee === "@none" && who) return false;
      if (filters.taskforce) {
        if (!who || who.kind !== "task_force") return false;
        const mine = session.task_forces.filter((f) => f.member).map((f) => f.name);
        if (filters.taskforce === "@mine" ? !mine.includes(who.name) : who.name !== filters.taskforce) return false;
      }
    }
    return true;
  }

  // --- triage -------------------------------------------------------------------------------

  function ownState(id) {
    const view = triage.get(id);
    return (view && view.own) || { alert_id: id, revision: 0, status: "new", reason: null,
      assignee: null, notes: [] };
  }

  function stateText(state) {
    let text = STATUS_TEXT[state.status] || "not shared";
    if (state.reason) text += ", " + (REASON_TEXT[state.reason] || state.reason);
    if (state.assignee) {
      text += state.assignee.kind === "task_force" ? ` · task force ${state.assignee.name}`
        : ` · ${state.assignee.name}`;
    }
    return text;
  }

  function paintTriage(entry) {
    const view = triage.get(entry.alert.alert_id);
    if (!view) return;
    entry.row.querySelector(".triage-cell").textContent = stateText(view.own);
    entry.row.setAttribute("data-status", view.own.status);
  }

  function takeTriage(view) {
    if (!view || typeof view.alert_id !== "string") return;
    triage.set(view.alert_id, view);
    const entry = alerts.get(view.alert_id);
    if (entry) {
      paintTriage(entry);
      applyFilter(entry, Date.now());
      updateCounts();
    }
    const panel = document.getElementById("detail");
    if (!panel.hidden && panel.getAttribute("data-alert-id") === view.alert_id && entry) {
      const old = document.getElementById("detail-triage");
      if (old) old.replaceWith(triageSection(entry.alert));
    }
  }

  function triageSection(alert) {
    const id = alert.alert_id;
    const view = triage.get(id) || { own: ownState(id), partners: {} };
    const own = view.own;
    const section = el("section", { id: "detail-triage", "data-revision": own.revision,
      "data-status": own.status },
    el("h3", {}, "Triage"),
    el("p", { class: "triage-state", id: "triage-own" },
      el("span", { class: "cc" }, `${session.country}:`), " ", stateText(own)));
    for (const [cc, partner] of Object.entries(view.partners || {})) {
      section.append(el("p", { class: "triage-state partner", id: "triage-partner-" + cc },
        el("span", { class: "cc" }, `${cc}:`), " ", stateText(partner)));
    }
    const notes = el("ul", { class: "triage-notes", id: "triage-notes" });
    for (const n of own.notes || []) {
      notes.append(el("li", { class: "note own", "data-shareable": n.shareable },
        el("span", { class: "who" }, `${n.author.user} (${n.author.country}, ${n.author.role})`
          + (n.shareable ? " · shared" : " · not shared") + ": "), n.text));
    }
    for (const [cc, partner] of Object.entries(view.partners || {})) {
      for (const n of partner.notes || []) {
        notes.append(el("li", { class: "note partner", "data-country": cc },
          el("span", { class: "who" }, `${cc}: `), n.text));
      }
    }
    section.append(notes);
    section.append(triageActions(alert, own));
    section.append(el("p", { id: "triage-error", class: "error" }));
    return section;
  }

  function allowedNow(own) {
    const can = new Set(session.actions);
    const when = { acknowledge: ["new"], start: ["new", "acknowledged"],
      close: ["new", "acknowledged", "in_progress"], reopen: ["closed"],
      assign: ["new", "acknowledged", "in_progress"], note: ["new", "acknowledged", "in_progress", "closed"] };
    return Object.keys(when).filter((a) => can.has(a) && when[a].includes(own.status));
  }

  function triageActions(alert, own) {
    const box = el("div", { id: "triage-actions" });
    const allowed = allowedNow(own);
    const post = (body) => act(alert.alert_id, { revision: own.revision, ...body });
    for (const [name, label] of [["acknowledge", "Acknowledge"], ["start", "Start"], ["reopen", "Reopen"]]) {
      if (!allowed.includes(name)) continue;
      const b = el("button", { type: "button", "data-action": name }, label);
      b.addEventListener("click", () => post({ action: name }));
      box.append(b);
    }
    if (allowed.includes("assign")) {
      const select = el("select", { id: "triage-assignee" },
        ...(session.people || [session.user]).map((name) => el("option", { value: "person:" + name },
          name === session.user ? `me (${name})` : name)),
        ...session.task_forces.filter((f) => !f.rules || f.rules.includes(alert.rule_id))
          .map((f) => el("option", { value: "task_force:" + f.name },
          `task force ${f.name}` + (f.title ? ` (${f.title})` : ""))));
      const b = el("button", { type: "button", "data-action": "assign" }, "Assign");
      b.addEventListener("click", () => {
        const [kind, ...rest] = select.value.split(":");
        post({ action: "assign", assignee: { kind, name: rest.join(":") } });
      });
      box.append(select, b);
    }
    if (allowed.includes("close")) {
      const select = el("select", { id: "triage-reason" },
        ...Object.entries(REASON_TEXT).filter(([k]) => k !== "automated_closure")
          .map(([k, v]) => el("option", { value: k }, v)));
      const b = el("button", { type: "button", "data-action": "close" }, "Close");
      b.addEventListener("click", () => post({ action: "close", reason: select.value }));
      box.append(select, b);
    }
    if (allowed.includes("note")) {
      const text = el("textarea", { id: "triage-note", maxlength: 4000, placeholder: "note" });
      const share = el("input", { type: "checkbox", id: "triage-shareable" });
      const b = el("button", { type: "button", "data-action": "note" }, "Add note");
      b.addEventListener("click", () => post({ action: "note", note: text.value, shareable: share.checked }));
      box.append(text, el("label", {}, share, ` shareable with the partner`), b);
    }
    return box;
  }

  function act(id, body) {
    return fetch("api/triage/" + encodeURIComponent(id), {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": session.csrf },
      body: JSON.stringify(body),
    }).then((r) => r.json().then((doc) => ({ status: r.status, doc }))).then(({ status, doc }) => {
      if (status === 401) return showLogin(doc.error);
      if (doc.own) takeTriage(doc);
      else if (doc.current) takeTriage({ ...(triage.get(id) || { partners: {} }), alert_id: id, own: doc.current });
      const error = document.getElementById("triage-error");
      if (error) error.textContent = status === 200 ? "" : doc.error;
    });
  }

  function applyFilter(entry, now) {
    const shown = matches(entry.alert, now);
    entry.row.hidden = !shown;
    if (entry.layer) {
      if (shown && !alertLayer.hasLayer(entry.layer)) alertLayer.addLayer(entry.layer);
      if (!shown && alertLayer.hasLayer(entry.layer)) alertLayer.removeLayer(entry.layer);
    }
  }

  function applyFilters() {
    const now = Date.now();
    for (const entry of alerts.values()) applyFilter(entry, now);
    updateCounts();
  }

  function updateCounts() {
    let shown = 0;
    for (const entry of alerts.values()) if (!entry.row.hidden) shown += 1;
    document.getElementById("count").textContent = `${alerts.size} alerts`;
    document.getElementById("shown").textContent = `${shown} shown`;
    document.getElementById("shown").setAttribute("data-shown", shown);
    document.getElementById("queue-empty").hidden = alerts.size > 0;
  }

  function setupFilters() {
    for (const name of Object.keys(filters)) {
      const select = document.getElementById("filter-" + name);
      select.addEventListener("change", () => { filters[name] = select.value; applyFilters(); });
      filters[name] = select.value;
    }
    setInterval(() => { if (filters.time) applyFilters(); }, 10000);
  }

  // --- an alert's detail ------------------------------------------------------------------

  function showAlert(id) {
    const hash = "#alert=" + encodeURIComponent(id);
    if (location.hash !== hash) location.hash = hash; // hashchange shows it
    else showDetail(id);
  }

  function fromHash() {
    const m = /^#alert=(.+)$/.exec(location.hash);
    if (m) showDetail(decodeURIComponent(m[1]));
    else closeDetail();
  }

  function closeDetail() {
    pendingDetail = null;
    document.getElementById("detail").hidden = true;
    document.getElementById("detail").removeAttribute("data-alert-id");
    for (const tr of document.querySelectorAll("#queue-body tr.selected")) tr.classList.remove("selected");
  }

  function showDetail(id) {
    const panel = document.getElementById("detail");
    const body = document.getElementById("detail-body");
    const entry = alerts.get(id);
    panel.hidden = false;
    for (const tr of document.querySelectorAll("#queue-body tr.selected")) tr.classList.remove("selected");
    if (!entry && session && pendingDetail !== id) {
      // An alert older than the console's span: load it by id.
      fetch("api/alert/" + encodeURIComponent(id)).then((r) => (r.ok ? r.json() : null))
        .then((alert) => { if (alert) addAlert(alert, false); })
        .catch((e) => console.warn("alert not loaded", e));
    }
    if (!entry) {
      pendingDetail = id;
      panel.setAttribute("data-alert-id", id);
      panel.setAttribute("data-state", "pending");
      body.replaceChildren(el("p", { class: "muted" },
        `Alert ${id} is not in this console (yet): it shows here when it arrives.`));
      return;
    }
    pendingDetail = null;
    panel.setAttribute("data-alert-id", id);
    panel.setAttribute("data-state", "shown");
    entry.row.classList.add("selected");
    body.replaceChildren(...detail(entry.alert));
    if (session) body.append(triageSection(entry.alert));
    document.getElementById("detail-zoom").addEventListener("click", () => {
      const loc = entry.alert.location;
      map.setView([loc.lat, loc.lon], Math.max(map.getZoom(), 12));
    });
    if (entry.layer && alertLayer.hasLayer(entry.layer)) {
      const loc = entry.alert.location;
      if (!map.getBounds().contains([loc.lat, loc.lon])) map.panTo([loc.lat, loc.lon]);
    }
  }

  function detail(alert) {
    const sev = severityOf(alert);
    const loc = alert.location || {};
    const where = `${loc.lat}, ${loc.lon}` +
      (loc.precision_m ? ` (generalised: centre of a ${loc.precision_m} m grid cell)` : "");
    const policy = alert.policy || {};
    const out = [
      el("h2", {}, el("span", { class: "badge sev-" + sev }, sev), " ", alert.title || alert.rule_id),
      el("dl", { id: "detail-summary" },
        el("dt", {}, "rule"), el("dd", {}, alert.rule_id),
        el("dt", {}, "TLP"), el("dd", { id: "detail-tlp" }, el("span", { class: tlpClass(alert.tlp) }, alert.tlp)),
        el("dt", {}, "score"), el("dd", {}, alert.score),
        el("dt", {}, "raised"), el("dd", {}, time(alert.raised_at)),
        el("dt", {}, "evidence time"), el("dd", {}, `${time(alert.first_seen)} – ${time(alert.last_seen)}`),
        el("dt", {}, "location"), el("dd", { id: "detail-location" }, where, " ",
          el("button", { type: "button", id: "detail-zoom", class: "link" }, "zoom to")),
        el("dt", {}, "area"), el("dd", { id: "detail-area" }, jurisdictionText(alert.jurisdiction)),
        el("dt", {}, "recipients"), el("dd", {}, (alert.recipients || []).join(", ")),
        el("dt", {}, "policy"), el("dd", { id: "detail-policy" },
          `${policy.id} version ${policy.version}`, el("br"),
          el("span", { class: "mono muted" }, `sha256 ${policy.sha256}`)),
        el("dt", {}, "alert id"), el("dd", { class: "mono" }, alert.alert_id)),
    ];
    if (alert.change === "withdrawn") {
      const r = alert.revision || {};
      out.splice(1, 0, el("p", { id: "detail-withdrawn", class: "withdrawn" },
        "Withdrawn: ", r.reason || "", r.superseded_by ? ` (superseded by ${r.superseded_by})` : ""));
    }
    out.push(...history(alert));
    if (alert.explanation) out.push(...explanation(alert));
    out.push(...evidence(alert), ...redactions(alert));
    return out;
  }

  function history(alert) {
    const steps = alert.history || [];
    if (steps.length < 2 && !alert.revision) return [];
    return [el("h3", {}, "Versions"), el("ol", { id: "detail-history" }, ...steps.map((v) => {
      const r = v.revision || {};
      const records = (r.records || []).join(", ");
      return el("li", { "data-change": v.change },
        `v${v.version} ${v.change} ${shortTime(v.at)}Z, ${v.evidence} events`,
        r.reason ? ` — ${r.reason}` : "", records ? ` (${records})` : "",
        r.superseded_by ? ` → ${r.superseded_by}` : "");
    }))];
  }

  function explanation(alert) {
    const x = alert.explanation;
    const keyValue = lookup(alert, x.key_path);
    const rows = [
      el("dt", {}, "window"), el("dd", {}, `${time(x.window_start)} – ${time(x.window_end)}`),
    ];
    if (x.key) {
      rows.push(el("dt", {}, "key"), el("dd", { id: "detail-key" }, x.key,
        keyValue === undefined ? "" : el("span", { class: "field-value" }, " = " + valueText(keyValue)),
        x.key_path ? el("span", { class: "muted" }, ` (${x.key_path})`) : ""));
    }
    if (x.absence_checked_until) {
      rows.push(el("dt", {}, "absence checked until"), el("dd", {}, time(x.absence_checked_until)));
    }
    return [el("section", { id: "detail-explanation" },
      el("h3", {}, "Why it fired"),
      el("p", {}, x.summary || ""),
      el("dl", {}, rows),
      el("ul", { id: "detail-conditions" }, (x.conditions || []).map((c) => el("li", {}, c))))];
  }

  function evidence(alert) {
    const byPath = new Map((alert.redactions || []).map((r) => [r.path, r]));
    const reasons = new Map(((alert.explanation && alert.explanation.evidence) || [])
      .map((r) => [r.event_id, r]));
    const items = (alert.evidence || []).map((ev, i) => {
      const src = ev.source || {};
      const fields = Object.entries(ev.fields || {}).map(([name, value]) => {
        const red = byPath.get(`evidence[${i}].fields.${name}`);
        return el("tr", { "data-field": name },
          el("td", { class: "field-name" }, name),
          el("td", { class: "field-value" }, valueText(value)),
          el("td", {}, red ? el("span", { class: "action action-" + red.action }, red.action) : ""));
      });
      const why = reasons.get(ev.event_id);
      return el("li", { class: "ev", "data-event-id": ev.event_id, "data-index": i },
        el("div", { class: "ev-head" },
          el("span", { class: "ev-type" }, ev.event_type),
          el("span", {}, time(ev.occurred_at)),
          el("span", { class: "ev-source" }, `${src.agency} (${src.country})`),
          el("span", { class: "mono muted" }, ev.event_id)),
        fields.length ? el("table", {}, el("tbody", {}, fields)) : el("p", { class: "muted" }, "no fields released"),
        why ? el("ul", { class: "why" },
          el("li", {}, el("strong", {}, why.role)), (why.met || []).map((m) => el("li", {}, m))) : "");
    });
    return [el("h3", {}, `Evidence (${items.length})`), el("ul", { id: "detail-evidence" }, items)];
  }

  function redactions(alert) {
    const list = alert.redactions || [];
    if (!list.length) {
      return [el("h3", {}, "Redactions"),
        el("p", { id: "detail-redactions", class: "muted" }, "Every field released as is.")];
    }
    return [el("h3", {}, `Redactions (${list.length})`),
      el("table", { id: "detail-redactions" },
        el("thead", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "action"), el("th", {}, "policy rule"))),
        el("tbody", {}, list.map((r) => el("tr", { "data-path": r.path, "data-action": r.action },
          el("td", { class: "mono" }, r.path),
          el("td", {}, el("span", { class: "action action-" + r.action }, r.action)),
          el("td", {}, r.policy_rule)))))];
  }

  // --- live ---------------------------------------------------------------------------------

  function setConn(state, text) {
    const node = document.getElementById("conn");
    node.setAttribute("data-state", state);
    node.textContent = text;
  }

  function connect() {
    const source = new EventSource("api/stream");
    source.addEventListener("open", () => {
      setConn("live", "live");
      // Alerts held before this connection (or missed while it was down); repeats are ignored.
      const views = session ? fetch("api/triage").then((r) => r.json()) : Promise.resolve({});
      views.then((all) => {
        for (const view of Object.values(all)) triage.set(view.alert_id, view);
        return fetch("api/alerts").then((r) => r.json());
      }).then((list) => {
        for (const alert of list.reverse()) addAlert(alert, false);
        for (const view of triage.values()) takeTriage(view);
        document.body.setAttribute("data-loaded", "true");
      }).catch((e) => console.warn("alerts not loaded", e));
    });
    source.addEventListener("alert", (e) => {
      try { addAlert(JSON.parse(e.data), true); } catch (err) { console.warn("bad alert event", err); }
    });
    source.addEventListener("triage", (e) => {
      try { takeTriage(JSON.parse(e.data)); } catch (err) { console.warn("bad triage event", err); }
    });
    source.addEventListener("ping", (e) => {
      try {
        const status = JSON.parse(e.data);
        if (status.state !== "live") setConn("live", `live (reader: ${status.state})`);
        else setConn("live", "live");
        document.getElementById("conn").title = status.error || "";
      } catch (err) { /* a heartbeat needs no body */ }
    });
    source.addEventListener("error", () => setConn("reconnecting", "reconnecting…"));
  }

  // --- accounts -----------------------------------------------------------------------------

  function showLogin(error) {
    session = null;
    document.getElementById("login-form").hidden = false;
    document.getElementById("whoami").hidden = true;
    document.getElementById("logout").hidden = true;
    document.getElementById("login-error").textContent = error || "";
    document.body.setAttribute("data-session", "none");
  }

  function loggedIn(doc) {
    session = doc;
    document.getElementById("login-form").hidden = true;
    const who = document.getElementById("whoami");
    who.hidden = false;
    who.textContent = `${doc.user} (${doc.country}, ${doc.role})`;
    document.getElementById("logout").hidden = false;
    for (const node of document.querySelectorAll(".triage-filters, .triage-col")) node.hidden = false;
    for (const f of doc.task_forces) addOption("filter-taskforce", f.name);
    document.body.setAttribute("data-session", doc.role);
  }

  function setupAccount(then) {
    document.getElementById("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const user = document.getElementById("login-user").value;
      const password = document.getElementById("login-password").value;
      fetch("api/login", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user, password }) })
        .then((r) => r.json().then((doc) => ({ ok: r.ok, doc })))
        .then(({ ok, doc }) => {
          if (!ok) return showLogin(doc.error);
          document.getElementById("login-password").value = "";
          loggedIn(doc);
          then();
        });
    });
    document.getElementById("logout").addEventListener("click", () => {
      fetch("api/logout", { method: "POST" }).then(() => location.reload());
    });
    fetch("api/session").then((r) => r.json().then((doc) => ({ status: r.status, doc })))
      .then(({ status, doc }) => {
        if (status === 200 && doc.accounts === false) return then();
        if (status === 200 && doc.session) { loggedIn(doc); return then(); }
        showLogin("");
      }).catch((e) => console.warn("session not loaded", e));
  }

  function start() {
    setupAccount(begin);
  }

  let begun = false;
  function begin() {
    if (begun) return;
    begun = true;
    fetch("api/info").then((r) => r.json()).then((info) => {
      document.getElementById("country").textContent = info.country;
      document.getElementById("topic").textContent = info.topic;
      document.title = `${info.country} · border fusion console`;
    }).catch((e) => console.warn("info not loaded", e));
    setupMap();
    setupFilters();
    document.getElementById("detail-close").addEventListener("click", () => {
      history.replaceState(null, "", location.pathname + location.search);
      closeDetail();
    });
    window.addEventListener("hashchange", fromHash);
    fromHash();
    updateCounts();
    connect();
  }

  start();
})();
