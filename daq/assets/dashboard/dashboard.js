// flowdaq dashboard: what a chemist watching the reactor looks at.
//
// History comes from `POST /sql`, live rows from `GET /events` (read with fetch streaming,
// because EventSource cannot send the bearer token). Rows only mark panels dirty; a timer
// redraws at most four times a second, so the page keeps up at any ingest rate. The newest
// spectrum and decay are fetched by SQL for the newest feature row, at most twice a second:
// the server never sends every spectrum.
"use strict";

(function () {
  const REDRAW_MS = 250;
  const DETAIL_MS = 500;
  const HEALTH_MS = 2000;
  const MAX_POINTS = 5000;
  const MAX_CONDITION_SERIES = 8;
  const MAX_PENDING = 10000;
  // Okabe and Ito's colour-blind safe palette, as `flowdaq plot` uses it.
  const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442", "#000000"];
  const EARLIER = "#b8bec6";

  const state = {
    token: null,
    run: null,
    source: "",
    runs: new Map(), // run_id -> newest time (s)
    sources: new Set(),
    spectral: [], // spectral_features rows
    flow: [], // flow_features rows
    lifetimes: [], // lifetime_features rows
    conditions: new Map(), // condition_id -> {spectra, sum_ev, outcomes: Map(feature -> row)}
    spectrum: null,
    decay: null,
    health: null,
    rejected: [],
    newestSpectral: null,
    newestLifetime: null,
    drawn: {},
    eventsReceived: 0,
    lagged: 0,
    errors: [],
    loaded: false,
    pending: [], // live stream parts received while history is read or the page is paused
    paused: false,
    redraws: 0,
  };
  const dirty = new Set();
  const charts = {};
  window.flowdaq = { state, charts };

  // ---- talking to the server ----

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (state.token) h["Authorization"] = "Bearer " + state.token;
    return h;
  }

  class Unauthorized extends Error {}

  async function api(path, options) {
    const response = await fetch(path, Object.assign({}, options, { headers: headers(options && options.headers) }));
    if (response.status === 401) throw new Unauthorized("the server asks for a token");
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try {
        const body = await response.json();
        if (body && body.error) message = body.error;
      } catch (_) { /* not JSON */ }
      throw new Error(path + ": " + message);
    }
    return response;
  }

  async function sql(text) {
    const response = await api("/sql?format=json", { method: "POST", body: text, headers: { "Content-Type": "text/plain" } });
    return response.json();
  }

  function quote(text) {
    return "'" + String(text).replace(/'/g, "''") + "'";
  }

  function where(alias, withSource) {
    const a = alias ? alias + "." : "";
    let clause = state.run === null ? "true" : a + "run_id = " + quote(state.run);
    if (withSource && state.source) clause += " AND " + a + "source = " + quote(state.source);
    return clause;
  }

  function showError(err) {
    const line = document.getElementById("error-line");
    if (err instanceof Unauthorized) {
      document.getElementById("token-form").hidden = false;
      line.textContent = "This server asks for a token: enter one above.";
    } else {
      line.textContent = String(err && err.message ? err.message : err);
      state.errors.push(line.textContent);
    }
    line.hidden = false;
  }

  function clearError() {
    document.getElementById("error-line").hidden = true;
  }

  // ---- values ----

  // Seconds since the epoch from a row's time: a number of ns (SQL casts) or an ISO string
  // without a zone (Arrow's JSON of a timestamp without a zone, which is UTC). Milliseconds
  // are plenty for a trend.
  function seconds(value) {
    if (value === null || value === undefined) return null;
    if (typeof value === "number") return value / 1e9;
    const text = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : value + "Z";
    const ms = Date.parse(text);
    return Number.isNaN(ms) ? null : ms / 1000;
  }

  function rowTime(row) {
    return seconds(row.instrument_time_ns !== null && row.instrument_time_ns !== undefined ? row.instrument_time_ns : row.arrival_time_ns);
  }

  function num(value) {
    return typeof value === "number" && Number.isFinite(value) ? value : null;
  }

  function fmt(value, digits) {
    return num(value) === null ? "–" : value.toFixed(digits);
  }

  function keep(list, rows) {
    for (const row of rows) list.push(row);
    if (list.length > MAX_POINTS) list.splice(0, list.length - MAX_POINTS);
  }

  // ---- rows arriving, from SQL or the live feed ----

  function noteRun(row) {
    if (!row.run_id) return;
    const t = rowTime(row) || 0;
    const known = state.runs.get(row.run_id);
    if (known === undefined || t > known) {
      state.runs.set(row.run_id, t);
      if (known === undefined) dirty.add("selectors");
    }
    if (state.run === null) {
      state.run = row.run_id;
      dirty.add("selectors");
    }
  }

  function noteSource(source) {
    if (source && !state.sources.has(source)) {
      state.sources.add(source);
      dirty.add("selectors");
    }
  }

  function selected(row) {
    return row.run_id === state.run && (!state.source || row.source === state.source);
  }

  function condition(id) {
    const key = id === null || id === undefined ? "(none)" : id;
    let entry = state.conditions.get(key);
    if (!entry) {
      entry = { spectra: 0, sumEv: 0, countEv: 0, outcomes: new Map(), first: null };
      state.conditions.set(key, entry);
    }
    return entry;
  }

  function takeSpectral(rows, live) {
    const mine = [];
    for (const row of rows) {
      noteRun(row);
      noteSource(row.source);
      if (!selected(row)) continue;
      mine.push(row);
      const entry = condition(row.condition_id);
      entry.spectra += 1;
      if (entry.first === null) entry.first = rowTime(row);
      if (num(row.peak_energy_ev) !== null && row.kind === "pl") {
        entry.sumEv += row.peak_energy_ev;
        entry.countEv += 1;
      }
    }
    if (mine.length === 0) return;
    keep(state.spectral, mine);
    const newest = mine[mine.length - 1];
    state.newestSpectral = newest;
    dirty.add("trends");
    dirty.add("flow");
    dirty.add("conditions");
    if (live) scheduleDetail("spectrum");
  }

  // Flow rows come from phase-sensor pairs, not from the selected instrument: all of the run's.
  function takeFlow(rows) {
    const mine = rows.filter((row) => {
      noteRun(row);
      return row.run_id === state.run;
    });
    if (mine.length === 0) return;
    keep(state.flow, mine);
    dirty.add("flow");
  }

  function takeLifetimes(rows, live) {
    const mine = [];
    for (const row of rows) {
      noteRun(row);
      noteSource(row.source);
      if (selected(row)) mine.push(row);
    }
    if (mine.length === 0) return;
    keep(state.lifetimes, mine);
    state.newestLifetime = mine[mine.length - 1];
    dirty.add("phasor");
    if (live) scheduleDetail("decay");
  }

  function takeOutcomes(rows) {
    for (const row of rows) {
      if (row.run_id !== state.run) continue;
      condition(row.condition_id).outcomes.set(row.feature, row);
      dirty.add("conditions");
    }
  }

  function takeConditions(rows) {
    for (const row of rows) {
      if (row.run_id !== state.run) continue;
      const entry = condition(row.condition_id);
      entry.parameters = row.parameters_json || null;
      dirty.add("conditions");
    }
  }

  const TAKERS = {
    spectral_features: takeSpectral,
    flow_features: takeFlow,
    lifetime_features: takeLifetimes,
    condition_outcomes: takeOutcomes,
    conditions: takeConditions,
  };

  // ---- history from SQL ----

  async function loadRuns() {
    const rows = await sql(
      "SELECT run_id, CAST(max(t) AS BIGINT) AS newest_ns FROM (" +
        "SELECT run_id, arrival_time_ns AS t FROM spectral_features UNION ALL " +
        "SELECT run_id, arrival_time_ns FROM lifetime_features UNION ALL " +
        "SELECT run_id, arrival_time_ns FROM flow_features) " +
        "WHERE run_id IS NOT NULL GROUP BY run_id ORDER BY newest_ns DESC LIMIT 100"
    );
    for (const row of rows) state.runs.set(row.run_id, row.newest_ns / 1e9);
    if (state.run === null && rows.length > 0) state.run = rows[0].run_id;
    dirty.add("selectors");
  }

  // Per table, the newest stream_seq of each source of the run when history was read: history
  // takes rows up to it, the live feed (followed before history is read) the rows after it,
  // so every row is shown once.
  const PUBLISHED = ["spectral_features", "flow_features", "lifetime_features", "condition_outcomes", "conditions"];
  const watermarks = new Map(); // "table/run/source" -> stream_seq

  function streamKey(table, row) {
    return table + "/" + row.run_id + "/" + row.source;
  }

  function upTo(table, rows) {
    const parts = rows.map((row) => "(source = " + quote(row.source) + " AND stream_seq <= " + row.newest + ")");
    for (const row of rows) watermarks.set(streamKey(table, { run_id: state.run, source: row.source }), row.newest);
    return parts.length === 0 ? "false" : "(" + parts.join(" OR ") + ")";
  }

  async function loadHistory() {
    state.loaded = false;
    state.spectral = [];
    state.flow = [];
    state.lifetimes = [];
    state.conditions = new Map();
    state.spectrum = null;
    state.decay = null;
    state.newestSpectral = null;
    state.newestLifetime = null;
    watermarks.clear();
    if (state.run !== null) {
      const newest = await Promise.all(PUBLISHED.map((table) =>
        sql("SELECT source, max(stream_seq) AS newest FROM " + table + " WHERE " + where("", false) + " GROUP BY source")));
      const bound = {};
      PUBLISHED.forEach((table, i) => { bound[table] = upTo(table, newest[i]); });
      const recent = (table, withSource) =>
        "SELECT * FROM (SELECT * FROM " + table + " WHERE " + where("", withSource) + " AND " + bound[table] +
        " ORDER BY stream_seq DESC LIMIT " + MAX_POINTS + ") ORDER BY stream_seq";
      const [spectral, flow, lifetimes, outcomes, conditions, counts] = await Promise.all([
        sql(recent("spectral_features", true)),
        sql(recent("flow_features", false)),
        sql(recent("lifetime_features", true)),
        sql("SELECT * FROM condition_outcomes WHERE " + where("", false) + " AND " + bound.condition_outcomes + " ORDER BY stream_seq"),
        sql("SELECT * FROM conditions WHERE " + where("", false) + " AND " + bound.conditions + " ORDER BY stream_seq"),
        // Spectra per condition over the whole run, not only the rows kept for the plots.
        sql("SELECT condition_id, count(*) AS spectra, avg(CASE WHEN kind = 'pl' THEN peak_energy_ev END) AS mean_ev, " +
          "count(CASE WHEN kind = 'pl' THEN peak_energy_ev END) AS counted, " +
          "CAST(min(coalesce(instrument_time_ns, arrival_time_ns)) AS BIGINT) AS first_ns " +
          "FROM spectral_features WHERE " + where("", true) + " AND " + bound.spectral_features + " GROUP BY condition_id"),
      ]);
      for (const table of ["spectral_features", "lifetime_features"]) {
        for (const row of newest[PUBLISHED.indexOf(table)]) noteSource(row.source);
      }
      takeSpectral(spectral, false);
      state.conditions = new Map();
      for (const row of counts) {
        const entry = condition(row.condition_id);
        entry.spectra = row.spectra;
        entry.countEv = row.counted;
        entry.sumEv = num(row.mean_ev) === null ? 0 : row.mean_ev * row.counted;
        entry.first = row.first_ns / 1e9;
      }
      takeFlow(flow);
      takeLifetimes(lifetimes, false);
      takeOutcomes(outcomes);
      takeConditions(conditions);
    }
    state.loaded = true;
    // Rows that arrived live while history was read, past the watermarks.
    if (!state.paused) {
      const pending = state.pending;
      state.pending = [];
      for (const part of pending) takePart(part, true);
    }
    for (const name of ["trends", "flow", "phasor", "conditions", "selectors", "spectrum", "decay"]) dirty.add(name);
    await Promise.all([fetchSpectrum(), fetchDecay()]);
  }

  // ---- the newest spectrum and decay, fetched for the newest feature row ----

  const detailPending = {};
  const detailTimer = {};

  function scheduleDetail(kind) {
    detailPending[kind] = true;
    if (detailTimer[kind]) return;
    detailTimer[kind] = setTimeout(async () => {
      detailTimer[kind] = null;
      if (!detailPending[kind]) return;
      detailPending[kind] = false;
      try {
        await (kind === "spectrum" ? fetchSpectrum() : fetchDecay());
      } catch (err) {
        showError(err);
      }
    }, DETAIL_MS);
  }

  async function fetchSpectrum() {
    const row = state.newestSpectral;
    if (!row) return;
    const rows = await sql(
      "SELECT s.source, s.run_id, s.seq, s.spectrum_index, s.kind, s.condition_id, s.intensity_counts, c.wavelength_nm " +
        "FROM spectra s JOIN spectral_calibrations c ON c.source = s.source AND c.calibration_id = s.calibration_id " +
        "WHERE s.source = " + quote(row.source) + " AND s.run_id = " + quote(row.run_id) +
        " AND s.seq = " + row.seq + " AND s.spectrum_index = " + row.spectrum_index
    );
    if (rows.length === 0) {
      state.spectrum = { missing: true, source: row.source, seq: row.seq };
    } else {
      const s = rows[0];
      state.spectrum = {
        source: s.source, run_id: s.run_id, seq: s.seq, spectrum_index: s.spectrum_index, kind: s.kind,
        condition_id: s.condition_id, wavelength_nm: s.wavelength_nm, intensity_counts: s.intensity_counts,
        peak_wavelength_nm: num(row.peak_wavelength_nm), fwhm_nm: num(row.fwhm_nm),
        peak_energy_ev: num(row.peak_energy_ev),
      };
    }
    dirty.add("spectrum");
  }

  async function fetchDecay() {
    const row = state.newestLifetime;
    if (!row) return;
    const rows = await sql(
      "SELECT h.source, h.seq, h.channel, h.bin_width_ps, h.counts, f.components, f.tau_1_ns, f.tau_2_ns, f.tau_3_ns, " +
        "f.fit_range_start_ns, f.fit_range_end_ns, f.reduced_chi_square, f.condition_id, " +
        "lifetime_model_counts(h.counts, h.irf_counts, h.bin_width_ps, h.sync_rate_hz, f.components, f.tau_1_ns, " +
        "f.tau_2_ns, f.tau_3_ns, f.amplitude_1_counts, f.amplitude_2_counts, f.amplitude_3_counts, " +
        "f.background_counts, f.shift_ns, f.irf_fwhm_ps) AS model_counts " +
        "FROM tcspc_histograms h JOIN lifetime_features f ON f.source = h.source AND f.run_id = h.run_id " +
        "AND f.seq = h.seq AND f.channel = h.channel AND f.window_start_ps = h.window_start_ps " +
        "WHERE h.source = " + quote(row.source) + " AND h.run_id = " + quote(row.run_id) + " AND h.seq = " + row.seq +
        " AND h.channel = " + row.channel + " AND h.window_start_ps = " + row.window_start_ps
    );
    state.decay = rows.length === 0 ? { missing: true, source: row.source, seq: row.seq } : rows[0];
    dirty.add("decay");
  }

  // ---- health ----

  let previousHealth = null;

  async function pollHealth() {
    try {
      const [metrics, health] = await Promise.all([
        api("/metrics/json").then((r) => r.json()),
        fetch("/health").then((r) => r.json()),
      ]);
      const now = performance.now();
      let rate = null;
      if (previousHealth) {
        rate = (metrics.messages_received - previousHealth.received) / ((now - previousHealth.at) / 1000);
      }
      if (!previousHealth || metrics.messages_rejected !== previousHealth.rejected) {
        state.rejected = await sql(
          "SELECT CAST(arrival_time_ns AS BIGINT) AS t_ns, source, reason FROM ingest_errors ORDER BY arrival_time_ns DESC LIMIT 8"
        );
      }
      previousHealth = { received: metrics.messages_received, rejected: metrics.messages_rejected, at: now };
      state.health = { metrics, health, rate };
      dirty.add("health");
    } catch (err) {
      showError(err);
    }
  }

  // ---- the live feed ----

  let feedAbort = null;

  async function follow() {
    const status = document.getElementById("live-status");
    for (let attempt = 0; ; attempt++) {
      feedAbort = new AbortController();
      try {
        const response = await fetch("/events", { headers: headers(), signal: feedAbort.signal });
        if (response.status === 401) throw new Unauthorized("the server asks for a token");
        if (!response.ok || !response.body) throw new Error("/events: " + response.status);
        status.textContent = "live";
        status.className = "status live";
        attempt = 0;
        await readEvents(response.body.getReader());
      } catch (err) {
        if (err instanceof Unauthorized) {
          showError(err);
          status.textContent = "no token";
          status.className = "status down";
          return;
        }
        if (err && err.name === "AbortError") return;
      }
      status.textContent = "reconnecting";
      status.className = "status down";
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 250 * 2 ** Math.min(attempt, 5))));
    }
  }

  async function readEvents(reader) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length > 0) onEvent(name, data.join("\n"));
      }
    }
  }

  function onEvent(name, data) {
    if (name === "lagged") {
      state.lagged += JSON.parse(data).missed;
      return;
    }
    if (name !== "rows") return;
    state.eventsReceived += 1;
    const part = JSON.parse(data);
    if (state.loaded && !state.paused) {
      takePart(part, true);
    } else if (state.pending.length < MAX_PENDING) {
      state.pending.push(part);
    } else {
      // Paused too long to catch up part by part: read history again on resume.
      state.pending = [];
      state.stale = true;
    }
  }

  // Pause keeps the picture still for reading; live rows wait and are drawn on resume.
  function togglePause() {
    state.paused = !state.paused;
    document.getElementById("pause-button").textContent = state.paused ? "resume" : "pause";
    if (state.paused) return;
    if (state.stale) {
      state.stale = false;
      reload();
      return;
    }
    const pending = state.pending;
    state.pending = [];
    for (const part of pending) takePart(part, true);
  }

  // A live stream part: its rows past the history's watermark go to the table's taker.
  function takePart(part, live) {
    const take = TAKERS[part.table];
    if (!take) return;
    const rows = part.rows.filter((row) => {
      const key = streamKey(part.table, row);
      const seen = watermarks.get(key);
      if (seen !== undefined && row.stream_seq <= seen) return false;
      watermarks.set(key, row.stream_seq);
      return true;
    });
    if (rows.length > 0) take(rows, live);
  }

  // ---- drawing ----

  function plotWidth(element) {
    return Math.max(260, element.clientWidth || 420);
  }

  // Draws `data` in the chart `key`: built anew when its title or series changed (a new
  // condition, another run), otherwise only given the new data.
  function chart(key, element, options, data) {
    const shape = (options.title || "") + "|" + options.series.map((s) => s.label).join("|");
    if (charts[key] && charts[key].flowdaqShape !== shape) forget(key);
    if (!charts[key]) {
      options.width = options.width || plotWidth(element);
      charts[key] = new uPlot(options, data, element);
      charts[key].flowdaqShape = shape;
    } else {
      charts[key].setData(data);
    }
    return charts[key];
  }

  // Removes a chart that has nothing to show (another run was selected).
  function forget(key) {
    if (charts[key]) {
      charts[key].destroy();
      delete charts[key];
    }
    delete state.drawn[key];
  }

  function finiteCount(values) {
    let n = 0;
    for (const v of values) if (v !== null && Number.isFinite(v)) n++;
    return n;
  }

  function drawSpectrum() {
    const panel = document.getElementById("panel-spectrum");
    const caption = panel.querySelector(".caption");
    const s = state.spectrum;
    if (!s) {
      forget("spectrum");
      caption.textContent = "no spectra in this run yet";
      return;
    }
    if (s.missing) {
      caption.textContent = s.source + " seq " + s.seq + ": raw spectrum not stored (store_raw = false)";
      return;
    }
    let x = s.wavelength_nm;
    let y = s.intensity_counts;
    if (x.length > 1 && x[0] > x[x.length - 1]) {
      x = x.slice().reverse();
      y = y.slice().reverse();
    }
    const options = {
      height: 260,
      scales: { x: { time: false } },
      axes: [{ label: "wavelength (nm)" }, { label: "counts" }],
      series: [{ label: "nm" }, { label: s.kind + " " + s.source, stroke: PALETTE[0], width: 1.5 }],
      hooks: { draw: [(u) => markPeak(u)] },
    };
    chart("spectrum", panel.querySelector(".plot"), options, [x, y]);
    state.drawn.spectrum = finiteCount(y);
    caption.textContent = s.source + " seq " + s.seq + " · condition " + (s.condition_id || "–") +
      " · peak " + fmt(s.peak_wavelength_nm, 1) + " nm (" + fmt(s.peak_energy_ev, 3) + " eV) · FWHM " + fmt(s.fwhm_nm, 1) + " nm";
  }

  // The peak as a dashed line and the FWHM as a shaded band, in the spectrum's own axis.
  function markPeak(u) {
    const s = state.spectrum;
    if (!s || s.missing || s.peak_wavelength_nm === null) return;
    const ctx = u.ctx;
    const top = u.bbox.top;
    const height = u.bbox.height;
    const peak = u.valToPos(s.peak_wavelength_nm, "x", true);
    ctx.save();
    if (s.fwhm_nm !== null) {
      const left = u.valToPos(s.peak_wavelength_nm - s.fwhm_nm / 2, "x", true);
      const right = u.valToPos(s.peak_wavelength_nm + s.fwhm_nm / 2, "x", true);
      ctx.fillStyle = "rgba(213, 94, 0, 0.15)";
      ctx.fillRect(left, top, right - left, height);
    }
    ctx.strokeStyle = PALETTE[1];
    ctx.setLineDash([6, 4]);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(peak, top);
    ctx.lineTo(peak, top + height);
    ctx.stroke();
    ctx.restore();
  }

  // Points of `rows` against time, one series per condition (the newest few; earlier ones grey).
  function conditionSeries(rows, value) {
    const order = [];
    const seen = new Set();
    for (const row of rows) {
      const c = row.condition_id || "(none)";
      if (!seen.has(c)) {
        seen.add(c);
        order.push(c);
      }
    }
    const shown = order.slice(-MAX_CONDITION_SERIES);
    const index = new Map(shown.map((c, i) => [c, i + 1]));
    const points = rows
      .map((row) => ({ t: rowTime(row), v: num(value(row)), c: row.condition_id || "(none)" }))
      .filter((p) => p.t !== null && p.v !== null)
      .sort((a, b) => a.t - b.t);
    const x = points.map((p) => p.t);
    const series = [{}];
    const data = [x];
    const earlier = order.length > shown.length;
    if (earlier) {
      series.push(pointSeries("earlier", EARLIER));
      data.push(points.map((p) => (index.has(p.c) ? null : p.v)));
    }
    shown.forEach((c, i) => {
      series.push(pointSeries(c, PALETTE[(order.indexOf(c)) % PALETTE.length]));
      data.push(points.map((p) => (p.c === c ? p.v : null)));
    });
    return { series, data, count: points.length };
  }

  function pointSeries(label, colour) {
    return { label, stroke: colour, fill: colour, paths: () => null, points: { show: true, size: 5, space: 0, fill: colour } };
  }

  const LABELS = {
    peak_energy_ev: "PL peak energy (eV)",
    fwhm_ev: "PL FWHM (eV)",
    plqy: "PLQY",
    velocity_mm_per_s: "plug velocity (mm/s)",
    reaction_time_s: "residence time at the probe (s)",
  };

  function trendRows(name) {
    return name === "flow" ? state.flow : state.spectral.filter((r) => r.kind === "pl");
  }

  function drawTrendPanel(panelId) {
    const panel = document.getElementById(panelId);
    for (const element of panel.querySelectorAll(".plot")) {
      const feature = element.dataset.feature;
      const rows = trendRows(element.dataset.rows);
      const { series, data, count } = conditionSeries(rows, (row) => row[feature]);
      const options = {
        height: 200,
        width: Math.max(260, Math.floor((panel.clientWidth - 40) / panel.querySelectorAll(".plot").length)),
        title: LABELS[feature] + (count === 0 ? ": no values yet" : ""),
        scales: { x: { time: true } },
        legend: { show: series.length <= 10 },
        series,
      };
      const key = panelId + ":" + feature;
      chart(key, element, options, data);
      state.drawn[key] = count;
    }
  }

  function drawDecay() {
    const panel = document.getElementById("panel-decay");
    const caption = panel.querySelector(".caption");
    const d = state.decay;
    if (!d) {
      forget("decay");
      forget("residuals");
      caption.textContent = "no fitted TCSPC decays in this run yet";
      return;
    }
    if (d.missing) {
      caption.textContent = d.source + " seq " + d.seq + ": no histogram stored for the newest fit";
      return;
    }
    const bin = d.bin_width_ps / 1000;
    const x = d.counts.map((_, i) => (i + 0.5) * bin);
    const counts = d.counts.map((c) => (c > 0 ? c : null));
    const model = d.model_counts ? d.model_counts.map((m) => (m > 0 ? m : null)) : d.counts.map(() => null);
    const start = num(d.fit_range_start_ns) === null ? 0 : d.fit_range_start_ns;
    const end = num(d.fit_range_end_ns) === null ? Infinity : d.fit_range_end_ns;
    const residuals = d.counts.map((c, i) => {
      const m = d.model_counts ? d.model_counts[i] : null;
      return m !== null && m > 0 && x[i] >= start && x[i] <= end ? (c - m) / Math.sqrt(m) : null;
    });
    const plots = panel.querySelectorAll(".plot");
    chart("decay", plots[0], {
      height: 220,
      scales: { x: { time: false }, y: { distr: 3 } },
      axes: [{}, { label: "counts" }],
      series: [{ label: "ns" }, pointSeries("counts", PALETTE[0]), { label: "fit", stroke: PALETTE[1], width: 2 }],
    }, [x, counts, model]);
    chart("residuals", plots[1], {
      height: 110,
      scales: { x: { time: false } },
      axes: [{ label: "time (ns)" }, { label: "residual" }],
      series: [{ label: "ns" }, pointSeries("residual", PALETTE[2])],
    }, [x, residuals]);
    state.drawn.decay = finiteCount(counts);
    state.drawn.model = finiteCount(model);
    const taus = [d.tau_1_ns, d.tau_2_ns, d.tau_3_ns].slice(0, d.components || 0).map((t) => fmt(t, 3) + " ns");
    caption.textContent = d.source + " seq " + d.seq + " channel " + d.channel + " · condition " + (d.condition_id || "–") +
      (taus.length ? " · tau " + taus.join(", ") + " · reduced chi2 " + fmt(d.reduced_chi_square, 2) : " · not fitted");
  }

  // The phasor plot with the universal semicircle, drawn on a plain canvas.
  function drawPhasor() {
    const panel = document.getElementById("panel-phasor");
    const canvas = panel.querySelector("canvas");
    const ctx = canvas.getContext("2d");
    const w = canvas.width;
    const h = canvas.height;
    const pad = 36;
    const sx = (g) => pad + (g + 0.05) / 1.1 * (w - 2 * pad);
    const sy = (s) => h - pad - (s + 0.02) / 0.62 * (h - 2 * pad);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    ctx.strokeStyle = "#59636e";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(sx(-0.05), sy(0));
    ctx.lineTo(sx(1.05), sy(0));
    ctx.moveTo(sx(0), sy(-0.02));
    ctx.lineTo(sx(0), sy(0.6));
    ctx.stroke();
    ctx.fillStyle = "#4a515a";
    ctx.font = "12px sans-serif";
    ctx.fillText("g", sx(1.05) - 8, sy(0) - 6);
    ctx.fillText("s", sx(0) - 14, sy(0.58));
    for (const g of [0, 0.5, 1]) ctx.fillText(String(g), sx(g) - 6, sy(0) + 16);
    ctx.strokeStyle = "#1d1f23";
    ctx.beginPath();
    for (let i = 0; i <= 180; i++) {
      const angle = Math.PI * i / 180;
      const g = 0.5 + 0.5 * Math.cos(angle);
      const s = 0.5 * Math.sin(angle);
      if (i === 0) ctx.moveTo(sx(g), sy(s));
      else ctx.lineTo(sx(g), sy(s));
    }
    ctx.stroke();
    const order = [];
    let drawn = 0;
    for (const row of state.lifetimes) {
      const g = num(row.phasor_g);
      const s = num(row.phasor_s);
      if (g === null || s === null) continue;
      const c = row.condition_id || "(none)";
      let i = order.indexOf(c);
      if (i < 0) {
        order.push(c);
        i = order.length - 1;
      }
      ctx.fillStyle = PALETTE[i % PALETTE.length];
      ctx.beginPath();
      ctx.arc(sx(g), sy(s), 3, 0, 2 * Math.PI);
      ctx.fill();
      drawn++;
    }
    state.drawn.phasor = drawn;
    panel.querySelector(".caption").textContent = drawn + " fitted windows, coloured by condition";
  }

  function drawConditions() {
    const body = document.querySelector("#panel-conditions tbody");
    const entries = Array.from(state.conditions.entries()).sort((a, b) => (a[1].first || 0) - (b[1].first || 0));
    body.replaceChildren(...entries.map(([id, entry]) => {
      const tr = document.createElement("tr");
      tr.dataset.condition = id;
      const outcome = entry.outcomes.get("spectral_features.peak_energy_ev") || Array.from(entry.outcomes.values())[0];
      let text = "waiting";
      if (outcome) {
        text = outcome.settled ? "settled " + fmt(outcome.mean, 4) + " ± " + fmt(outcome.std, 4) : "not settled: " + (outcome.reason || "");
        if (outcome.settled) tr.className = "settled";
      }
      const mean = entry.countEv > 0 ? entry.sumEv / entry.countEv : null;
      for (const [value, cls] of [[id, ""], [String(entry.spectra), "num"], [fmt(mean, 4), "num"], [text, ""]]) {
        const td = document.createElement("td");
        td.textContent = value;
        if (cls) td.className = cls;
        tr.appendChild(td);
      }
      // A registered condition's parameters, on hover over its id.
      if (entry.parameters) tr.firstChild.title = entry.parameters;
      return tr;
    }));
  }

  function drawHealth() {
    const h = state.health;
    if (!h) return;
    const m = h.metrics;
    const buffer = m.buffer || {};
    const counters = m.health || {};
    const sources = Object.entries(m.sources || {});
    const total = (key) => sources.reduce((sum, [, s]) => sum + (s[key] || 0), 0);
    const failures = ["wal", "persister"].filter((part) => h.health[part]).map((part) => part + ": " + h.health[part].reason);
    const latency = m.receipt_to_queryable || {};
    const rows = [
      ["status", h.health.status + (failures.length ? " (" + failures.join("; ") + ")" : "") + (h.health.backpressure ? ", intake slowed (persistence behind)" : ""), h.health.status !== "ok"],
      ["messages received", m.messages_received + (h.rate === null ? "" : " (" + h.rate.toFixed(0) + "/s)"), false],
      ["rejected", String(m.messages_rejected), m.messages_rejected > 0],
      ["sequence gaps", total("gaps") + " (" + total("missing_messages") + " messages missing)", total("gaps") > 0],
      ["WAL / persist errors", (counters.wal_errors || 0) + " / " + (counters.persist_errors || 0), (counters.wal_errors || 0) + (counters.persist_errors || 0) > 0],
      ["receipt to queryable", "p50 " + fmt((latency.p50_us || 0) / 1000, 1) + " ms, p99 " + fmt((latency.p99_us || 0) / 1000, 1) + " ms", false],
      ["buffered rows", String((buffer.open_rows || 0) + (buffer.persisting_rows || 0)), false],
      ["persisted", (buffer.persisted_rows || 0) + " rows in " + (buffer.persisted_files || 0) + " files", false],
      ["live events", state.eventsReceived + (state.lagged ? " (" + state.lagged + " missed)" : ""), state.lagged > 0],
    ];
    for (const [name, s] of sources) {
      rows.push([name, s.messages + " messages, last seq " + (s.last_seq === null ? "–" : s.last_seq) +
        (s.gaps ? ", " + s.gaps + " gaps" : "") + (s.rejected ? ", " + s.rejected + " rejected" : ""), s.gaps > 0 || s.rejected > 0]);
    }
    const body = document.querySelector("#panel-health .health tbody");
    body.replaceChildren(...rows.map(([name, value, bad]) => {
      const tr = document.createElement("tr");
      const a = document.createElement("td");
      a.textContent = name;
      const b = document.createElement("td");
      b.textContent = value;
      if (bad) b.className = "bad";
      tr.append(a, b);
      return tr;
    }));
    const rejected = document.querySelector("#panel-health .rejected tbody");
    rejected.replaceChildren(...state.rejected.map((row) => {
      const tr = document.createElement("tr");
      for (const value of [new Date(row.t_ns / 1e6).toISOString().slice(11, 19), row.source || "–", row.reason]) {
        const td = document.createElement("td");
        td.textContent = value;
        tr.appendChild(td);
      }
      return tr;
    }));
  }

  function drawSelectors() {
    const runSelect = document.getElementById("run-select");
    const runs = Array.from(state.runs.entries()).sort((a, b) => b[1] - a[1]).map(([id]) => id);
    if (runSelect.options.length !== runs.length || runs.some((id, i) => runSelect.options[i].value !== id)) {
      runSelect.replaceChildren(...runs.map((id) => new Option(id, id)));
    }
    if (state.run !== null) runSelect.value = state.run;
    const sourceSelect = document.getElementById("source-select");
    const sources = Array.from(state.sources).sort();
    if (sourceSelect.options.length !== sources.length + 1) {
      sourceSelect.replaceChildren(new Option("all sources", ""), ...sources.map((s) => new Option(s, s)));
    }
    sourceSelect.value = state.source;
  }

  const DRAW = {
    selectors: drawSelectors,
    spectrum: drawSpectrum,
    trends: () => drawTrendPanel("panel-trends"),
    flow: () => drawTrendPanel("panel-flow"),
    decay: drawDecay,
    phasor: drawPhasor,
    conditions: drawConditions,
    health: drawHealth,
  };

  function redraw() {
    for (const name of Array.from(dirty)) {
      dirty.delete(name);
      try {
        DRAW[name]();
      } catch (err) {
        showError(err);
      }
    }
    state.redraws += 1;
  }

  // ---- start ----

  async function reload() {
    try {
      await loadHistory();
      clearError();
    } catch (err) {
      showError(err);
    }
  }

  async function start() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (fragment.get("token")) {
      sessionStorage.setItem("flowdaq-token", fragment.get("token"));
      history.replaceState(null, "", location.pathname + location.search);
    }
    state.token = sessionStorage.getItem("flowdaq-token");
    document.getElementById("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.token = document.getElementById("token-input").value;
      sessionStorage.setItem("flowdaq-token", state.token);
      location.reload();
    });
    document.getElementById("run-select").addEventListener("change", (event) => {
      state.run = event.target.value;
      reload();
    });
    document.getElementById("pause-button").addEventListener("click", togglePause);
    document.getElementById("source-select").addEventListener("change", (event) => {
      state.source = event.target.value;
      reload();
    });
    setInterval(redraw, REDRAW_MS);
    setInterval(pollHealth, HEALTH_MS);
    pollHealth();
    // Follow first, so no row falls between history and the live feed.
    follow();
    try {
      await loadRuns();
      await loadHistory();
      clearError();
    } catch (err) {
      showError(err);
    }
  }

  start();
})();
