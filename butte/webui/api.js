/* butte web UI: talking to the master. HTTP helpers, the master's change feed (RecordIO over
 * a streaming fetch), the metrics poller, the utilisation history, task usage, small caches,
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

  // -- live updates -------------------------------------------------------------------------

  /** Keeps the master's change feed (`GET /master/ui/changes`) open and republishes what it
   * says on the bus: `task`, `agent`, `framework` with {ids: Set, added, membership,
   * truncated}, plus `live` with the mode ("stream", "polling", "offline"). The feed starts
   * with nothing (no snapshot of the state), so it is used at any cluster size. */
  class EventStream {
    constructor() {
      this.mode = "connecting";
      this.controller = null;
      this.retryMs = 1000;
      this.timer = null;
      this.watchdog = null;
      this.heartbeatSeconds = 10;
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

    start() {
      clearTimeout(this.timer);
      if (this.controller) return;
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
        response = await fetch("/master/ui/changes", { signal: controller.signal, cache: "no-store" });
        if (!response.ok || !response.body) throw new ApiError(response.status, "change feed refused");
        await this.read(response.body.getReader(), controller);
        this.retryMs = 1000;
      } catch (err) {
        if (!(err instanceof ApiError)) B.leader.unreachable(err);
      } finally {
        clearTimeout(this.watchdog);
        if (this.controller === controller) this.controller = null;
        controller.abort();
      }
      this.setMode(B.leader.down ? "offline" : "polling", "change feed closed; reconnecting");
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
      if (event.type === "SUBSCRIBED") {
        this.heartbeatSeconds = event.subscribed?.heartbeat_interval_seconds || 10;
        B.leader.reachable();
        this.setMode("stream");
        // Everything may have changed while the page was not subscribed.
        B.bus.emit("resync", {});
      } else if (event.type === "CHANGES") {
        const c = event.changes || {};
        const truncated = Boolean(c.truncated);
        const publish = (topic, ids, extra) => {
          if (ids?.length || truncated || Object.values(extra).some(Boolean)) {
            B.bus.emit(topic, { ids: new Set(ids || []), truncated, ...extra });
          }
        };
        publish("task", c.tasks, { added: c.tasks_added || 0 });
        publish("agent", c.agents, { membership: c.agents_added_or_removed || 0 });
        publish("framework", c.frameworks, { membership: c.frameworks_added_or_removed || 0 });
      }
    }

    stop() {
      clearTimeout(this.timer);
      this.controller?.abort();
    }
  }

  /** Whether a change published on the bus concerns one of `ids` (or might: truncated). */
  function touches(change, ids) {
    if (!change) return true;
    if (change.truncated) return true;
    for (const id of ids) if (change.ids.has(id)) return true;
    return false;
  }

  // -- metrics ------------------------------------------------------------------------------

  const SAMPLE_MS = 5000;
  const SCALARS = ["cpus", "mem", "disk", "gpus"];

  /** Polls `/metrics/snapshot` every few seconds (a few KB, whatever the cluster's size) and
   * publishes `metrics` on the bus. */
  class MetricsPoller {
    constructor() {
      this.latest = null;
      this.timer = null;
    }

    async poll() {
      clearTimeout(this.timer);
      try {
        const m = await get("/metrics/snapshot");
        this.latest = m;
        B.bus.emit("metrics", m);
        B.leader.checkElected(m);
      } catch (err) {
        B.bus.emit("metrics-error", err);
      }
      this.timer = setTimeout(() => this.poll(), document.hidden ? SAMPLE_MS * 3 : SAMPLE_MS);
    }
  }

  /** The master's utilisation samples of the last hour (`/master/ui/utilisation`): all of
   * them on the first load, then only the new ones. */
  class UtilisationHistory {
    constructor() {
      this.samples = [];
      this.pending = null;
    }

    load() {
      if (this.pending) return this.pending;
      const last = this.samples.length ? this.samples[this.samples.length - 1][0] : null;
      const url = last === null ? "/master/ui/utilisation" : `/master/ui/utilisation?since=${last}`;
      this.pending = get(url)
        .then((doc) => {
          const fresh = (doc.samples || []).filter((s) => Array.isArray(s) && s.length === 13);
          // A sample older than the last one means another master (a failover): start over.
          if (fresh.length && last !== null && fresh[0][0] <= last) this.samples = [];
          this.samples.push(...fresh);
          const cutoff = Date.now() - 3600 * 1000;
          while (this.samples.length && this.samples[0][0] < cutoff) this.samples.shift();
          return this.samples;
        })
        .finally(() => {
          this.pending = null;
        });
      return this.pending;
    }
  }

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

  /** One page of the master's agent or framework listing (`/master/ui/agents`,
   * `/master/ui/frameworks`): {total, count, offset, limit, rows}. */
  function listing(kind, params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) {
      if (Array.isArray(value)) for (const v of value) query.append(key, v);
      else if (value !== "" && value !== null && value !== undefined) query.set(key, String(value));
    }
    return get(`/master/ui/${kind}?${query}`);
  }

  /** Framework names by id, live and completed, from the master's framework listing (as
   * {framework_info: {name}, completed}: the shape `frameworkIndex` gives). */
  const frameworkNames = new Cached(async () => {
    const [live, done] = await Promise.all([listing("frameworks", { limit: 1000 }), listing("frameworks", { limit: 1000, completed: 1 })]);
    const out = new Map();
    for (const [rows, completed] of [[live.rows, false], [done.rows, true]]) {
      for (const f of rows) out.set(f.id, { framework_info: { name: f.name }, completed });
    }
    return out;
  }, 5000);

  /** hostname:port of agent ids, asked for in one request when unknown. */
  async function agentHostnames(ids) {
    const missing = [...new Set(ids)].filter((id) => id && !agentNames.has(id)).slice(0, 500);
    if (!missing.length) return agentNames;
    try {
      const doc = await listing("agents", { id: missing });
      rememberAgents(doc.rows);
    } catch (err) {
      // Shown as ids; asked again next time.
      return agentNames;
    }
    for (const id of missing) if (!agentNames.has(id)) agentNames.set(id, "");
    return agentNames;
  }

  function rememberAgents(slaves) {
    for (const a of slaves || []) agentNames.set(a.id, `${a.hostname}:${a.port}`);
  }

  /** What running tasks really use (`/master/ui/task-usage`, from their agents'
   * container statistics). CPU use is the growth of the CPU times over the growth of the
   * timestamp between this answer and the previous one for the same container. */
  class TaskUsage {
    constructor() {
      this.last = new Map(); // task id -> {container, timestamp, cpuSeconds}
    }

    async fetch(ids) {
      const wanted = [...new Set(ids)].slice(0, 200);
      const out = new Map();
      if (!wanted.length) return out;
      const query = new URLSearchParams();
      for (const id of wanted) query.append("task_id", id);
      const doc = await get(`/master/ui/task-usage?${query}`);
      for (const entry of doc.tasks || []) out.set(entry.task_id, this.digest(entry));
      return out;
    }

    /** {cpus (null until two samples), memBytes, cpuLimit, memLimitBytes, diskBytes,
     * diskLimitBytes (null unless the agent measures disk: `disk/du`), shared, error}. */
    digest(entry) {
      const s = entry.statistics;
      if (!s) return { error: entry.error || "no statistics" };
      const cpuSeconds = (s.cpus_user_time_secs || 0) + (s.cpus_system_time_secs || 0);
      const previous = this.last.get(entry.task_id);
      let cpus = null;
      if (previous && previous.container === entry.container_id && s.timestamp > previous.timestamp) {
        cpus = Math.max(0, (cpuSeconds - previous.cpuSeconds) / (s.timestamp - previous.timestamp));
      } else if (previous?.cpus !== undefined && previous.container === entry.container_id) {
        cpus = previous.cpus; // same sample again: keep the last rate
      }
      this.last.set(entry.task_id, { container: entry.container_id, timestamp: s.timestamp, cpuSeconds, cpus });
      if (this.last.size > 5000) this.last.delete(this.last.keys().next().value);
      return {
        cpus,
        memBytes: s.mem_rss_bytes ?? null,
        cpuLimit: s.cpus_limit ?? null,
        memLimitBytes: s.mem_limit_bytes ?? null,
        diskBytes: s.disk_used_bytes ?? null,
        diskLimitBytes: s.disk_limit_bytes ?? null,
        shared: (entry.tasks_in_executor || 1) > 1 ? entry.tasks_in_executor : 0,
      };
    }
  }

  // -- following the leader -----------------------------------------------------------------

  const MASTERS_KEY = "butte.masters";
  // The address parameters that carry what the page knew to the origin it moves to.
  const CARRY_MASTERS = "butte_masters";
  const CARRY_HOPS = "butte_hops";
  const ADDRESS = /^[A-Za-z0-9.:[\]_-]{1,255}$/;

  /** Keeps this page on the leading master: a standby's metrics say `master/elected` 0, and
   * its `/master/state` names the leader, so the page moves there (same view). When this
   * master stops answering, the page retries it and probes the other masters it has seen.
   * What it has seen is kept in `localStorage`, which belongs to one origin (host:port):
   * a move takes the list along in the new address, so the page on the leader still knows
   * the standbys when that leader dies. */
  class Leader {
    constructor() {
      this.down = false;
      this.probeTimer = null;
      this.known = this.loadKnown();
      this.adoptCarried();
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

    /** The masters and hop count a move brought in the address (see `moveTo`), then the
     * address without them. The masters are taken only from a page another master sent:
     * the referrer (its origin, which `moveTo`'s link sends) is one of them, so a link
     * made elsewhere cannot plant an address to be sent to after a failover. */
    adoptCarried() {
      const params = new URLSearchParams(location.search);
      if (!params.has(CARRY_MASTERS) && !params.has(CARRY_HOPS)) return;
      const carried = (params.get(CARRY_MASTERS) || "").split(",").filter((a) => ADDRESS.test(a)).slice(0, 16);
      let from = null;
      try {
        from = document.referrer ? new URL(document.referrer).host : null;
      } catch (err) {
        from = null;
      }
      if (from && from !== location.host && carried.includes(from)) carried.forEach((a) => this.remember(a));
      const hops = Number(params.get(CARRY_HOPS));
      if (Number.isInteger(hops) && hops > 0 && hops <= 3) sessionStorage.setItem("butte.hops", String(hops));
      params.delete(CARRY_MASTERS);
      params.delete(CARRY_HOPS);
      const rest = params.toString();
      history.replaceState(history.state, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
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
        if (await this.answers(address)) return address;
      }
      return null;
    }

    /** Whether the master at `address` answers at all. */
    async answers(address) {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 3000);
      try {
        await fetch(`${location.protocol}//${address}/health`, { mode: "no-cors", cache: "no-store", signal: controller.signal });
        return true;
      } catch (err) {
        return false;
      } finally {
        clearTimeout(timer);
      }
    }

    /** Moves the page to the master at `address`, same view, taking along the masters seen
     * and the hops so far (both in the address: the new origin has its own storage). A link
     * with referrer policy "origin" tells the new page which master sent it. */
    moveTo(address) {
      const hops = Number(sessionStorage.getItem("butte.hops") || 0);
      if (hops >= 3) {
        B.bus.emit("leader-loop", { address });
        return;
      }
      sessionStorage.setItem("butte.hops", String(hops + 1));
      B.bus.emit("following", { address });
      const carry = new URLSearchParams({ [CARRY_MASTERS]: this.known.join(","), [CARRY_HOPS]: String(hops + 1) });
      const link = document.createElement("a");
      link.href = `${location.protocol}//${address}/?${carry}${location.hash}`;
      link.referrerPolicy = "origin";
      link.hidden = true;
      document.body.append(link);
      link.click();
      link.remove();
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
        if (address === location.host) return;
        // Right after a leader dies a standby still names it until its election is over:
        // moving to a master that does not answer would leave an error page, no page.
        if (await this.answers(address)) this.moveTo(address);
        else B.bus.emit("no-leader", {});
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
    touches,
    listing,
    cache: { frameworks, frameworkNames, frameworkIndex, agentHostnames, agentNames, rememberAgents },
  });
  B.leader = new Leader();
  B.metrics = new MetricsPoller();
  B.history = new UtilisationHistory();
  B.usage = new TaskUsage();
  B.stream = new EventStream();
})(window.Butte);
