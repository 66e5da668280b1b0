/* butte web UI: talking to the master. HTTP helpers, the operator event stream (RecordIO over
 * a streaming fetch), the metrics poller that feeds the overview and the chart, small caches,
 * and following the leading master after a failover. */
"use strict";

(function (B) {
  /** An answer other than 2xx: `status` and the master's message. */
  class ApiError extends Error {
    constructor(status, message) {
      super(message || `HTTP ${status}`);
      this.status = status;
    }
  }

  /** The master could not be reached at all (connection refused, reset, timed out). */
  class NetworkError extends Error {}

  const TIMEOUT_MS = 20000;

  async function request(path, init) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    const outer = init?.signal;
    if (outer) outer.addEventListener("abort", () => controller.abort(), { once: true });
    let response;
    try {
      response = await fetch(path, { cache: "no-store", ...init, signal: controller.signal });
    } catch (err) {
      if (outer?.aborted) throw err;
      B.leader.unreachable(err);
      throw new NetworkError(`master unreachable: ${err.message || err}`);
    } finally {
      clearTimeout(timer);
    }
    B.leader.reachable();
    if (!response.ok) {
      const text = await response.text().catch(() => "");
      throw new ApiError(response.status, text.trim().slice(0, 500) || response.statusText);
    }
    return response;
  }

  /** GET a JSON document from the master this page came from. */
  async function get(path, init) {
    const response = await request(path, init);
    return response.json();
  }

  /** One synchronous operator API v1 call: the call's payload object. */
  async function call(type, payload, init) {
    const body = { type };
    if (payload) body[type.toLowerCase()] = payload;
    const response = await request("/api/v1", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      ...init,
    });
    const text = await response.text();
    if (!text) return {};
    const answer = JSON.parse(text);
    return answer[type.toLowerCase()] || {};
  }

  // -- RecordIO -----------------------------------------------------------------------------

  /** Incremental RecordIO parser over bytes: `<decimal length>\n<length bytes of JSON>`. The
   * length counts bytes, so the buffer stays bytes until a record is complete. */
  class RecordIO {
    constructor(maxRecord) {
      this.buffer = new Uint8Array(0);
      this.max = maxRecord || 256 * 1024 * 1024;
      this.decoder = new TextDecoder();
    }

    /** Feeds a chunk; returns the parsed JSON records it completed. */
    feed(chunk) {
      const joined = new Uint8Array(this.buffer.length + chunk.length);
      joined.set(this.buffer, 0);
      joined.set(chunk, this.buffer.length);
      const out = [];
      let start = 0;
      for (;;) {
        const nl = joined.indexOf(10, start);
        if (nl < 0) {
          if (joined.length - start > 20) throw new Error("RecordIO length prefix too long");
          break;
        }
        const size = Number(this.decoder.decode(joined.subarray(start, nl)));
        if (!Number.isInteger(size) || size <= 0 || size > this.max) {
          throw new Error("bad RecordIO record length");
        }
        if (joined.length < nl + 1 + size) break;
        out.push(JSON.parse(this.decoder.decode(joined.subarray(nl + 1, nl + 1 + size))));
        start = nl + 1 + size;
      }
      this.buffer = joined.slice(start);
      return out;
    }
  }

  // -- the operator event stream ------------------------------------------------------------

  // Above these sizes the SUBSCRIBED snapshot (the whole state) costs the master more than
  // polling small documents does, so the page polls instead.
  const STREAM_MAX_TASKS = 20000;
  const STREAM_MAX_AGENTS = 2000;

  /** Keeps one `SUBSCRIBE` stream open and republishes its events on the bus:
   * `task` (TASK_ADDED/UPDATED), `agent`, `framework`, plus `live` with the mode
   * ("stream", "polling", "offline"). */
  class EventStream {
    constructor() {
      this.mode = "connecting";
      this.controller = null;
      this.retryMs = 1000;
      this.timer = null;
      this.watchdog = null;
      this.heartbeatSeconds = 15;
      this.events = 0;
    }

    setMode(mode, why) {
      this.mode = mode;
      this.why = why || "";
      B.bus.emit("live", { mode, why: this.why });
    }

    /** Whether pages should poll for changes (no stream is delivering them). */
    get polling() {
      return this.mode !== "stream";
    }

    tooBig(metrics) {
      if (!metrics) return false;
      let tasks = 0;
      for (const [name, value] of Object.entries(metrics)) {
        if (name.startsWith("master/tasks_")) tasks += value;
      }
      const agents = (metrics["master/slaves_active"] || 0) + (metrics["master/slaves_inactive"] || 0);
      return tasks > STREAM_MAX_TASKS || agents > STREAM_MAX_AGENTS;
    }

    start() {
      clearTimeout(this.timer);
      if (this.controller) return;
      if (this.tooBig(B.metrics.latest)) {
        this.setMode("polling", "large cluster: polling instead of the event stream");
        this.schedule(60000);
        return;
      }
      this.open().catch(() => {});
    }

    schedule(ms) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.start(), ms);
    }

    async open() {
      const controller = new AbortController();
      this.controller = controller;
      let response;
      try {
        response = await fetch("/api/v1", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/recordio" },
          body: JSON.stringify({ type: "SUBSCRIBE" }),
          signal: controller.signal,
          cache: "no-store",
        });
        if (!response.ok || !response.body) throw new ApiError(response.status, "SUBSCRIBE refused");
        await this.read(response.body.getReader(), controller);
        this.retryMs = 1000;
      } catch (err) {
        if (!(err instanceof ApiError)) B.leader.unreachable(err);
      } finally {
        clearTimeout(this.watchdog);
        if (this.controller === controller) this.controller = null;
        controller.abort();
      }
      this.setMode(B.leader.down ? "offline" : "polling", "event stream closed; reconnecting");
      this.schedule(this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 30000);
    }

    async read(reader, controller) {
      const parser = new RecordIO();
      this.armWatchdog(controller);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        this.armWatchdog(controller);
        for (const event of parser.feed(value)) this.dispatch(event);
      }
    }

    /** No bytes (heartbeats included) for 3 heartbeat intervals: the stream is dead. */
    armWatchdog(controller) {
      clearTimeout(this.watchdog);
      this.watchdog = setTimeout(() => controller.abort(), this.heartbeatSeconds * 3000 + 5000);
    }

    dispatch(event) {
      this.events += 1;
      switch (event.type) {
        case "SUBSCRIBED":
          this.heartbeatSeconds = event.subscribed?.heartbeat_interval_seconds || 15;
          B.leader.reachable();
          this.setMode("stream");
          // Everything may have changed while the page was not subscribed.
          B.bus.emit("resync", {});
          break;
        case "HEARTBEAT":
          break;
        case "TASK_ADDED":
          B.bus.emit("task", { type: event.type, task: event.task_added.task });
          break;
        case "TASK_UPDATED":
          B.bus.emit("task", { type: event.type, update: event.task_updated });
          break;
        case "AGENT_ADDED":
        case "AGENT_REMOVED":
          B.bus.emit("agent", { type: event.type, event });
          break;
        case "FRAMEWORK_ADDED":
        case "FRAMEWORK_UPDATED":
        case "FRAMEWORK_REMOVED":
          B.bus.emit("framework", { type: event.type, event });
          break;
        default:
          B.bus.emit("other", event);
      }
    }

    stop() {
      clearTimeout(this.timer);
      this.controller?.abort();
    }
  }

  // -- metrics ------------------------------------------------------------------------------

  const SAMPLE_MS = 5000;
  const HISTORY_MS = 3600 * 1000;
  const SCALARS = ["cpus", "mem", "disk", "gpus"];

  /** Polls `/metrics/snapshot` every few seconds (a few KB, whatever the cluster's size),
   * publishes `metrics` on the bus and keeps an hour of utilisation samples in
   * sessionStorage so the chart survives reloads. */
  class MetricsPoller {
    constructor() {
      this.latest = null;
      this.key = `butte.samples.${location.host}`;
      this.samples = this.load();
      this.timer = null;
    }

    load() {
      try {
        const raw = JSON.parse(sessionStorage.getItem(this.key) || "[]");
        return Array.isArray(raw) ? raw.filter((s) => Array.isArray(s) && s.length === 13) : [];
      } catch (err) {
        return [];
      }
    }

    save() {
      try {
        sessionStorage.setItem(this.key, JSON.stringify(this.samples));
      } catch (err) {
        // Storage full or disabled: the chart just starts afresh on the next load.
      }
    }

    /** One sample: [epoch ms, then used, total, offered for cpus, mem, disk, gpus]. */
    record(m) {
      const sample = [Date.now()];
      for (const name of SCALARS) {
        sample.push(
          round(m[`master/${name}_used`]),
          round(m[`master/${name}_total`]),
          round(m[`master/${name}_offered`]),
        );
      }
      this.samples.push(sample);
      const cutoff = Date.now() - HISTORY_MS;
      while (this.samples.length && this.samples[0][0] < cutoff) this.samples.shift();
      this.save();
    }

    async poll() {
      clearTimeout(this.timer);
      try {
        const m = await get("/metrics/snapshot");
        this.latest = m;
        this.record(m);
        B.bus.emit("metrics", m);
        B.leader.checkElected(m);
      } catch (err) {
        B.bus.emit("metrics-error", err);
      }
      this.timer = setTimeout(() => this.poll(), document.hidden ? SAMPLE_MS * 3 : SAMPLE_MS);
    }
  }

  const round = (v) => Math.round(Number(v || 0) * 1000) / 1000;

  // -- caches -------------------------------------------------------------------------------

  /** Remembers a fetched document for `ttl` ms; concurrent callers share one request. */
  class Cached {
    constructor(load, ttl) {
      this.load = load;
      this.ttl = ttl;
      this.value = null;
      this.at = 0;
      this.pending = null;
    }
    get(force) {
      if (!force && this.value && Date.now() - this.at < this.ttl) return Promise.resolve(this.value);
      if (!this.pending) {
        const started = performance.now();
        this.pending = this.load()
          .then((value) => {
            this.value = value;
            this.at = Date.now();
            this.lastMs = performance.now() - started;
            return value;
          })
          .finally(() => {
            this.pending = null;
          });
      }
      return this.pending;
    }
    invalidate() {
      this.at = 0;
    }
  }

  // Frameworks without their tasks (operator GET_FRAMEWORKS): names for ids, offers.
  const frameworks = new Cached(() => call("GET_FRAMEWORKS"), 5000);
  // Agents and frameworks with per-state task counts, without the tasks themselves.
  const summary = new Cached(() => get("/master/state-summary"), 3000);
  const agentNames = new Map();

  function frameworkIndex(doc) {
    const out = new Map();
    for (const kind of ["frameworks", "completed_frameworks"]) {
      for (const fw of doc?.[kind] || []) {
        out.set(fw.framework_info.id.value, { ...fw, completed: kind === "completed_frameworks" });
      }
    }
    return out;
  }

  /** hostname of agent ids, fetched one by one (`/master/slaves?slave_id=`) when unknown. */
  async function agentHostnames(ids) {
    const missing = [...new Set(ids)].filter((id) => id && !agentNames.has(id));
    await Promise.all(
      missing.slice(0, 50).map(async (id) => {
        try {
          const doc = await get(`/master/slaves?slave_id=${encodeURIComponent(id)}`);
          const agent = (doc.slaves || [])[0];
          agentNames.set(id, agent ? `${agent.hostname}:${agent.port}` : "");
        } catch (err) {
          agentNames.set(id, "");
        }
      }),
    );
    return agentNames;
  }

  function rememberAgents(slaves) {
    for (const a of slaves || []) agentNames.set(a.id, `${a.hostname}:${a.port}`);
  }

  // -- following the leader -----------------------------------------------------------------

  const MASTERS_KEY = "butte.masters";

  /** Keeps this page on the leading master: a standby's metrics say `master/elected` 0, and
   * its `/master/state` names the leader, so the page moves there (same view). When this
   * master stops answering, the page retries it and probes the other masters it has seen. */
  class Leader {
    constructor() {
      this.down = false;
      this.probeTimer = null;
      this.known = this.loadKnown();
      this.remember(location.host);
    }

    loadKnown() {
      try {
        const list = JSON.parse(localStorage.getItem(MASTERS_KEY) || "[]");
        return Array.isArray(list) ? list.filter((x) => typeof x === "string").slice(0, 16) : [];
      } catch (err) {
        return [];
      }
    }

    remember(address) {
      if (!address || this.known.includes(address)) return;
      this.known.push(address);
      try {
        localStorage.setItem(MASTERS_KEY, JSON.stringify(this.known.slice(-16)));
      } catch (err) {
        // Not remembered: only this master is probed after a failover.
      }
    }

    reachable() {
      if (!this.down) return;
      this.down = false;
      clearTimeout(this.probeTimer);
      B.bus.emit("reconnected", {});
    }

    unreachable(err) {
      if (this.down) return;
      this.down = true;
      B.bus.emit("disconnected", { error: String(err?.message || err) });
      this.probe(1000);
    }

    probe(delay) {
      clearTimeout(this.probeTimer);
      this.probeTimer = setTimeout(async () => {
        if (!this.down) return;
        try {
          const response = await fetch("/health", { cache: "no-store" });
          if (response.ok) {
            this.reachable();
            return;
          }
        } catch (err) {
          // Still down; try the others.
        }
        const other = await this.findOther();
        if (other) {
          this.moveTo(other);
          return;
        }
        this.probe(Math.min(delay * 2, 10000));
      }, delay);
    }

    /** A master other than this page's that answers at all (a no-cors probe: the answer is
     * opaque, but it arrived). The page then moves there and, if that one is a standby, on
     * to the leader it names. */
    async findOther() {
      for (const address of this.known) {
        if (address === location.host) continue;
        try {
          await fetch(`${location.protocol}//${address}/health`, { mode: "no-cors", cache: "no-store" });
          return address;
        } catch (err) {
          // Not this one.
        }
      }
      return null;
    }

    moveTo(address) {
      const hops = Number(sessionStorage.getItem("butte.hops") || 0);
      if (hops >= 3) {
        B.bus.emit("leader-loop", { address });
        return;
      }
      sessionStorage.setItem("butte.hops", String(hops + 1));
      B.bus.emit("following", { address });
      location.assign(`${location.protocol}//${address}/${location.hash}`);
    }

    /** Called with every metrics snapshot. */
    async checkElected(metrics) {
      if (metrics["master/elected"] !== 0) {
        sessionStorage.removeItem("butte.hops");
        return;
      }
      try {
        const state = await get("/master/state");
        const info = state.leader_info;
        if (!info || !info.hostname) {
          B.bus.emit("no-leader", {});
          return;
        }
        const address = `${info.hostname}:${info.port}`;
        this.remember(address);
        if (address !== location.host) this.moveTo(address);
      } catch (err) {
        // Retried with the next snapshot.
      }
    }
  }

  Object.assign(B, {
    ApiError,
    NetworkError,
    get,
    call,
    RecordIO,
    EventStream,
    MetricsPoller,
    SCALARS,
    Cached,
    cache: { frameworks, summary, frameworkIndex, agentHostnames, agentNames, rememberAgents },
  });
  B.leader = new Leader();
  B.metrics = new MetricsPoller();
  B.stream = new EventStream();
})(window.Butte);
