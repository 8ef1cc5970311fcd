// The operations console: a map and a live queue of one country's alerts, filters, and an
// alert's detail. Alert text comes from outside: it only ever goes into the page as text
// (textContent, attribute values), never as HTML.
"use strict";

(function () {
  const SEVERITIES = ["low", "medium", "high", "critical"];
  const COLOURS = { critical: "#d7263d", high: "#f46036", medium: "#f3c623", low: "#3fa7d6" };
  const M_PER_DEG_LAT = 111320;

  const alerts = new Map(); // alert_id -> {alert, row, layer, receivedAt}
  const filters = { rule: "", severity: "", tlp: "", area: "", time: "" };
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
    el("td", {}, `${(alert.evidence || []).length} (${countries.join(", ")})`));
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
    if (!alert || typeof alert.alert_id !== "string" || alerts.has(alert.alert_id)) return;
    const tr = row(alert);
    if (live) tr.classList.add("new");
    const layer = mapLayer(alert);
    const entry = { alert, row: tr, layer, receivedAt: Date.now() };
    alerts.set(alert.alert_id, entry);
    insertRow(tr, Date.parse(alert.raised_at) || 0);
    addOption("filter-rule", alert.rule_id);
    addOption("filter-tlp", alert.tlp);
    applyFilter(entry, Date.now());
    updateCounts();
    if (pendingDetail === alert.alert_id) showDetail(alert.alert_id);
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
    return true;
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
    if (alert.explanation) out.push(...explanation(alert));
    out.push(...evidence(alert), ...redactions(alert));
    return out;
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
      fetch("api/alerts").then((r) => r.json()).then((list) => {
        for (const alert of list.reverse()) addAlert(alert, false);
        document.body.setAttribute("data-loaded", "true");
      }).catch((e) => console.warn("alerts not loaded", e));
    });
    source.addEventListener("alert", (e) => {
      try { addAlert(JSON.parse(e.data), true); } catch (err) { console.warn("bad alert event", err); }
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

  function start() {
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
