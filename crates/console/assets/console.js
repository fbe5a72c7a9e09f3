// The Tidewater console: one page, three views (#overview, #topics, #groups), reading the JSON
// API under /api/ of the admin listener it was served from. Live views poll; history for the
// charts is kept here, in the page, not on the server.
"use strict";

const POLL_MS = 1000;
const GROUPS_POLL_MS = 2000;
const CHART_WINDOW_MS = 120000;
const HISTORY_POINTS_MAX = 600;

let stopCurrentView = () => {};

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  const text = await response.text();
  let body;
  try { body = JSON.parse(text); } catch (error) { body = { error: text }; }
  if (!response.ok) throw new Error(body.error || `${response.status}`);
  return body;
}

function page() { return document.getElementById("page"); }

function showError(element, error) {
  element.innerHTML = `<div class="error">${escapeHtml(error.message || error)}</div>`;
}

function pushPoint(points, time, value) {
  points.push([time, value]);
  if (points.length > HISTORY_POINTS_MAX) points.shift();
}

// Repeats `tick` every `ms` until the view changes.
function every(ms, tick) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    if (stopped) return;
    try { await tick(); } finally { if (!stopped) timer = setTimeout(run, ms); }
  };
  run();
  return () => { stopped = true; clearTimeout(timer); };
}

// ---------------------------------------------------------------- overview

const overviewHistory = { last: null, produceRecords: [], produceBytes: [], fetchBytes: [], kafka: [], mqtt: [], devices: [] };

function renderOverview() {
  page().innerHTML = `
    <h1>Overview</h1>
    <div class="cards">
      <div class="card"><h2>Produce (records/s)</h2><svg class="chart" id="chart-produce-records"></svg><div class="legend"></div></div>
      <div class="card"><h2>Throughput (bytes/s)</h2><svg class="chart" id="chart-throughput"></svg><div class="legend"></div></div>
      <div class="card"><h2>Connections and devices online</h2><svg class="chart" id="chart-connections"></svg><div class="legend"></div></div>
      <div class="card"><h2>Health</h2><table id="health"><tbody></tbody></table></div>
    </div>`;
  return every(POLL_MS, async () => {
    const [overview, live, ready] = await Promise.all([
      api("/api/overview").catch((error) => ({ error: error.message })),
      fetch("/health/live").then(async (response) => [response.status, await response.text()]).catch((error) => [0, error.message]),
      fetch("/health/ready").then(async (response) => [response.status, await response.text()]).catch((error) => [0, error.message]),
    ]);
    const health = document.querySelector("#health tbody");
    if (!health) return;
    const row = (name, ok, detail) => `<tr><td>${name}</td><td class="${ok ? "ok" : "bad"}">${ok ? "ok" : "not ok"}</td><td class="muted">${escapeHtml(detail)}</td></tr>`;
    let rows = row("process", live[0] === 200, live[1].trim()) + row("ready", ready[0] === 200, ready[1].trim());
    if (overview.error) {
      rows += row("console API", false, overview.error);
      health.innerHTML = rows;
      return;
    }
    rows += row("Kafka cluster", overview.cluster.ok, overview.cluster.ok ? `${overview.cluster.brokers} broker(s) answer` : overview.cluster.error);
    const totals = overview.totals;
    if (totals.tidewater_mqtt_connections !== null) rows += row("gateway", true, `${totals.tidewater_mqtt_connections} MQTT connection(s)`);
    health.innerHTML = rows;
    const time = overview.time_ms;
    const last = overviewHistory.last;
    if (last && time > last.time) {
      const seconds = (time - last.time) / 1000;
      const rate = (name) => Math.max(0, ((totals[name] || 0) - (last.totals[name] || 0)) / seconds);
      pushPoint(overviewHistory.produceRecords, time, rate("tidewater_topic_records_produced_total"));
      pushPoint(overviewHistory.produceBytes, time, rate("tidewater_topic_bytes_produced_total"));
      pushPoint(overviewHistory.fetchBytes, time, rate("tidewater_topic_bytes_fetched_total"));
    }
    pushPoint(overviewHistory.kafka, time, totals.tidewater_kafka_connections || 0);
    pushPoint(overviewHistory.mqtt, time, totals.tidewater_mqtt_connections || 0);
    pushPoint(overviewHistory.devices, time, totals.tidewater_devices_connected || 0);
    overviewHistory.last = { time, totals };
    drawLineChart(document.getElementById("chart-produce-records"), [{ name: "records produced/s", points: overviewHistory.produceRecords }], CHART_WINDOW_MS);
    drawLineChart(document.getElementById("chart-throughput"), [
      { name: "produced bytes/s", points: overviewHistory.produceBytes },
      { name: "fetched bytes/s", points: overviewHistory.fetchBytes },
    ], CHART_WINDOW_MS);
    drawLineChart(document.getElementById("chart-connections"), [
      { name: "Kafka connections", points: overviewHistory.kafka },
      { name: "MQTT connections", points: overviewHistory.mqtt },
      { name: "devices online", points: overviewHistory.devices },
    ], CHART_WINDOW_MS);
  });
}

// ---------------------------------------------------------------- topics

const topicRates = new Map(); // topic -> [[time, records/s]]

function retentionText(configs) {
  if (!configs || configs["retention.ms"] === undefined) return "-";
  const ms = Number(configs["retention.ms"]);
  const time = ms < 0 ? "forever" : ms % 86400000 === 0 ? `${ms / 86400000} d` : ms % 3600000 === 0 ? `${ms / 3600000} h` : `${ms} ms`;
  const policy = configs["cleanup.policy"] ? ` · ${configs["cleanup.policy"]}` : "";
  return time + policy;
}

function renderTopics() {
  page().innerHTML = `<h1>Topics</h1><div id="topics-body" class="muted">loading…</div>`;
  const body = document.getElementById("topics-body");
  api("/api/topics").then((listing) => {
    if (!listing.topics.length) { body.innerHTML = `<p class="muted">No topics this user may describe.</p>`; return; }
    body.innerHTML = `<table id="topics-table"><thead><tr><th>topic</th><th class="num">partitions</th><th class="num">records</th><th class="num">log size</th><th>retention</th><th>records produced/s</th></tr></thead><tbody>${
      listing.topics.map((topic, index) => `<tr data-topic="${escapeHtml(topic.name)}"><td><a href="#topic/${encodeURIComponent(topic.name)}">${escapeHtml(topic.name)}</a>${topic.internal ? ' <span class="muted">internal</span>' : ""}</td><td class="num">${topic.partitions.length}</td><td class="num">${formatFigure(topic.records)}</td><td class="num">${topic.log_size_bytes === null ? "-" : formatFigure(topic.log_size_bytes) + "B"}</td><td class="retention">${escapeHtml(retentionText(topic.configs))}</td><td><svg class="sparkline" id="sparkline-${index}" data-topic="${escapeHtml(topic.name)}"></svg></td></tr>`).join("")
    }</tbody></table>`;
  }).catch((error) => showError(body, error));
  let last = null;
  return every(POLL_MS * 2, async () => {
    const overview = await api("/api/overview").catch(() => null);
    if (!overview) return;
    const produced = overview.records_produced_by_topic || {};
    if (last && overview.time_ms > last.time) {
      const seconds = (overview.time_ms - last.time) / 1000;
      for (const [topic, total] of Object.entries(produced)) {
        if (!topicRates.has(topic)) topicRates.set(topic, []);
        pushPoint(topicRates.get(topic), overview.time_ms, Math.max(0, (total - (last.produced[topic] || 0)) / seconds));
      }
    }
    last = { time: overview.time_ms, produced };
    for (const svg of document.querySelectorAll("svg.sparkline")) {
      drawSparkline(svg, topicRates.get(svg.dataset.topic) || [], CHART_WINDOW_MS);
    }
  });
}

function renderRecord(record) {
  const shown = (value) => value === null || value === undefined ? '<span class="muted">null</span>'
    : value.text !== undefined ? escapeHtml(value.text) : `<span class="muted">base64</span> ${escapeHtml(value.base64)}`;
  const value = record.value === null ? '<span class="muted">null</span>'
    : record.value.json !== undefined ? escapeHtml(JSON.stringify(record.value.json, null, 2))
    : shown(record.value);
  const headers = record.headers.length
    ? `<table class="headers"><tbody>${record.headers.map((header) => `<tr><td>${escapeHtml(header.key)}</td><td>${shown(header.value)}</td></tr>`).join("")}</tbody></table>`
    : "";
  const time = record.timestamp_ms === null ? "" : new Date(record.timestamp_ms).toISOString();
  return `<div class="record" data-offset="${record.offset}"><div class="meta">partition ${record.partition} · offset ${record.offset} · ${time} · key <b class="key">${shown(record.key)}</b> · ${record.value_bytes} bytes${record.truncated ? " (cut)" : ""}</div>${headers}<pre class="value">${value}</pre></div>`;
}

function renderTopic(name) {
  page().innerHTML = `<h1>Topic ${escapeHtml(name)}</h1><p><a href="#topics">all topics</a></p><div id="topic-partitions" class="muted">loading…</div>
    <h2>Messages</h2>
    <form class="inline" id="browse-form">
      <label>partition <select id="browse-partition"></select></label>
      <label>from offset <input id="browse-offset" type="number" min="0" placeholder="newest"></label>
      <label>or from time <input id="browse-time" type="datetime-local" step="1"></label>
      <label>count <input id="browse-count" type="number" min="1" max="500" value="20"></label>
      <button type="submit" id="browse-button">Browse</button>
    </form>
    <form class="inline" id="search-form">
      <label>key <input id="search-key" placeholder="device-17"></label>
      <button type="submit" id="search-button">Search by key</button>
    </form>
    <div id="messages-summary" class="muted"></div>
    <div id="messages"></div>`;
  const partitionsBody = document.getElementById("topic-partitions");
  api("/api/topics").then((listing) => {
    const topic = listing.topics.find((one) => one.name === name);
    if (!topic) { showError(partitionsBody, new Error(`no topic ${name} that this user may describe`)); return; }
    partitionsBody.innerHTML = `<p id="topic-retention">retention: ${escapeHtml(retentionText(topic.configs))}</p><table id="partitions-table"><thead><tr><th>partition</th><th class="num">low watermark</th><th class="num">high watermark</th><th class="num">log size</th></tr></thead><tbody>${
      topic.partitions.map((partition) => `<tr><td>${partition.partition}</td><td class="num">${partition.low_watermark ?? "-"}</td><td class="num">${partition.high_watermark ?? "-"}</td><td class="num">${partition.log_size_bytes === null ? "-" : formatFigure(partition.log_size_bytes) + "B"}</td></tr>`).join("")
    }</tbody></table>`;
    document.getElementById("browse-partition").innerHTML = topic.partitions.map((partition) => `<option value="${partition.partition}">${partition.partition}</option>`).join("");
    browse();
  }).catch((error) => showError(partitionsBody, error));
  const messages = document.getElementById("messages");
  const summary = document.getElementById("messages-summary");
  async function browse() {
    const parameters = new URLSearchParams();
    parameters.set("partition", document.getElementById("browse-partition").value || "0");
    parameters.set("count", document.getElementById("browse-count").value || "20");
    const offset = document.getElementById("browse-offset").value;
    const time = document.getElementById("browse-time").value;
    if (offset !== "") parameters.set("offset", offset);
    else if (time !== "") parameters.set("timestamp", String(new Date(time).getTime()));
    messages.innerHTML = "";
    summary.textContent = "reading…";
    try {
      const page = await api(`/api/topics/${encodeURIComponent(name)}/messages?${parameters}`);
      summary.textContent = `partition ${page.partition}: ${page.records.length} record(s) from offset ${page.from_offset}; watermarks ${page.low_watermark} to ${page.high_watermark}${page.complete ? "" : " (read timed out)"}`;
      messages.innerHTML = page.records.map(renderRecord).join("");
    } catch (error) { summary.textContent = ""; showError(messages, error); }
  }
  document.getElementById("browse-form").addEventListener("submit", (event) => { event.preventDefault(); browse(); });
  document.getElementById("search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = document.getElementById("search-key").value;
    messages.innerHTML = "";
    summary.textContent = "searching…";
    try {
      const found = await api(`/api/topics/${encodeURIComponent(name)}/search`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ key }) });
      summary.textContent = `${found.records.length} record(s) with key ${key} among the newest ${found.scanned_per_partition} of each partition`;
      messages.innerHTML = found.records.map(renderRecord).join("");
    } catch (error) { summary.textContent = ""; showError(messages, error); }
  });
  return () => {};
}

// ---------------------------------------------------------------- consumer groups

const lagHistory = new Map(); // group -> Map(topic/partition -> points)

function renderGroups() {
  page().innerHTML = `<h1>Consumer groups</h1><div id="groups-body" class="muted">loading…</div>`;
  const body = document.getElementById("groups-body");
  return every(GROUPS_POLL_MS, async () => {
    let listing;
    try { listing = await api("/api/groups"); } catch (error) { showError(body, error); return; }
    const now = Date.now();
    if (!listing.groups.length) { body.innerHTML = `<p class="muted">No consumer groups this user may describe.</p>`; return; }
    for (const group of listing.groups) {
      if (!lagHistory.has(group.name)) lagHistory.set(group.name, new Map());
      const history = lagHistory.get(group.name);
      for (const offset of group.offsets) {
        const key = `${offset.topic}/${offset.partition}`;
        if (!history.has(key)) history.set(key, []);
        if (offset.lag !== null) pushPoint(history.get(key), now, offset.lag);
      }
    }
    body.innerHTML = listing.groups.map((group, index) => `
      <div class="card group" data-group="${escapeHtml(group.name)}" style="margin-bottom:16px">
        <h2>${escapeHtml(group.name)} <span class="muted">${escapeHtml(group.state)} · ${group.members.length} member(s) · lag ${group.total_lag}</span></h2>
        <div class="cards">
          <div><svg class="chart lag-chart" id="lag-chart-${index}"></svg><div class="legend"></div></div>
          <div>
            <table class="members"><thead><tr><th>member</th><th>client</th><th>assigned</th></tr></thead><tbody>${
              group.members.map((member) => `<tr><td>${escapeHtml(member.member_id)}</td><td>${escapeHtml(member.client_id)} ${escapeHtml(member.client_host)}</td><td>${member.assignment.map((one) => `${escapeHtml(one.topic)} [${one.partitions.join(", ")}]`).join("; ")}</td></tr>`).join("") || '<tr><td colspan="3" class="muted">no members</td></tr>'
            }</tbody></table>
            <table class="offsets"><thead><tr><th>topic</th><th class="num">partition</th><th class="num">committed</th><th class="num">high watermark</th><th class="num">lag</th></tr></thead><tbody>${
              group.offsets.map((offset) => `<tr><td>${escapeHtml(offset.topic)}</td><td class="num">${offset.partition}</td><td class="num">${offset.committed}</td><td class="num">${offset.high_watermark ?? "-"}</td><td class="num">${offset.lag ?? "-"}</td></tr>`).join("")
            }</tbody></table>
            ${group.offsets_error ? `<div class="error">${escapeHtml(group.offsets_error)}</div>` : ""}
          </div>
        </div>
      </div>`).join("");
    listing.groups.forEach((group, index) => {
      const history = lagHistory.get(group.name);
      const series = [...history.entries()].map(([name, points]) => ({ name: `lag ${name}`, points }));
      drawLineChart(document.getElementById(`lag-chart-${index}`), series, CHART_WINDOW_MS);
    });
  });
}

// ---------------------------------------------------------------- devices

function renderDevices() {
  page().innerHTML = `<h1>Devices</h1><p id="devices-online" class="figure"></p><div id="device-result"></div><div id="devices-body" class="muted">loading…</div>`;
  const body = document.getElementById("devices-body");
  const result = document.getElementById("device-result");
  async function act(path, payload, done) {
    try {
      await api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(payload) });
      result.innerHTML = `<p class="ok">${escapeHtml(done)}</p>`;
    } catch (error) { showError(result, error); }
  }
  body.addEventListener("click", async (event) => {
    const row = event.target.closest("tr[data-device]");
    if (!row) return;
    const id = row.dataset.device;
    const path = `/api/devices/${encodeURIComponent(id)}`;
    if (event.target.classList.contains("toggle")) {
      const disable = event.target.dataset.disable === "true";
      await act(`${path}/disabled`, { disabled: disable }, `${disable ? "disabled" : "enabled"} ${id}`);
      refresh();
    } else if (event.target.classList.contains("send")) {
      const payload = row.querySelector("input.command").value;
      await act(`${path}/command`, { payload }, `command sent to ${id}`);
    }
  });
  // Connected, last seen and messages, as this process's gateway saw them (null without one).
  function presenceCells(device) {
    if (device.connected === null || device.connected === undefined) {
      return `<td class="presence muted">-</td><td class="last-seen muted">-</td><td class="messages muted">-</td>`;
    }
    const connection = device.connected
      ? `<span class="ok">online</span> <span class="muted">since ${new Date(device.connected_since_ms).toISOString()}</span>`
      : `<span class="muted">offline</span>`;
    const lastSeen = device.last_seen_ms ? new Date(device.last_seen_ms).toISOString() : "never";
    return `<td class="presence">${connection}</td><td class="last-seen muted">${lastSeen}</td><td class="messages">${device.messages}</td>`;
  }
  let drawn = "";
  async function refresh() {
    let listing;
    try { listing = await api("/api/devices"); } catch (error) { showError(body, error); return; }
    drawn = listing.devices.map((device) => `${device.id}/${device.disabled}`).join(",");
    if (!listing.devices.length) { body.innerHTML = `<p class="muted">No devices registered (tidewater device add ID).</p>`; return; }
    body.innerHTML = `<table id="devices-table"><thead><tr><th>device</th><th>state</th><th>connection</th><th>last seen</th><th>messages</th><th>registered</th><th>command</th><th></th></tr></thead><tbody>${
      listing.devices.map((device) => `<tr data-device="${escapeHtml(device.id)}"><td>${escapeHtml(device.id)}</td><td class="state ${device.disabled ? "bad" : "ok"}">${device.disabled ? "disabled" : "enabled"}</td>${presenceCells(device)}<td class="muted">${new Date(device.created_at_ms).toISOString()}</td><td><input class="command" placeholder='{"action": "reboot"}'> <button type="button" class="send">Send</button></td><td><button type="button" class="toggle" data-disable="${!device.disabled}">${device.disabled ? "Enable" : "Disable"}</button></td></tr>`).join("")
    }</tbody></table>`;
  }
  // The table is drawn on arrival and after each change (redrawing it on a timer would wipe a
  // command being typed); the online count and each device's presence cells are polled and
  // replaced in place, and a device added or removed redraws the table.
  refresh();
  return every(POLL_MS * 2, async () => {
    const overview = await api("/api/overview").catch(() => null);
    const online = overview && overview.totals.tidewater_devices_connected;
    const figure = document.getElementById("devices-online");
    if (figure) figure.textContent = online === null || online === undefined ? "devices online: - (no gateway in this process)" : `devices online: ${online}`;
    const listing = await api("/api/devices").catch(() => null);
    if (!listing) return;
    if (listing.devices.map((device) => `${device.id}/${device.disabled}`).join(",") !== drawn) { refresh(); return; }
    for (const device of listing.devices) {
      const row = body.querySelector(`tr[data-device="${CSS.escape(device.id)}"]`);
      if (!row) continue;
      const cells = document.createElement("tbody");
      cells.innerHTML = `<tr>${presenceCells(device)}</tr>`;
      for (const name of ["presence", "last-seen", "messages"]) {
        row.querySelector(`td.${name}`).replaceWith(cells.querySelector(`td.${name}`));
      }
    }
  });
}

// ---------------------------------------------------------------- query jobs

function renderQueries() {
  page().innerHTML = `<h1>Query jobs</h1><div id="queries-body" class="muted">loading…</div>
    <h2>Test a query on sample events, then create it</h2>
    <div class="cards">
      <div class="card">
        <label class="muted">query (Stream Analytics SQL)</label>
        <textarea id="query-sql">SELECT deviceId, temperature\nINTO alerts\nFROM telemetry\nWHERE temperature > 30</textarea>
        <form class="inline" id="sample-form">
          <label>sample from topic <input id="sample-topic" value="telemetry"></label>
          <label>newest <input id="sample-count" type="number" min="1" max="500" value="20"></label>
          <button type="submit" id="sample-button">Load events</button>
        </form>
        <label class="muted">events (JSON lines)</label>
        <textarea id="query-events">{"deviceId": "pump-1", "temperature": 25}\n{"deviceId": "pump-2", "temperature": 41}</textarea>
        <form class="inline" id="query-form">
          <button type="button" id="query-test">Test</button>
          <label>job name <input id="query-name" placeholder="alerts"></label>
          <button type="button" id="query-create">Create job</button>
        </form>
      </div>
      <div class="card"><h2>Results</h2><div id="query-result" class="muted">Test the query to see its rows here.</div></div>
    </div>`;
  const body = document.getElementById("queries-body");
  const result = document.getElementById("query-result");
  const sql = () => document.getElementById("query-sql").value;
  document.getElementById("sample-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const topic = document.getElementById("sample-topic").value;
    const count = document.getElementById("sample-count").value || "20";
    try {
      const listing = await api("/api/topics");
      const found = listing.topics.find((one) => one.name === topic);
      if (!found) throw new Error(`no topic ${topic} that this user may describe`);
      const lines = [];
      for (const partition of found.partitions) {
        const page = await api(`/api/topics/${encodeURIComponent(topic)}/messages?partition=${partition.partition}&count=${count}`);
        for (const record of page.records) {
          if (record.value && record.value.json !== undefined) lines.push(JSON.stringify(Object.assign({ "@partition": record.partition }, record.value.json)));
        }
      }
      document.getElementById("query-events").value = lines.join("\n");
      result.innerHTML = `<p class="muted">${lines.length} JSON event(s) loaded from ${escapeHtml(topic)}</p>`;
    } catch (error) { showError(result, error); }
  });
  document.getElementById("query-test").addEventListener("click", async () => {
    result.textContent = "running…";
    try {
      const answer = await api("/api/queries/test", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql: sql(), events: document.getElementById("query-events").value }) });
      const rows = answer.results.filter((line) => line.output !== undefined);
      const other = answer.results.filter((line) => line.output === undefined);
      const columns = [...new Set(rows.flatMap((line) => Object.keys(line.row)))];
      result.innerHTML = `<p>${answer.results_total} result line(s)</p>` + (rows.length
        ? `<table id="query-rows"><thead><tr><th>output</th>${columns.map((column) => `<th>${escapeHtml(column)}</th>`).join("")}</tr></thead><tbody>${
            rows.map((line) => `<tr><td>${escapeHtml(line.output)}</td>${columns.map((column) => `<td>${escapeHtml(JSON.stringify(line.row[column]))}</td>`).join("")}</tr>`).join("")
          }</tbody></table>` : "") + other.map((line) => `<pre>${escapeHtml(JSON.stringify(line))}</pre>`).join("");
    } catch (error) { showError(result, error); }
  });
  document.getElementById("query-create").addEventListener("click", async () => {
    const name = document.getElementById("query-name").value;
    try {
      await api("/api/queries", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name, sql: sql() }) });
      result.innerHTML = `<p class="ok">created query job ${escapeHtml(name)}</p>`;
    } catch (error) { showError(result, error); }
  });
  const history = new Map();
  // Per job: events/s and watermark lag over time, for the two charts above the table.
  const rates = new Map(), lags = new Map();
  return every(POLL_MS * 2, async () => {
    let listing;
    try { listing = await api("/api/queries"); } catch (error) { showError(body, error); return; }
    if (!listing.jobs.length) { body.innerHTML = `<p class="muted">No query jobs registered.</p>`; return; }
    const now = Date.now();
    const rate = (job) => {
      const last = history.get(job.name);
      history.set(job.name, { time: now, events: job.events_total });
      if (!last || job.events_total === null || last.events === null) return null;
      return Math.max(0, (job.events_total - last.events) / ((now - last.time) / 1000));
    };
    const rows = listing.jobs.map((job) => {
      const perSecond = rate(job);
      for (const [table, value] of [[rates, perSecond], [lags, job.watermark_lag_seconds]]) {
        if (!table.has(job.name)) table.set(job.name, []);
        if (value !== null && value !== undefined) pushPoint(table.get(job.name), now, value);
      }
      const watermark = job.watermark_ms === null ? "-" : new Date(job.watermark_ms).toISOString();
      const failures = job.failures_total === null ? "-" : formatFigure(job.failures_total);
      const lastError = job.last_error
        ? `<tr class="job-error"><td colspan="8" class="error">${escapeHtml(job.name)} failed at ${new Date(job.last_error_at_ms).toISOString()}: ${escapeHtml(job.last_error)}</td></tr>`
        : "";
      return `<tr data-job="${escapeHtml(job.name)}"><td title="${escapeHtml(job.sql)}">${escapeHtml(job.name)}</td><td class="state">${job.state}</td><td class="num">${formatFigure(perSecond)}</td><td class="num">${formatFigure(job.events_total)}</td><td class="num">${formatFigure(job.late_events_total)}</td><td class="watermark">${watermark}</td><td class="num">${formatFigure(job.watermark_lag_seconds)}</td><td class="num failures">${failures}</td></tr>${lastError}`;
    });
    body.innerHTML = `<div class="cards">
        <div class="card"><h2>Events per second</h2><svg class="chart" id="queries-rate-chart"></svg><div class="legend"></div></div>
        <div class="card"><h2>Watermark lag (s)</h2><svg class="chart" id="queries-lag-chart"></svg><div class="legend"></div></div>
      </div>
      <table id="queries-table"><thead><tr><th>job</th><th>state</th><th class="num">events/s</th><th class="num">events</th><th class="num">late</th><th>watermark</th><th class="num">lag (s)</th><th class="num">failures</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
    const series = (table) => [...table.entries()].map(([name, points]) => ({ name, points }));
    drawLineChart(document.getElementById("queries-rate-chart"), series(rates), CHART_WINDOW_MS);
    drawLineChart(document.getElementById("queries-lag-chart"), series(lags), CHART_WINDOW_MS);
  });
}

// ---------------------------------------------------------------- triggers

function renderTriggers() {
  page().innerHTML = `<h1>Triggers</h1><div id="triggers-body" class="muted">loading…</div><h2 id="dead-letters-title"></h2><div id="replay-result"></div><div id="dead-letters"></div>`;
  const body = document.getElementById("triggers-body");
  const deadLetters = document.getElementById("dead-letters");
  const replayResult = document.getElementById("replay-result");
  let shown = null;
  async function showDeadLetters(trigger) {
    shown = trigger;
    document.getElementById("dead-letters-title").textContent = `Dead letters of ${trigger.name} (${trigger.dead_letter_topic})`;
    deadLetters.innerHTML = "";
    try {
      const listing = await api("/api/topics");
      const topic = listing.topics.find((one) => one.name === trigger.dead_letter_topic);
      if (!topic) { deadLetters.innerHTML = `<p class="muted">Nothing dead-lettered yet.</p>`; return; }
      const records = [];
      for (const partition of topic.partitions) {
        const page = await api(`/api/topics/${encodeURIComponent(topic.name)}/messages?partition=${partition.partition}&count=50`);
        records.push(...page.records);
      }
      deadLetters.innerHTML = records.length
        ? records.map((record) => renderRecord(record).replace('<div class="meta">', `<div class="meta"><button type="button" class="replay" data-partition="${record.partition}" data-offset="${record.offset}">Send back to ${escapeHtml(trigger.topic)}</button> `)).join("")
        : `<p class="muted">Nothing dead-lettered yet.</p>`;
    } catch (error) { showError(deadLetters, error); }
  }
  deadLetters.addEventListener("click", async (event) => {
    if (!event.target.classList.contains("replay") || !shown) return;
    const partition = Number(event.target.dataset.partition), offset = Number(event.target.dataset.offset);
    try {
      const answer = await api(`/api/triggers/${encodeURIComponent(shown.name)}/replay`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ partition, offset }) });
      replayResult.innerHTML = `<p class="ok">sent back: ${escapeHtml(answer.from.topic)}/${partition}@${offset} → ${escapeHtml(answer.to.topic)}/${answer.to.partition}@${answer.to.offset}</p>`;
    } catch (error) { showError(replayResult, error); }
  });
  let triggers = [];
  // Per trigger: delivered per second and mean latency over time, for the charts.
  const deliveredBefore = new Map(), deliveryRates = new Map(), latencies = new Map();
  body.addEventListener("click", (event) => {
    if (!event.target.classList.contains("dead-letters")) return;
    const trigger = triggers.find((one) => one.name === event.target.closest("tr").dataset.trigger);
    if (trigger) showDeadLetters(trigger);
  });
  return every(POLL_MS * 2, async () => {
    let listing;
    try { listing = await api("/api/triggers"); } catch (error) { showError(body, error); return; }
    triggers = listing.triggers;
    if (!triggers.length) { body.innerHTML = `<p class="muted">No triggers registered.</p>`; return; }
    const now = Date.now();
    for (const trigger of triggers) {
      const last = deliveredBefore.get(trigger.name);
      deliveredBefore.set(trigger.name, { time: now, delivered: trigger.delivered_total, sum: trigger.latency_sum_seconds, count: trigger.latency_count });
      for (const table of [deliveryRates, latencies]) if (!table.has(trigger.name)) table.set(trigger.name, []);
      if (!last) continue;
      if (last.delivered !== null && trigger.delivered_total !== null) {
        pushPoint(deliveryRates.get(trigger.name), now, Math.max(0, (trigger.delivered_total - last.delivered) / ((now - last.time) / 1000)));
      }
      // The mean latency of the events acknowledged since the last poll.
      if (last.count !== null && trigger.latency_count !== null && trigger.latency_count > last.count) {
        pushPoint(latencies.get(trigger.name), now, (trigger.latency_sum_seconds - last.sum) / (trigger.latency_count - last.count));
      }
    }
    body.innerHTML = `<div class="cards">
        <div class="card"><h2>Delivered per second</h2><svg class="chart" id="triggers-rate-chart"></svg><div class="legend"></div></div>
        <div class="card"><h2>Latency (s), mean between polls</h2><svg class="chart" id="triggers-latency-chart"></svg><div class="legend"></div></div>
      </div><table id="triggers-table"><thead><tr><th>trigger</th><th>topic</th><th>state</th><th class="num">delivered</th><th class="num">retries</th><th class="num">dead-lettered</th><th class="num">mean latency (s)</th><th></th></tr></thead><tbody>${
      triggers.map((trigger) => `<tr data-trigger="${escapeHtml(trigger.name)}"><td>${escapeHtml(trigger.name)}</td><td>${escapeHtml(trigger.topic)}</td><td>${trigger.state}</td><td class="num delivered">${formatFigure(trigger.delivered_total)}</td><td class="num">${formatFigure(trigger.retries_total)}</td><td class="num dead-lettered">${formatFigure(trigger.dead_lettered_total)}</td><td class="num">${trigger.mean_latency_seconds === null ? "-" : trigger.mean_latency_seconds.toFixed(3)}</td><td><button type="button" class="dead-letters">Dead letters</button></td></tr>`).join("")
    }</tbody></table>`;
    const series = (table) => [...table.entries()].map(([name, points]) => ({ name, points }));
    drawLineChart(document.getElementById("triggers-rate-chart"), series(deliveryRates), CHART_WINDOW_MS);
    drawLineChart(document.getElementById("triggers-latency-chart"), series(latencies), CHART_WINDOW_MS);
  });
}

// ---------------------------------------------------------------- routing

function route() {
  stopCurrentView();
  const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "overview";
  const view = hash.startsWith("topic/") ? "topics" : hash;
  for (const link of document.querySelectorAll("header nav a")) link.classList.toggle("active", link.id === `nav-${view}`);
  if (hash.startsWith("topic/")) stopCurrentView = renderTopic(hash.slice("topic/".length));
  else if (hash === "topics") stopCurrentView = renderTopics();
  else if (hash === "groups") stopCurrentView = renderGroups();
  else if (hash === "devices") stopCurrentView = renderDevices();
  else if (hash === "queries") stopCurrentView = renderQueries();
  else if (hash === "triggers") stopCurrentView = renderTriggers();
  else stopCurrentView = renderOverview();
}

window.addEventListener("hashchange", route);
route();
