// The cluster dashboard: polls /api/cluster once a second and updates the page in place.
//
// Every value from the server is untrusted text: it reaches the page through textContent and setAttribute on
// attributes that cannot run script, never through innerHTML. Lists are reconciled by key, so an expanded
// traceback, a selected request or a hovered chart survives the next poll.
"use strict";

(() => {
  const POLL_MS = 1000;
  const FETCH_TIMEOUT_MS = 5000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const CHART_HEIGHT = 150;
  const CHART_MARGIN = { top: 10, right: 46, bottom: 20, left: 46 };
  const CHART_TICKS = 4;

  // ---- Defensive reading: the page must render whatever the server (of whatever version) sends. ----

  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const list = (v) => (Array.isArray(v) ? v.filter(isObject) : []);
  const fields = (v) => (isObject(v) ? v : {});
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  const str = (v) => (typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? String(v) : null);
  const show = (v) => {
    const s = str(v);
    return s === null || s === "" ? "-" : s;
  };

  const pad2 = (n) => String(n).padStart(2, "0");

  function fmtTime(epoch) {
    const t = num(epoch);
    if (t === null) return "-";
    const d = new Date(t * 1000);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  function fmtMs(v) {
    const n = num(v);
    if (n === null) return "-";
    if (n < 10) return n.toFixed(2);
    if (n < 100) return n.toFixed(1);
    return Math.round(n).toLocaleString("en");
  }

  function fmtRate(v) {
    const n = num(v);
    if (n === null) return "-";
    return n < 100 ? n.toFixed(1) : Math.round(n).toLocaleString("en");
  }

  function fmtPct(v) {
    const n = num(v);
    return n === null ? "-" : `${Math.round(n * 100)}%`;
  }

  function fmtBytes(v) {
    const n = num(v);
    if (n === null) return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${units[unit]}`;
  }

  function fmtAge(seconds) {
    if (seconds === null) return "";
    if (seconds < 2) return "just now";
    if (seconds < 120) return `${Math.round(seconds)} s ago`;
    return `${Math.round(seconds / 60)} min ago`;
  }

  // ---- DOM helpers ----

  const byId = (id) => document.getElementById(id);

  /** An element with attributes (all set as plain attributes or text) and children (nodes or strings). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, String(value));
    }
    return node;
  }

  function setText(node, value) {
    if (node.textContent !== value) node.textContent = value;
  }

  function setData(node, name, value) {
    const s = value === null || value === undefined ? "" : String(value);
    if (node.dataset[name] !== s) node.dataset[name] = s;
  }

  function badge(label, kind) {
    return el("span", { class: `badge badge-${kind}`, text: label });
  }

  function replaceChildren(node, ...children) {
    node.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
  }

  /**
   * Makes the children of `container` match `items`, in order, reusing the element of each key: `create(item)`
   * builds a new one, `update(node, item)` refreshes one (new or reused).
   */
  function reconcile(container, items, keyOf, create, update) {
    const existing = new Map();
    for (const child of Array.from(container.children)) {
      if (child.dataset.key === undefined) child.remove();
      else existing.set(child.dataset.key, child);
    }
    const seen = new Set();
    let previous = null;
    items.forEach((item, index) => {
      let key = String(keyOf(item, index));
      if (seen.has(key)) key = `${key}#${index}`;
      seen.add(key);
      let node = existing.get(key);
      if (node) existing.delete(key);
      else {
        node = create(item);
        node.dataset.key = key;
      }
      update(node, item);
      const expected = previous ? previous.nextSibling : container.firstChild;
      if (expected !== node) container.insertBefore(node, expected);
      previous = node;
    });
    for (const node of existing.values()) node.remove();
  }

  function setCount(id, emptyId, count) {
    setText(byId(id), count > 0 ? String(count) : "");
    byId(emptyId).hidden = count > 0;
  }

  function bar(fraction, kind) {
    const fill = el("span", { class: "bar-fill" });
    const wrap = el("span", { class: `bar bar-${kind}`, role: "presentation" }, fill);
    updateBar(wrap, fraction);
    return wrap;
  }

  function updateBar(wrap, fraction) {
    const f = num(fraction);
    const clamped = f === null ? 0 : Math.max(0, Math.min(1, f));
    const fill = wrap.firstChild;
    fill.style.width = `${(clamped * 100).toFixed(1)}%`;
    wrap.classList.toggle("bar-warn", f !== null && f > 0.7 && f <= 0.9);
    wrap.classList.toggle("bar-hot", f !== null && f > 0.9);
  }

  const newestFirst = (items) => items.slice().sort((a, b) => (num(b.time) ?? 0) - (num(a.time) ?? 0));

  // ---- Header ----

  function renderSummary(view, nodes) {
    const executors = nodes.flatMap((n) => list(n.executors));
    const draining = nodes.filter((n) => n.state === "draining").length;
    const busy = executors.filter((e) => (num(e.utilization) ?? 0) > 0.05).length;
    const gpus = executors.filter((e) => e.kind === "gpu").length;
    const schedulers = Array.isArray(view.schedulers) ? view.schedulers.map(show) : [];
    const functions = list(view.functions);
    const dags = list(view.dags);

    setText(byId("sum-nodes"), String(nodes.length));
    setText(byId("sum-nodes-note"), draining ? `${draining} draining` : "");
    setText(byId("sum-executors"), String(executors.length));
    setText(byId("sum-executors-note"), `${busy} busy${gpus ? ` · ${gpus} GPU` : ""}`);
    setText(byId("sum-schedulers"), String(schedulers.length));
    setText(byId("sum-schedulers-note"), schedulers.join(", "));
    byId("sum-schedulers-note").title = schedulers.join("\n");
    setText(byId("sum-functions"), String(functions.length));
    setText(byId("sum-functions-note"), `${dags.length} DAG${dags.length === 1 ? "" : "s"}`);

    const autoscale = byId("sum-autoscale");
    const on = view.autoscale === true;
    setText(autoscale, view.autoscale === undefined || view.autoscale === null ? "-" : on ? "on" : "off");
    autoscale.className = on ? "on" : "off";

    const generated = num(view.generated_at);
    setText(byId("sum-updated"), fmtTime(generated));
    setData(byId("sum-updated"), "generatedAt", generated);
  }

  function renderStatus(ok, message) {
    const status = byId("status");
    status.className = `status ${ok ? "status-ok" : "status-down"}`;
    setText(status, message);
    setData(status, "state", ok ? "live" : "down");
  }

  function renderAge() {
    const generated = num(state.view && state.view.generated_at);
    const age = generated === null ? null : Math.max(0, Date.now() / 1000 - generated);
    setText(byId("sum-updated-note"), fmtAge(age));
  }

  // ---- Nodes ----

  function createNode() {
    const head = el(
      "div",
      { class: "node-head" },
      el("span", { class: "node-addr" }),
      el("span", { class: "node-state" }),
    );
    const cache = el(
      "div",
      { class: "cache-line" },
      el("span", { class: "cache-label", text: "Cache" }),
      bar(0, "cache"),
      el("span", { class: "cache-text" }),
    );
    const table = el(
      "table",
      { class: "exec-table" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", { text: "Thread" }),
          el("th", { text: "Kind" }),
          el("th", { class: "util-col", text: "Utilization" }),
          el("th", { text: "Status" }),
          el("th", { text: "Pinned functions" }),
        ),
      ),
      el("tbody", {}),
    );
    const none = el("p", { class: "empty small", text: "No executors." });
    return el("article", { class: "node-card", "data-testid": "node-card" }, head, cache, table, none);
  }

  function updateNode(card, node) {
    const address = show(node.address);
    const draining = node.state === "draining";
    setData(card, "node", address);
    setData(card, "state", show(node.state));
    card.classList.toggle("draining", draining);
    setText(card.querySelector(".node-addr"), address);
    const stateSlot = card.querySelector(".node-state");
    const stateLabel = show(node.state);
    if (stateSlot.textContent !== stateLabel) {
      replaceChildren(stateSlot, badge(stateLabel, draining ? "warn" : node.state === "active" ? "ok" : "muted"));
    }

    const cache = isObject(node.cache) ? node.cache : null;
    const cacheBar = card.querySelector(".cache-line .bar");
    updateBar(cacheBar, cache ? cache.hit_ratio : null);
    cacheBar.classList.toggle("bar-none", !cache);
    let cacheText = "no report yet";
    if (cache) {
      const hits = num(cache.hits);
      const misses = num(cache.misses);
      const count = (n) => n.toLocaleString("en");
      const lookups = hits !== null && misses !== null ? ` (${count(hits)} / ${count(hits + misses)})` : "";
      cacheText =
        `${fmtPct(cache.hit_ratio)} hits${lookups} · ${show(cache.keys)} keys · ${fmtBytes(cache.bytes)}`;
    }
    setText(card.querySelector(".cache-text"), cacheText);
    setData(card, "cacheKeys", cache ? num(cache.keys) : "");
    setData(card, "hitRatio", cache ? num(cache.hit_ratio) : "");

    const executors = list(node.executors).slice().sort((a, b) => (num(a.tid) ?? 0) - (num(b.tid) ?? 0));
    reconcile(card.querySelector("tbody"), executors, (e, i) => show(e.tid ?? i), createExecutor, (row, e) =>
      updateExecutor(row, e, address),
    );
    card.querySelector(".empty").hidden = executors.length > 0;
    card.querySelector("table").hidden = executors.length === 0;
  }

  function createExecutor() {
    return el(
      "tr",
      { "data-testid": "executor-row" },
      el("td", { class: "tid" }),
      el("td", { class: "kind" }),
      el("td", { class: "util-col" }, bar(0, "util"), el("span", { class: "util-text" })),
      el("td", { class: "run" }),
      el("td", { class: "pinned" }),
    );
  }

  function updateExecutor(row, executor, address) {
    const [tid, kind, util, run, pinned] = row.children;
    setData(row, "node", address);
    setData(row, "tid", show(executor.tid));
    setText(tid, `#${show(executor.tid)}`);

    const kindLabel = str(executor.kind) ? String(executor.kind).toUpperCase() : "-";
    if (kind.textContent !== kindLabel) {
      replaceChildren(kind, badge(kindLabel, executor.kind === "gpu" ? "gpu" : "cpu"));
    }
    setData(row, "kind", show(executor.kind));

    updateBar(util.firstChild, executor.utilization);
    setText(util.lastChild, fmtPct(executor.utilization));
    setData(row, "utilization", num(executor.utilization));

    const running = executor.running === true;
    const known = executor.running === true || executor.running === false;
    const runLabel = known ? (running ? "running" : "departing") : "-";
    if (run.textContent !== runLabel) replaceChildren(run, badge(runLabel, running ? "ok" : "warn"));
    setData(row, "running", running);

    const functions = Array.isArray(executor.functions) ? executor.functions.map(show) : [];
    const label = functions.join("\u0000");
    if (pinned.dataset.functions !== label) {
      pinned.dataset.functions = label;
      if (functions.length === 0) replaceChildren(pinned, el("span", { class: "muted", text: "none" }));
      else replaceChildren(pinned, ...functions.map((f) => el("span", { class: "chip", text: f })));
    }
  }

  function renderNodes(nodes) {
    reconcile(byId("nodes"), nodes, (n, i) => show(n.address ?? i), createNode, updateNode);
    setCount("nodes-count", "nodes-empty", nodes.length);
  }

  // ---- Functions ----

  function renderFunctions(functions) {
    const sorted = functions.slice().sort((a, b) => show(a.name).localeCompare(show(b.name)));
    reconcile(
      byId("functions"),
      sorted,
      (f, i) => show(f.name ?? i),
      () => {
        const cells = Array.from({ length: 5 }, (_, i) => el("td", { class: i ? "num" : "name" }));
        return el("tr", { "data-testid": "function-row" }, ...cells);
      },
      (row, f) => {
        setData(row, "function", show(f.name));
        const values = [show(f.name), show(f.replicas), fmtRate(f.calls_per_s), fmtMs(f.p50_ms), fmtMs(f.p99_ms)];
        values.forEach((value, i) => setText(row.children[i], value));
      },
    );
    setCount("functions-count", "functions-empty", functions.length);
  }

  // ---- DAGs and their charts ----

  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const f = raw / magnitude;
    const nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
    return nice * magnitude;
  }

  function fmtTick(value, step) {
    if (step >= 1) return Math.round(value).toLocaleString("en");
    const digits = Math.min(3, Math.max(1, -Math.floor(Math.log10(step))));
    return value.toFixed(digits);
  }

  function createDag() {
    const chart = svg("svg", { class: "chart", role: "img", "data-testid": "dag-chart", height: CHART_HEIGHT });
    chart.addEventListener("mousemove", (event) => {
      chart._hoverX = event.clientX - chart.getBoundingClientRect().left;
      drawHover(chart);
    });
    chart.addEventListener("mouseleave", () => {
      chart._hoverX = null;
      drawHover(chart);
    });
    return el(
      "article",
      { class: "dag-card", "data-testid": "dag-card" },
      el(
        "div",
        { class: "dag-head" },
        el("span", { class: "dag-name" }),
        el("span", { class: "dag-chain" }),
        el("span", { class: "dag-stats" }),
      ),
      chart,
    );
  }

  function updateDag(card, dag) {
    const name = show(dag.name);
    setData(card, "dag", name);
    setText(card.querySelector(".dag-name"), name);
    const chain = Array.isArray(dag.functions) ? dag.functions.map(show).join(" → ") : "-";
    setText(card.querySelector(".dag-chain"), chain);
    setText(
      card.querySelector(".dag-stats"),
      `${fmtRate(dag.calls_per_s)} calls/s · p50 ${fmtMs(dag.p50_ms)} ms · p99 ${fmtMs(dag.p99_ms)} ms`,
    );
    drawChart(card.querySelector("svg.chart"), name, dag.series);
  }

  function linePath(points, x, y, value) {
    let d = "";
    let open = false;
    for (const p of points) {
      const v = value(p);
      if (v === null) {
        open = false;
        continue;
      }
      d += `${open ? "L" : "M"}${x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
      open = true;
    }
    return d;
  }

  function drawChart(chart, name, series) {
    const points = list(series)
      .filter((p) => num(p.t) !== null)
      .map((p) => ({ t: p.t, p50: num(p.p50_ms), p99: num(p.p99_ms), rate: num(p.calls_per_s) }))
      .sort((a, b) => a.t - b.t);
    const width = Math.max(240, Math.floor(chart.parentNode.clientWidth || 520));
    const m = CHART_MARGIN;
    const plotW = width - m.left - m.right;
    const plotH = CHART_HEIGHT - m.top - m.bottom;

    chart.setAttribute("width", String(width));
    chart.setAttribute("viewBox", `0 0 ${width} ${CHART_HEIGHT}`);
    chart.setAttribute("data-dag", name);
    chart.setAttribute("data-points", String(points.length));
    chart.setAttribute("aria-label", `latency and throughput of DAG ${name}`);
    chart.replaceChildren();
    chart._chart = null;

    if (points.length === 0) {
      chart.append(
        svg("text", {
          x: width / 2,
          y: CHART_HEIGHT / 2,
          class: "chart-empty",
          "text-anchor": "middle",
          text: "no calls yet",
        }),
      );
      return;
    }

    const t0 = points[0].t;
    const t1 = points[points.length - 1].t;
    const span = t1 > t0 ? t1 - t0 : 1;
    const x = (t) => m.left + ((t - t0) / span) * plotW;
    const msMax = Math.max(0, ...points.flatMap((p) => [p.p50 ?? 0, p.p99 ?? 0]));
    const rateMax = Math.max(0, ...points.map((p) => p.rate ?? 0));
    const msStep = niceStep(msMax / CHART_TICKS);
    const rateStep = niceStep(rateMax / CHART_TICKS);
    const yMs = (v) => m.top + plotH - (v / (msStep * CHART_TICKS)) * plotH;
    const yRate = (v) => m.top + plotH - (v / (rateStep * CHART_TICKS)) * plotH;

    // Both axes have the same number of ticks, so one set of grid lines serves both.
    const grid = svg("g", { class: "chart-grid" });
    for (let i = 0; i <= CHART_TICKS; i += 1) {
      const y = m.top + plotH - (i / CHART_TICKS) * plotH;
      grid.append(svg("line", { x1: m.left, x2: m.left + plotW, y1: y, y2: y, class: i ? "grid" : "axis" }));
      const ms = fmtTick(i * msStep, msStep);
      const rate = fmtTick(i * rateStep, rateStep);
      grid.append(svg("text", { x: m.left - 6, y: y + 3.5, "text-anchor": "end", class: "tick tick-ms", text: ms }));
      grid.append(
        svg("text", { x: m.left + plotW + 6, y: y + 3.5, "text-anchor": "start", class: "tick tick-rate", text: rate }),
      );
    }
    const labelY = CHART_HEIGHT - 5;
    grid.append(svg("text", { x: m.left, y: labelY, "text-anchor": "start", class: "tick", text: fmtTime(t0) }));
    if (t1 > t0) {
      const end = fmtTime(t1);
      grid.append(svg("text", { x: m.left + plotW, y: labelY, "text-anchor": "end", class: "tick", text: end }));
    }
    chart.append(grid);

    const ratePath = linePath(points, x, yRate, (p) => p.rate);
    if (ratePath) {
      const base = (m.top + plotH).toFixed(1);
      const withRate = points.filter((p) => p.rate !== null);
      const firstX = x(withRate[0].t).toFixed(1);
      const lastX = x(withRate[withRate.length - 1].t).toFixed(1);
      const area = `${ratePath}L${lastX},${base}L${firstX},${base}Z`;
      // An area only makes sense for an unbroken line; a gap would be filled across.
      if (withRate.length === points.length) chart.append(svg("path", { d: area, class: "area-rate" }));
      chart.append(svg("path", { d: ratePath, class: "line line-rate" }));
    }
    chart.append(svg("path", { d: linePath(points, x, yMs, (p) => p.p99), class: "line line-p99" }));
    chart.append(svg("path", { d: linePath(points, x, yMs, (p) => p.p50), class: "line line-p50" }));

    // The newest values as dots, so a single point (or the line's end) is visible.
    const last = points[points.length - 1];
    const dots = [
      [last.rate, yRate, "rate"],
      [last.p99, yMs, "p99"],
      [last.p50, yMs, "p50"],
    ];
    for (const [value, y, kind] of dots) {
      if (value !== null) {
        chart.append(svg("circle", { cx: x(last.t), cy: y(value), r: 2.6, class: `dot dot-${kind}` }));
      }
    }

    chart._chart = { points, x, width, plotH, top: m.top, left: m.left, plotW };
    drawHover(chart);
  }

  function drawHover(chart) {
    const old = chart.querySelector(".hover");
    if (old) old.remove();
    const c = chart._chart;
    if (!c || chart._hoverX === null || chart._hoverX === undefined) return;
    if (chart._hoverX < c.left - 8 || chart._hoverX > c.left + c.plotW + 8) return;
    let best = c.points[0];
    for (const p of c.points) if (Math.abs(c.x(p.t) - chart._hoverX) < Math.abs(c.x(best.t) - chart._hoverX)) best = p;

    const px = c.x(best.t);
    const lines = [
      fmtTime(best.t),
      `p50 ${fmtMs(best.p50)} ms`,
      `p99 ${fmtMs(best.p99)} ms`,
      `${fmtRate(best.rate)} calls/s`,
    ];
    const boxW = 104;
    const boxH = 14 * lines.length + 8;
    const boxX = px + 8 + boxW > c.left + c.plotW ? px - 8 - boxW : px + 8;
    const group = svg("g", { class: "hover" });
    group.append(svg("line", { x1: px, x2: px, y1: c.top, y2: c.top + c.plotH, class: "hover-line" }));
    group.append(svg("rect", { x: boxX, y: c.top, width: boxW, height: boxH, rx: 4, class: "hover-box" }));
    lines.forEach((line, i) => {
      const y = c.top + 16 + i * 14;
      group.append(svg("text", { x: boxX + 8, y, class: i ? "hover-text" : "hover-title", text: line }));
    });
    chart.append(group);
  }

  function renderDags(dags) {
    const sorted = dags.slice().sort((a, b) => show(a.name).localeCompare(show(b.name)));
    reconcile(byId("dags"), sorted, (d, i) => show(d.name ?? i), createDag, updateDag);
    setCount("dags-count", "dags-empty", dags.length);
  }

  // ---- Recent requests ----

  function renderRequests(traces) {
    const sorted = newestFirst(traces);
    reconcile(
      byId("requests"),
      sorted,
      (t, i) => show(t.request_id ?? i),
      (t) => {
        const row = el(
          "tr",
          { "data-testid": "request-row", tabindex: "0" },
          el("td", { class: "time" }),
          el("td", { class: "mono ellipsis" }),
          el("td", { class: "name" }),
          el("td", { class: "num" }),
          el("td", { class: "num" }),
          el("td", {}),
        );
        const open = () => loadTrace(row.dataset.requestId);
        row.addEventListener("click", open);
        row.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            open();
          }
        });
        return row;
      },
      (row, t) => {
        const id = show(t.request_id);
        setData(row, "requestId", id);
        row.classList.toggle("selected", id === state.traceId);
        const [time, request, name, hops, duration, result] = row.children;
        setText(time, fmtTime(t.time));
        setText(request, id);
        request.title = id;
        setText(name, show(t.name));
        setText(hops, show(t.hops));
        setText(duration, fmtMs(t.duration_ms));
        const label = t.ok === true ? "ok" : t.ok === false ? "failed" : "-";
        if (result.textContent !== label) replaceChildren(result, badge(label, t.ok === false ? "bad" : "ok"));
      },
    );
    setCount("requests-count", "requests-empty", traces.length);
  }

  // ---- Errors and decisions ----

  function renderErrors(errors) {
    reconcile(
      byId("errors"),
      newestFirst(errors),
      (e, i) => `${show(e.time)}|${show(e.request_id)}|${show(e.function)}|${show(e.node)}|${show(e.message ?? i)}`,
      () => {
        const traceButton = el("button", { type: "button", class: "link trace-link", text: "trace" });
        traceButton.addEventListener("click", (event) => {
          // The button sits in the summary; without this the click would also fold the traceback.
          event.preventDefault();
          event.stopPropagation();
          loadTrace(traceButton.closest("details").dataset.requestId);
        });
        const summary = el(
          "summary",
          {},
          el("span", { class: "time" }),
          el("span", { class: "err-class" }),
          el("span", { class: "err-where" }),
          el("span", { class: "break" }),
          el("span", { class: "err-message" }),
          traceButton,
        );
        const traceback = el("pre", { class: "traceback" });
        return el("details", { class: "error-item", "data-testid": "error-row" }, summary, traceback);
      },
      (item, e) => {
        const requestId = str(e.request_id);
        setData(item, "requestId", requestId ?? "");
        const [time, cls, where, , message, traceButton] = item.firstChild.children;
        setText(time, fmtTime(e.time));
        setText(cls, show(e.error));
        const place = [
          str(e.dag) ? `DAG ${e.dag}` : null,
          str(e.function) ? `function ${e.function}` : null,
          str(e.node) ? `on ${e.node}` : null,
        ].filter(Boolean);
        setText(where, place.length ? place.join(" · ") : "-");
        traceButton.hidden = !requestId;
        setText(message, show(e.message));
        setText(item.lastChild, str(e.traceback) || "(no traceback)");
      },
    );
    setCount("errors-count", "errors-empty", errors.length);
  }

  function renderDecisions(decisions) {
    reconcile(
      byId("decisions"),
      newestFirst(decisions),
      (d, i) => `${show(d.time)}|${show(d.kind)}|${show(d.reason ?? i)}`,
      () =>
        el(
          "tr",
          { "data-testid": "decision-row" },
          el("td", { class: "time" }),
          el("td", {}),
          el("td", { class: "reason" }),
        ),
      (row, d) => {
        const [time, kind, reason] = row.children;
        setText(time, fmtTime(d.time));
        const label = show(d.kind).replace(/Instruction$/, "");
        if (kind.textContent !== label) replaceChildren(kind, badge(label, decisionKind(label)));
        setText(reason, show(d.reason));
      },
    );
    setCount("decisions-count", "decisions-empty", decisions.length);
  }

  function decisionKind(label) {
    if (/^(Add|Replicate)/.test(label)) return "ok";
    if (/^(Drain|Release|Dereplicate|Remove)/.test(label)) return "warn";
    if (/Refused|Cancel/.test(label)) return "bad";
    return "muted";
  }

  // ---- Trace view ----

  function traceMessage(message, isError) {
    const node = byId("trace-message");
    node.hidden = false;
    node.classList.toggle("error-text", Boolean(isError));
    setText(node, message);
  }

  async function loadTrace(requestId) {
    const id = (requestId || "").trim();
    if (!id) return;
    state.traceId = id;
    byId("trace-input").value = id;
    history.replaceState(null, "", `#trace=${encodeURIComponent(id)}`);
    for (const row of byId("requests").children) row.classList.toggle("selected", row.dataset.requestId === id);
    const ticket = ++state.traceTicket;
    traceMessage(`Loading the trace of ${id}…`, false);
    try {
      const response = await fetchWithTimeout(`/api/traces/${encodeURIComponent(id)}`);
      const body = await response.json().catch(() => ({}));
      if (ticket !== state.traceTicket) return;
      if (!response.ok) {
        byId("trace-body").hidden = true;
        traceMessage(str(fields(body).error) || `the trace could not be loaded (HTTP ${response.status})`, true);
        return;
      }
      renderTrace(fields(body), id);
    } catch (error) {
      if (ticket !== state.traceTicket) return;
      byId("trace-body").hidden = true;
      traceMessage(`the trace could not be loaded: ${error.message || error}`, true);
    }
  }

  function readBadge(hit) {
    if (hit === true) return badge("hit", "ok");
    if (hit === false) return badge("miss", "warn");
    return badge("-", "muted");
  }

  function renderTrace(trace, requestedId) {
    const hops = list(trace.hops)
      .map((hop, index) => ({ hop, index, start: num(hop.start), duration: num(hop.duration_ms) }))
      .sort((a, b) => (a.start ?? Infinity) - (b.start ?? Infinity) || a.index - b.index);
    const timed = hops.filter((h) => h.start !== null);
    const t0 = timed.length ? Math.min(...timed.map((h) => h.start)) : 0;
    const tEnd = timed.length ? Math.max(...timed.map((h) => h.start + (h.duration ?? 0) / 1000)) : 0;
    const spanMs = Math.max((tEnd - t0) * 1000, 0.001);

    byId("trace-message").hidden = true;
    byId("trace-body").hidden = false;
    const summary = byId("trace-summary");
    setData(summary, "requestId", show(trace.request_id ?? requestedId));
    replaceChildren(
      summary,
      el("span", { class: "mono strong", text: show(trace.request_id ?? requestedId) }),
      el("span", { text: show(trace.name) }),
      badge(trace.ok === true ? "ok" : trace.ok === false ? "failed" : "-", trace.ok === false ? "bad" : "ok"),
      el("span", {
        class: "muted",
        text: `${hops.length} hop${hops.length === 1 ? "" : "s"} · ${fmtMs(spanMs)} ms end to end`,
      }),
    );

    const step = niceStep(spanMs / 4);
    const axis = byId("trace-axis");
    // The rows' grid lines (a CSS gradient) repeat at the axis' tick spacing.
    axis.parentNode.style.setProperty("--tick", `${(step / spanMs) * 100}%`);
    const ticks = [];
    for (let v = 0; v <= spanMs + 1e-9; v += step) {
      const tick = el("span", { class: "wf-tick", text: `${fmtTick(v, step)} ms` });
      tick.style.left = `${(v / spanMs) * 100}%`;
      ticks.push(tick);
    }
    replaceChildren(
      axis,
      el("span", { class: "wf-label" }),
      el("span", { class: "wf-track" }, ...ticks),
      el("span", { class: "wf-dur" }),
    );

    const rows = hops.map(({ hop, index, start, duration }) => {
      const role = show(hop.role);
      const failed = hop.ok === false;
      // A scheduler's or a client's hop places the request; executors' run it.
      const kind = role === "executor" ? "executor" : "scheduler";
      const barNode = el("span", { class: `wf-bar wf-${kind}${failed ? " wf-failed" : ""}` });
      if (start !== null) {
        barNode.style.left = `${(((start - t0) * 1000) / spanMs) * 100}%`;
        barNode.style.width = `${(((duration ?? 0) / spanMs) * 100).toFixed(3)}%`;
      } else barNode.hidden = true;
      const what = str(hop.function) || str(hop.dag) || "";
      const queued = num(hop.queue_ms) !== null ? `, queued ${fmtMs(hop.queue_ms)} ms` : "";
      barNode.title = `${role} ${what} on ${show(hop.node)}: ${fmtMs(duration)} ms${queued}`;
      return el(
        "div",
        {
          class: `wf-row${failed ? " failed" : ""}`,
          "data-testid": "trace-hop",
          "data-role": role,
          "data-function": str(hop.function) ?? "",
          "data-node": show(hop.node),
          "data-index": String(index),
        },
        el(
          "span",
          { class: "wf-label" },
          badge(role, kind === "scheduler" ? "sched" : "exec"),
          el("span", { class: "wf-what", text: what || show(hop.node), title: show(hop.node) }),
        ),
        el("span", { class: "wf-track" }, barNode),
        el("span", { class: "wf-dur", text: fmtMs(duration) }),
      );
    });
    replaceChildren(byId("trace-hops"), ...rows);

    const tableRows = hops.flatMap(({ hop, index, duration }, position) => {
      const reads = list(hop.reads);
      const readCell = el("td", { class: "reads" });
      if (reads.length === 0) readCell.append(el("span", { class: "muted", text: "-" }));
      for (const read of reads) {
        readCell.append(
          el(
            "div",
            { class: "read", "data-testid": "trace-read" },
            el("span", { class: "mono", text: show(read.key) }),
            " ",
            readBadge(read.hit),
            el("span", { class: "muted", text: ` ${show(read.source)}` }),
            el("span", { class: "muted mono version", text: show(read.version) }),
          ),
        );
      }
      const failed = hop.ok === false;
      const row = el(
        "tr",
        { "data-testid": "trace-row", "data-index": String(index), class: failed ? "failed" : null },
        el("td", { class: "muted", text: String(position + 1) }),
        el("td", { text: show(hop.role) }),
        el("td", { class: "mono", text: show(hop.node) }),
        el("td", { text: show(hop.function) }),
        el("td", { class: "num", text: fmtMs(duration) }),
        el("td", { class: "num", text: fmtMs(hop.queue_ms) }),
        readCell,
      );
      // The detail (a placement, an error) is often long: a row of its own keeps the columns narrow.
      const detailText = failed ? show(hop.error) : str(hop.detail);
      if (!detailText) return [row];
      row.classList.add("has-detail");
      const detail = el(
        "tr",
        { class: `detail-row${failed ? " failed" : ""}`, "data-testid": "trace-detail" },
        el("td", {}),
        el("td", { colspan: "6", class: failed ? "error-text" : "muted", text: detailText }),
      );
      return [row, detail];
    });
    replaceChildren(byId("trace-rows"), ...tableRows);
  }

  // ---- Polling ----

  const state = { view: null, traceId: null, traceTicket: 0, polls: 0 };

  async function fetchWithTimeout(url) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
    try {
      return await fetch(url, { signal: controller.signal, cache: "no-store" });
    } finally {
      clearTimeout(timer);
    }
  }

  function render(view) {
    const nodes = list(view.nodes);
    renderSummary(view, nodes);
    renderNodes(nodes);
    renderFunctions(list(view.functions));
    renderDags(list(view.dags));
    renderRequests(list(view.traces));
    renderErrors(list(view.errors));
    renderDecisions(list(view.decisions));
    renderAge();
  }

  async function poll() {
    try {
      const response = await fetchWithTimeout("/api/cluster");
      const body = await response.json().catch(() => null);
      if (!response.ok) throw new Error(str(fields(body).error) || `HTTP ${response.status}`);
      if (!isObject(body)) throw new Error("the answer is not a cluster view");
      state.view = body;
      render(body);
      renderStatus(true, "live");
    } catch (error) {
      // Keep showing the last view: a restarting management service should not blank the page.
      renderStatus(false, `cannot reach the management service (${error.message || error}); retrying`);
    } finally {
      state.polls += 1;
      document.body.dataset.polls = String(state.polls);
      setTimeout(poll, POLL_MS);
    }
  }

  function start() {
    byId("trace-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadTrace(byId("trace-input").value);
    });
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => state.view && renderDags(list(state.view.dags)), 150);
    });
    setInterval(renderAge, 1000);
    const match = /^#trace=(.+)$/.exec(location.hash);
    if (match) {
      try {
        loadTrace(decodeURIComponent(match[1]));
      } catch {
        // A hand-edited, malformed link: start without a trace.
      }
    }
    poll();
  }

  start();
})();
