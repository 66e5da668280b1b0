/* butte web UI: the tasks list (pages of /master/ui/tasks, searched and filtered by the master) and
 * the task page (status history, sandbox browser, live tail of stdout/stderr). */
"use strict";

(function (B) {
  const { h, fmt } = B;

  // -- fetching pages -----------------------------------------------------------------------

  /** One page of tasks, newest first: {rows, hasMore, scanned}. The master searches and
   * filters (`/master/ui/tasks`): only the page is ever sent, at any number of tasks. */
  async function fetchPage(filters, page, size) {
    const query = new URLSearchParams({ offset: String(page * size), limit: String(size) });
    if (filters.q) query.set("q", filters.q);
    if (filters.state) query.set("state", filters.state);
    if (filters.agent) query.set("agent_id", filters.agent);
    if (filters.framework) query.set("framework_id", filters.framework);
    const doc = await B.get(`/master/ui/tasks?${query}`);
    const filtered = Boolean(filters.q || filters.state || filters.agent || filters.framework);
    return { rows: doc.tasks || [], hasMore: Boolean(doc.has_more), scanned: filtered ? doc.scanned : null, total: doc.total, snapshot: doc.snapshot };
  }

  // -- why a task ended, and what it uses ---------------------------------------------------

  // Terminal states whose status says why (TASK_FINISHED needs no explanation).
  const EXPLAINED = new Set([...B.BAD_STATES, "TASK_KILLED"]);

  /** The status that ended the task, when it ended in failure: Marathon's "last task
   * failure". {state, message, reason, source, timestamp} or null. */
  function failure(t) {
    if (!EXPLAINED.has(t.state)) return null;
    const statuses = t.statuses || [];
    for (let i = statuses.length - 1; i >= 0; i -= 1) {
      if (statuses[i].state === t.state) return statuses[i];
    }
    return { state: t.state };
  }

  const reasonText = (r) => (r ? r.replace(/^REASON_/, "").toLowerCase().replace(/_/g, " ") : "");
  const sourceText = (s) => (s ? s.replace(/^SOURCE_/, "").toLowerCase() : "");

  /** One line: the message, the reason and who said so. */
  function whyText(s) {
    const parts = [];
    if (s.message) parts.push(s.message);
    if (s.reason) parts.push(reasonText(s.reason));
    if (s.source) parts.push(`from ${sourceText(s.source)}`);
    return parts.join(" · ");
  }

  function stateCell(t) {
    const why = failure(t);
    const text = why ? whyText(why) : "";
    return h(
      "div",
      { class: "state-cell" },
      B.stateBadge(t.state),
      text ? h("div", { class: "why", title: text }, text) : null,
    );
  }

  /** "used / asked" for a running task's CPUs or memory, or what it asked for. */
  function usageText(t, name, usage) {
    const asked = t.resources?.[name] || 0;
    const askedText = fmt.resource(name, asked);
    const u = usage?.get(t.id);
    if (!u || u.error) return askedText;
    if (name === "cpus") return u.cpus === null ? `… / ${askedText}` : `${fmt.num(u.cpus, 2)} / ${askedText}`;
    return `${fmt.bytes(u.memBytes)} / ${askedText}`;
  }

  const RUNNING_LIKE = new Set(["TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"]);

  const started = (t) => (t.statuses && t.statuses.length ? t.statuses[0].timestamp : 0);
  const updated = (t) => (t.statuses && t.statuses.length ? t.statuses[t.statuses.length - 1].timestamp : 0);

  // -- the list -----------------------------------------------------------------------------

  function controls(state, frameworks, onChange) {
    const search = h("input", {
      type: "search",
      class: "search",
      id: "task-search",
      placeholder: "Search task id or name",
      "aria-label": "Search task id or name",
      value: state.q,
      oninput: B.debounce(() => onChange({ q: search.value.trim() }), 250),
    });
    const stateSelect = h(
      "select",
      { id: "task-state", "aria-label": "State", onchange: () => onChange({ state: stateSelect.value }) },
      h("option", { value: "" }, "All states"),
      h("option", { value: "active" }, "Active (staging … killing)"),
      B.TASK_STATES.map((s) => h("option", { value: s }, s.replace(/^TASK_/, "").toLowerCase())),
    );
    stateSelect.value = state.state;
    const fwSelect = h("select", { id: "task-framework", "aria-label": "Framework", onchange: () => onChange({ framework: fwSelect.value }) });
    const fillFrameworks = (index) => {
      const options = [h("option", { value: "" }, "All frameworks")];
      for (const [id, fw] of index) {
        options.push(h("option", { value: id }, `${fw.framework_info.name} (${fmt.shortId(id)})${fw.completed ? " · completed" : ""}`));
      }
      if (state.framework && !index.has(state.framework)) options.push(h("option", { value: state.framework }, state.framework));
      B.replace(fwSelect, options);
      fwSelect.value = state.framework;
    };
    fillFrameworks(frameworks);
    const size = h(
      "select",
      { id: "task-size", "aria-label": "Rows per page", onchange: () => onChange({ size: Number(size.value) }) },
      [25, 50, 100, 200].map((n) => h("option", { value: n }, `${n} per page`)),
    );
    size.value = String(state.size);
    return { el: h("div", { class: "toolbar" }, search, stateSelect, fwSelect, size), fillFrameworks };
  }

  function taskTable(lookup) {
    return new B.SortableTable(
      [
        // A long id or name (ids of 100s of characters exist) is cut with an ellipsis so the
        // other columns stay in view; the whole of it is in the tooltip.
        { key: "id", label: "ID", sortable: false, render: (t) => B.link(B.href("tasks", t.id), t.id, { class: "task-link clip", title: t.id }) },
        { key: "name", label: "Name", sortable: false, render: (t) => h("span", { class: "clip narrow", title: t.name }, t.name) },
        { key: "state", label: "State", sortable: false, render: stateCell },
        {
          key: "framework",
          label: "Framework",
          sortable: false,
          render: (t) => B.ui.frameworkLink(t.framework_id, lookup.frameworks.get(t.framework_id)?.framework_info.name),
        },
        { key: "agent", label: "Agent", sortable: false, render: (t) => B.ui.agentLink(t.slave_id, B.cache.agentNames.get(t.slave_id)) },
        { key: "cpus", label: "CPUs used / asked", num: true, sortable: false, render: (t) => usageText(t, "cpus", lookup.usage) },
        { key: "mem", label: "Memory used / asked", num: true, sortable: false, render: (t) => usageText(t, "mem", lookup.usage) },
        { key: "started", label: "Started", sortable: false, render: (t) => h("span", { title: fmt.datetime(started(t)) }, fmt.ago(started(t))) },
        { key: "updated", label: "Last update", sortable: false, render: (t) => h("span", { title: fmt.datetime(updated(t)) }, fmt.ago(updated(t))) },
      ],
      { name: "tasks", presorted: true, rowData: (t) => ({ task: t.id, state: t.state }) },
    );
  }

  B.pages.tasks = (ctx) => {
    const q = ctx.route.query;
    const state = {
      q: q.get("q") || "",
      state: q.get("state") || "",
      framework: q.get("framework") || "",
      agent: q.get("agent") || "",
      size: Number(q.get("size")) || 50,
      page: Math.max(0, Number(q.get("page")) - 1 || 0),
    };
    const lookup = { frameworks: new Map(), usage: new Map() };
    const table = taskTable(lookup);
    const info = h("div", { class: "pager-box" });
    const note = h("span", { class: "muted", id: "task-note" });
    const error = B.ui.errorBox();
    let refresh = null;
    const ctl = controls(state, lookup.frameworks, (change) => {
      Object.assign(state, change);
      if (!("page" in change)) state.page = 0;
      B.setQuery({ q: state.q, state: state.state, framework: state.framework, agent: state.agent, size: state.size === 50 ? "" : state.size, page: state.page ? state.page + 1 : "" });
      refresh.now();
    });
    const agentChip = state.agent
      ? h("span", { class: "chip" }, "agent ", B.ui.agentLink(state.agent), " ", h("a", { href: "#/tasks", title: "Clear" }, "✕"))
      : null;
    B.replace(ctx.el, B.ui.header("Tasks", note), error, ctl.el, agentChip, h("div", { class: "table-wrap" }, table.el), info);

    // Real CPU and memory of the running tasks shown, from their agents; a rate needs two
    // answers, so the second comes soon after the first.
    let shown = new Set();
    let measuring = false;
    let quietUntil = 0; // no agent answered last time: ask again less often
    let measuredAt = 0; // at most every 4 s, however often the rows change
    const measure = async (force) => {
      const running = table.rows.filter((t) => RUNNING_LIKE.has(t.state)).map((t) => t.id);
      if (measuring || !running.length || !ctx.alive) return;
      if (!force && (Date.now() < quietUntil || Date.now() - measuredAt < 4000)) return;
      measuring = true;
      measuredAt = Date.now();
      try {
        const fresh = await B.usage.fetch(running);
        const firstTime = [...fresh.values()].some((u) => u.cpus === null && !u.error);
        const none = [...fresh.values()].every((u) => u.error);
        quietUntil = none ? Date.now() + 30000 : 0;
        lookup.usage = fresh;
        if (ctx.alive) table.render(table.rows, "No tasks yet.");
        if (firstTime) setTimeout(() => measure(true), 1500);
      } catch (err) {
        // Usage is a nicety: the list stays as it is.
      } finally {
        measuring = false;
      }
    };
    const usageTimer = setInterval(() => {
      if (!document.hidden) measure();
    }, 5000);
    ctx.onCleanup(() => clearInterval(usageTimer));
    let lastMs = 0;

    let generation = 0;
    refresh = ctx.live(
      async () => {
        const mine = ++generation;
        const began = performance.now();
        const names = B.cache.frameworkNames.get();
        const result = await fetchPage(state, state.page, state.size);
        if (mine !== generation || !ctx.alive) return;
        lastMs = performance.now() - began;
        shown = new Set(result.rows.map((t) => t.id));
        const empty = state.q || state.state || state.agent ? "No task matches." : "No tasks yet.";
        // The rows first; framework names and agent hostnames fill in when they arrive.
        table.render(result.rows, empty);
        Promise.all([
          names.then((index) => {
            const changed = index.size !== lookup.frameworks.size;
            lookup.frameworks = index;
            if (changed) ctl.fillFrameworks(index);
          }),
          B.cache.agentHostnames(result.rows.map((t) => t.slave_id)),
        ])
          .then(() => {
            if (mine === generation && ctx.alive) table.render(table.rows, empty);
          })
          .catch(() => {});
        measure();
        note.textContent =
          result.scanned !== null
            ? `newest first · ${fmt.num(result.scanned, 0)} of ${fmt.num(result.total, 0)} tasks searched`
            : `newest first · ${fmt.num(result.total, 0)} tasks`;
        B.replace(
          info,
          B.ui.pager({ page: state.page, size: state.size, hasMore: result.hasMore, shown: result.rows.length }, (p) => {
            state.page = p;
            B.setQuery({ page: p ? p + 1 : "" });
            refresh.now();
          }),
        );
        return result.snapshot;
      },
      {
        topics: ["task"],
        pollMs: 3000,
        // New tasks shift every page (newest first); otherwise only the rows shown matter.
        filter: (_, change) => Boolean(state.q || state.state || state.agent) || change.added > 0 || B.touches(change, shown),
        minGapMs: () => Math.max(state.q || state.state ? 3000 : 750, lastMs * 5),
        errorEl: error,
      },
    );
  };

  // -- one task -----------------------------------------------------------------------------

  /** Where the task's sandbox is in the master's files API (the master finds the agent): its
   * executor's, or for a member of a task group (`member`) its own `tasks/<task id>` inside
   * the default executor's, as Mesos' UI shows it. */
  function sandboxOf(t, member) {
    const executor = t.executor_id || t.id;
    const root = `/slaves/${t.slave_id}/frameworks/${t.framework_id}/executors/${executor}/runs/latest`;
    return member ? `${root}/tasks/${t.id}` : root;
  }

  /** The task's own sandbox: {root, sure}. The task JSON does not say whether its executor is
   * the default one (a task group), so a task with an executor is looked for in `tasks/<id>`
   * (as `butte task cat` does); not `sure` while a task still starting may not have it yet. */
  async function findSandbox(t) {
    if (!t.executor_id) return { root: sandboxOf(t), sure: true };
    const member = sandboxOf(t, true);
    try {
      await B.get(`/files/browse?path=${encodeURIComponent(member)}`);
      return { root: member, sure: true };
    } catch (err) {
      return { root: sandboxOf(t), sure: !["TASK_STAGING", "TASK_STARTING"].includes(t.state) };
    }
  }

  const joinPath = (...parts) => parts.filter(Boolean).join("/").replace(/\/+/g, "/");

  function history(t) {
    const statuses = t.statuses || [];
    if (!statuses.length) return h("p", { class: "muted" }, "No status update yet.");
    const first = statuses[0].timestamp;
    const table = h(
      "table",
      { class: "data compact", "data-table": "history" },
      h("thead", {}, h("tr", {}, ["State", "Time", "After", "Health", "Message", "Reason", "Source"].map((label) => h("th", { class: label === "After" ? "num" : "" }, label)))),
      h(
        "tbody",
        {},
        statuses.map((s) =>
          h(
            "tr",
            { dataset: { state: s.state } },
            h("td", {}, B.stateBadge(s.state)),
            h("td", {}, fmt.datetime(s.timestamp)),
            h("td", { class: "num" }, `+${fmt.num(s.timestamp - first, 3)} s`),
            h("td", {}, s.healthy === undefined ? "" : s.healthy ? "healthy" : "unhealthy"),
            h("td", { class: "wrap" }, s.message || ""),
            h("td", {}, reasonText(s.reason)),
            h("td", {}, sourceText(s.source)),
          ),
        ),
      ),
    );
    return h("div", { class: "table-wrap" }, table);
  }

  /** The image a task's ContainerInfo runs (DOCKER, or MESOS with a Docker image), if any. */
  function imageOf(container) {
    return container?.docker?.image || container?.mesos?.image?.docker?.name || null;
  }

  function taskFacts(t, frameworks) {
    const last = (t.statuses || [])[t.statuses.length - 1];
    const ips = (last?.container_status?.network_infos || []).flatMap((n) => (n.ip_addresses || []).map((a) => a.ip_address));
    const fw = frameworks.get(t.framework_id);
    return B.ui.facts([
      ["ID", h("code", {}, t.id)],
      ["Name", t.name],
      ["State", B.stateBadge(t.state)],
      ["Framework", B.ui.frameworkLink(t.framework_id, fw?.framework_info.name)],
      ["Agent", B.ui.agentLink(t.slave_id, B.cache.agentNames.get(t.slave_id))],
      ["Executor", B.link(B.executors.executorHref(t.slave_id, t.framework_id, t.executor_id || t.id), t.executor_id ? fmt.shortId(t.executor_id) : "command executor", { id: "task-executor", title: t.executor_id || t.id })],
      ["Role", t.role],
      ["Resources", Object.entries(t.resources || {}).filter(([, v]) => v).map(([k, v]) => h("span", { class: "chip" }, `${k} ${fmt.resource(k, v)}`))],
      ["IP addresses", ips.join(", ")],
      ["Container", last?.container_status?.container_id?.value ? h("code", {}, last.container_status.container_id.value) : null],
      ["Container type", h("span", { id: "task-container-type" }, t.container?.type || "MESOS")],
      ["Image", imageOf(t.container) ? h("code", { id: "task-image" }, imageOf(t.container)) : null],
      ["Labels", (t.labels || []).map((l) => h("span", { class: "chip" }, `${l.key}=${l.value ?? ""}`))],
      ["Actions", B.ui.killButton(t)],
    ]);
  }

  /** The "last failure" box: what the status that ended the task says. */
  function failureBox(t) {
    const s = failure(t);
    if (!s) return null;
    return h(
      "div",
      { class: "failure", id: "task-failure", role: "status" },
      h("strong", {}, t.state.charAt(5) + t.state.slice(6).toLowerCase(), s.timestamp ? ` ${fmt.ago(s.timestamp)}` : ""),
      B.ui.facts([
        ["Message", s.message || h("span", { class: "muted" }, "none given")],
        ["Reason", s.reason ? h("code", {}, s.reason) : null],
        ["Source", s.source ? h("code", {}, s.source) : null],
        ["At", s.timestamp ? fmt.datetime(s.timestamp) : null],
      ]),
    );
  }

  /** CPU and memory in use next to what the task asked for. */
  function usageBox(t, u) {
    if (!RUNNING_LIKE.has(t.state)) return h("p", { class: "muted" }, "The task is not running.");
    if (!u) return h("p", { class: "muted" }, "Asking the agent…");
    if (u.error) return h("p", { class: "muted" }, `No figures: ${u.error}`);
    const cpusAsked = t.resources?.cpus || 0;
    const memAsked = (t.resources?.mem || 0) * 1024 * 1024;
    const row = (label, usedText, asked, used, askedText) =>
      h(
        "tr",
        { dataset: { usage: label.toLowerCase() } },
        h("th", {}, label),
        h("td", { class: "num" }, usedText),
        h("td", { class: "num" }, askedText),
        h("td", {}, used === null ? "" : B.usageBar(Math.min(used, asked), 0, asked || 1)),
      );
    return [
      h(
        "table",
        { class: "data compact", "data-table": "usage" },
        h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", { class: "num" }, "In use"), h("th", { class: "num" }, "Asked for"), h("th", {}, ""))),
        h(
          "tbody",
          {},
          row("CPUs", u.cpus === null ? "measuring…" : fmt.num(u.cpus, 3), cpusAsked, u.cpus, fmt.num(cpusAsked, 3)),
          row("Memory", fmt.bytes(u.memBytes), memAsked, u.memBytes, fmt.resource("mem", t.resources?.mem || 0)),
        ),
      ),
      h(
        "p",
        { class: "muted small" },
        "From the agent's container statistics",
        u.shared ? `, for the whole executor (${u.shared} tasks)` : "",
        u.cpuLimit !== null ? `; the container may use ${fmt.num(u.cpuLimit, 3)} CPUs and ${fmt.bytes(u.memLimitBytes)} (the task's and its executor's)` : "",
        ".",
      ),
    ];
  }

  B.pages.task = (ctx) => {
    const id = ctx.route.id;
    const error = B.ui.errorBox();
    const factsBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const failureSlot = h("div");
    const historyBox = h("div", { id: "task-history" });
    const usageEl = h("div", { id: "task-usage" });
    const sandboxBox = h("div", { id: "sandbox" });
    B.replace(
      ctx.el,
      B.ui.header("Task", h("code", {}, id)),
      error,
      failureSlot,
      h("div", { class: "grid two" }, B.ui.card("Details", factsBox), B.ui.card("Status history", historyBox)),
      B.ui.card("Resources in use", usageEl),
      B.ui.card("Sandbox", sandboxBox),
    );
    let task = null;
    let usage = null;
    const showUsage = () => task && B.replace(usageEl, usageBox(task, usage));
    const measure = async () => {
      if (!task || !RUNNING_LIKE.has(task.state) || !ctx.alive) return;
      try {
        usage = (await B.usage.fetch([id])).get(id) || null;
      } catch (err) {
        usage = { error: B.errorText(err) };
      }
      showUsage();
    };
    // A rate needs two answers: the second comes a second after the first, then every 2 s.
    let usageTimer = setTimeout(function tick() {
      measure().finally(() => {
        if (ctx.alive) usageTimer = setTimeout(tick, 2000);
      });
    }, 1000);
    ctx.onCleanup(() => clearTimeout(usageTimer));
    let sandbox = null;
    let sandboxSure = false;
    let placing = false;
    /** Opens the sandbox browser on the task's own sandbox (again if that turned out to be
     * another directory than the one shown). */
    const placeSandbox = async (t) => {
      if (sandboxSure || placing) return;
      placing = true;
      try {
        const { root, sure } = await findSandbox(t);
        if (!ctx.alive) return;
        sandboxSure = sure;
        if (sandbox && sandbox.root === root) return;
        if (sandbox) sandbox.stopTail();
        sandbox = new SandboxBrowser(ctx, sandboxBox, root);
        sandbox.open(ctx.route.query.get("dir") || "", ctx.route.query.get("file") || "");
      } finally {
        placing = false;
      }
    };
    ctx.live(
      async () => {
        const names = B.cache.frameworkNames.get().catch(() => new Map());
        const doc = await B.get(`/master/tasks?task_id=${encodeURIComponent(id)}&limit=10`);
        const t = (doc.tasks || [])[0];
        if (!t) {
          B.replace(factsBox, h("p", { class: "error" }, `No task ${id} is known to this master.`));
          B.replace(historyBox);
          return;
        }
        const first = task === null;
        task = t;
        // The task first; its framework's name and agent's hostname fill in when they arrive.
        B.replace(factsBox, taskFacts(t, B.cache.frameworkNames.value || new Map()));
        Promise.all([names, B.cache.agentHostnames([t.slave_id])])
          .then(([index]) => {
            if (ctx.alive && task === t) B.replace(factsBox, taskFacts(t, index));
          })
          .catch(() => {});
        B.replace(failureSlot, failureBox(t));
        B.replace(historyBox, history(t));
        showUsage();
        if (first) measure();
        placeSandbox(t);
      },
      { topics: ["task"], pollMs: 3000, minGapMs: 500, errorEl: error, filter: (_, change) => B.touches(change, [id]) },
    );
  };

  // -- sandbox ------------------------------------------------------------------------------

  const TAIL_WINDOW = 64 * 1024;
  const TAIL_KEEP = 1024 * 1024;
  const TAIL_POLL_MS = 1000;

  /** How many bytes of the file a `/files/read` answer of `length` requested bytes (all there)
   * stands for. Text without U+FFFD was valid UTF-8: its UTF-8 length is exact, and shorter
   * than `length` when the agent held a character cut at the end back for the next read.
   * With U+FFFD (an invalid byte replaced, 1 to 3 bytes each, or a real one) the text says
   * nothing exact: the requested length is what was read. */
  function bytesRead(data, length) {
    if (data.includes("\uFFFD")) return length;
    return Math.min(new TextEncoder().encode(data).length, length);
  }

  /** Lists a sandbox directory (`/files/browse`) and shows one file with a live tail
   * (`/files/read` from the last offset, once a second). */
  class SandboxBrowser {
    constructor(ctx, el, root) {
      this.ctx = ctx;
      this.el = el;
      this.root = root;
      this.dir = "";
      this.tail = null;
      ctx.onCleanup(() => this.stopTail());
    }

    open(dir, file) {
      this.dir = dir;
      this.list().catch((err) => this.showError(err));
      this.openFile(file || "stdout");
    }

    showError(err) {
      B.replace(this.listing, h("p", { class: "error" }, B.errorText(err)));
    }

    crumbs() {
      const parts = this.dir.split("/").filter(Boolean);
      const out = [h("a", { href: "#", onclick: (e) => this.go(e, "") }, "sandbox")];
      parts.forEach((part, i) => {
        out.push(" / ", h("a", { href: "#", onclick: (e) => this.go(e, parts.slice(0, i + 1).join("/")) }, part));
      });
      return h("div", { class: "crumbs" }, out);
    }

    go(event, dir) {
      event.preventDefault();
      this.dir = dir;
      B.setQuery({ dir });
      this.list().catch((err) => this.showError(err));
    }

    async list() {
      if (!this.listing) {
        this.listing = h("div", { class: "listing", id: "sandbox-listing" });
        this.viewer = h("div", { class: "viewer", id: "sandbox-viewer" });
        B.replace(this.el, h("div", { class: "sandbox" }, this.listing, this.viewer));
      }
      const path = joinPath(this.root, this.dir);
      const entries = await B.get(`/files/browse?path=${encodeURIComponent(path)}`);
      entries.sort((a, b) => (b.mode.startsWith("d") - a.mode.startsWith("d")) || a.path.localeCompare(b.path));
      const rows = entries.map((e) => {
        const name = e.path.split("/").pop();
        const isDir = e.mode.startsWith("d");
        const rel = joinPath(this.dir, name);
        const open = isDir
          ? h("a", { href: "#", onclick: (ev) => this.go(ev, rel) }, `${name}/`)
          : h("a", { href: "#", class: "file-link", dataset: { file: rel }, onclick: (ev) => { ev.preventDefault(); this.openFile(rel); } }, name);
        return h(
          "tr",
          { dataset: { file: name } },
          h("td", {}, open),
          h("td", { class: "num" }, isDir ? "" : fmt.bytes(e.size)),
          h("td", {}, h("code", {}, e.mode)),
          h("td", { title: fmt.datetime(e.mtime) }, fmt.ago(e.mtime)),
          h("td", {}, isDir ? "" : h("a", { href: `/files/download?path=${encodeURIComponent(joinPath(this.root, rel))}`, download: name }, "download")),
        );
      });
      B.replace(
        this.listing,
        this.crumbs(),
        h(
          "table",
          { class: "data compact", "data-table": "files" },
          h("thead", {}, h("tr", {}, ["Name", "Size", "Mode", "Modified", ""].map((t, i) => h("th", { class: i === 1 ? "num" : "" }, t)))),
          h("tbody", {}, rows.length ? rows : h("tr", { class: "empty" }, h("td", { colspan: 5 }, "Empty directory."))),
        ),
      );
    }

    stopTail() {
      if (this.tail) clearTimeout(this.tail.timer);
      this.tail = null;
    }

    /** Shows `rel` (relative to the sandbox) and follows what is appended to it. */
    openFile(rel) {
      this.stopTail();
      if (!this.viewer) this.list().catch((err) => this.showError(err));
      const path = joinPath(this.root, rel);
      const pre = h("pre", { class: "tail", id: "tail", tabindex: "0" });
      const follow = h("input", { type: "checkbox", checked: true, id: "tail-follow" });
      const status = h("span", { class: "muted small" });
      B.replace(
        this.viewer,
        h(
          "div",
          { class: "viewer-head" },
          h("strong", {}, rel || path),
          h("label", { class: "small" }, follow, " follow"),
          status,
          h("a", { href: `/files/download?path=${encodeURIComponent(path)}`, download: rel.split("/").pop(), class: "small" }, "download"),
        ),
        pre,
      );
      B.setQuery({ file: rel === "stdout" ? "" : rel });
      const tail = { path, pre, follow, status, offset: null, timer: null, text: "" };
      this.tail = tail;
      this.readMore(tail);
    }

    async readMore(tail) {
      if (this.tail !== tail || !this.ctx.alive) return;
      let delay = TAIL_POLL_MS;
      try {
        // The file's size first, then only what is there: `/files/read` answers text (invalid
        // UTF-8 replaced by U+FFFD, a character cut at the end held back for the next read),
        // so the bytes read cannot always be told from `data`; asking for no more than the
        // file holds makes the requested length exactly what was read.
        const end = await B.get(`/files/read?path=${encodeURIComponent(tail.path)}&offset=-1`);
        if (this.tail !== tail) return;
        const size = end.offset;
        let restarted = tail.offset === null;
        if (tail.offset === null || size < tail.offset) {
          // First read, or the file was truncated (rotated): start a window before its end.
          tail.text = restarted ? "" : "… (the file was truncated)\n";
          restarted = true;
          tail.offset = Math.max(0, size - TAIL_WINDOW);
          if (tail.offset > 0) tail.text += `… (${fmt.bytes(tail.offset)} earlier not shown; download for all)\n`;
        }
        const length = Math.min(size - tail.offset, TAIL_WINDOW);
        if (length > 0) {
          const doc = await B.get(`/files/read?path=${encodeURIComponent(tail.path)}&offset=${tail.offset}&length=${length}`);
          if (this.tail !== tail) return;
          const data = doc.data || "";
          this.append(tail, data);
          tail.offset = doc.offset + bytesRead(data, length);
        } else if (restarted || !tail.pre.textContent) {
          this.append(tail, "");
        }
        tail.status.textContent = `${fmt.bytes(tail.offset)} read`;
        // More than a held-back character left: catch up at once.
        if (size - tail.offset > 4) delay = 0;
      } catch (err) {
        tail.status.textContent = B.errorText(err);
        delay = TAIL_POLL_MS * 3;
      }
      tail.timer = setTimeout(() => this.readMore(tail), document.hidden ? delay * 5 : delay);
    }

    append(tail, data) {
      tail.text += data;
      if (tail.text.length > TAIL_KEEP) tail.text = tail.text.slice(tail.text.length - TAIL_KEEP);
      tail.pre.textContent = tail.text || "(empty)";
      if (tail.follow.checked) tail.pre.scrollTop = tail.pre.scrollHeight;
    }
  }

  /** A daemon's own log file, `root` (`/master/log`, or an agent's `/slave/log` through the
   * master as `/slaves/<agent>/slave/log`), in the sandbox's live tail: Mesos' LOG pager. A
   * daemon without --log_dir or --external_log_file has none (404): the page says so. */
  class LogViewer extends SandboxBrowser {
    async show(daemon) {
      this.viewer = h("div", { class: "viewer", id: "log-viewer" });
      B.replace(this.el, this.viewer);
      try {
        await B.get(`/files/read?path=${encodeURIComponent(this.root)}&offset=-1`);
      } catch (err) {
        if (!this.ctx.alive) return;
        const missing = err.status === 404;
        const text = missing ? `No log file: the ${daemon} runs without --log_dir or --external_log_file.` : B.errorText(err);
        B.replace(this.viewer, h("p", { class: missing ? "muted" : "error", id: "log-missing" }, text));
        return;
      }
      if (this.ctx.alive) this.openFile("");
    }
  }

  B.tasks = { fetchPage, sandboxOf, findSandbox, failure, whyText, SandboxBrowser, LogViewer };
})(window.Butte);
