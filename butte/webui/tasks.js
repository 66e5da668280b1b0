/* butte web UI: the tasks list (server-side pages of /master/tasks, search and filters) and
 * the task page (status history, sandbox browser, live tail of stdout/stderr). */
"use strict";

(function (B) {
  const { h, fmt } = B;
  const SCAN_CHUNK = 1000;
  const SCAN_MAX = 250000;

  // -- fetching pages -----------------------------------------------------------------------

  function tasksUrl(limit, offset, framework) {
    let url = `/master/tasks?limit=${limit}&offset=${offset}&order=des`;
    if (framework) url += `&framework_id=${encodeURIComponent(framework)}`;
    return url;
  }

  function matcher(filters) {
    const q = (filters.q || "").toLowerCase();
    const state = filters.state || "";
    return (t) => {
      if (q && !String(t.id).toLowerCase().includes(q) && !String(t.name || "").toLowerCase().includes(q)) return false;
      if (state === "active" && !B.ACTIVE_STATES.has(t.state)) return false;
      if (state && state !== "active" && t.state !== state) return false;
      if (filters.agent && t.slave_id !== filters.agent) return false;
      return true;
    };
  }

  /** One page of tasks, newest first: {rows, hasMore, scanned}. Without a search or a state
   * filter the master pages (`limit`/`offset`, `framework_id`); otherwise the list is read in
   * chunks and filtered here until the page is full, never all at once. */
  async function fetchPage(filters, page, size, onProgress) {
    if (!filters.q && !filters.state && !filters.agent) {
      const doc = await B.get(tasksUrl(size + 1, page * size, filters.framework));
      const tasks = doc.tasks || [];
      return { rows: tasks.slice(0, size), hasMore: tasks.length > size, scanned: null };
    }
    const keep = matcher(filters);
    const need = (page + 1) * size + 1;
    const found = [];
    let offset = 0;
    for (;;) {
      const doc = await B.get(tasksUrl(SCAN_CHUNK, offset, filters.framework));
      const tasks = doc.tasks || [];
      for (const t of tasks) if (keep(t)) found.push(t);
      offset += tasks.length;
      onProgress?.(offset, found.length);
      if (found.length >= need || tasks.length < SCAN_CHUNK || offset >= SCAN_MAX) break;
    }
    return {
      rows: found.slice(page * size, page * size + size),
      hasMore: found.length > (page + 1) * size,
      scanned: offset,
    };
  }

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
        { key: "id", label: "ID", sortable: false, render: (t) => B.link(B.href("tasks", t.id), t.id, { class: "task-link", title: t.id }) },
        { key: "name", label: "Name", sortable: false },
        { key: "state", label: "State", sortable: false, render: (t) => B.stateBadge(t.state) },
        {
          key: "framework",
          label: "Framework",
          sortable: false,
          render: (t) => B.ui.frameworkLink(t.framework_id, lookup.frameworks.get(t.framework_id)?.framework_info.name),
        },
        { key: "agent", label: "Agent", sortable: false, render: (t) => B.ui.agentLink(t.slave_id, B.cache.agentNames.get(t.slave_id)) },
        { key: "cpus", label: "CPUs", num: true, sortable: false, render: (t) => fmt.resource("cpus", t.resources?.cpus || 0) },
        { key: "mem", label: "Memory", num: true, sortable: false, render: (t) => fmt.resource("mem", t.resources?.mem || 0) },
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
    const lookup = { frameworks: new Map() };
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

    let generation = 0;
    refresh = ctx.live(
      async () => {
        const mine = ++generation;
        B.cache.frameworks
          .get()
          .then((doc) => {
            const index = B.cache.frameworkIndex(doc);
            const changed = index.size !== lookup.frameworks.size;
            lookup.frameworks = index;
            if (changed) ctl.fillFrameworks(index);
          })
          .catch(() => {});
        const result = await fetchPage(state, state.page, state.size, (scanned, found) => {
          if (mine === generation) note.textContent = `searching… ${fmt.num(scanned, 0)} tasks read, ${fmt.num(found, 0)} match`;
        });
        if (mine !== generation || !ctx.alive) return;
        await B.cache.agentHostnames(result.rows.map((t) => t.slave_id));
        table.render(result.rows, state.q || state.state || state.agent ? "No task matches." : "No tasks yet.");
        note.textContent = result.scanned !== null ? `${fmt.num(result.scanned, 0)} tasks searched` : "newest first";
        B.replace(
          info,
          B.ui.pager({ page: state.page, size: state.size, hasMore: result.hasMore, shown: result.rows.length }, (p) => {
            state.page = p;
            B.setQuery({ page: p ? p + 1 : "" });
            refresh.now();
          }),
        );
      },
      { topics: ["task"], pollMs: 3000, minGapMs: () => (state.q || state.state ? 3000 : 750), errorEl: error },
    );
  };

  // -- one task -----------------------------------------------------------------------------

  /** Where the task's sandbox is in the master's files API (the master finds the agent). */
  function sandboxOf(t) {
    const executor = t.executor_id || t.id;
    return `/slaves/${t.slave_id}/frameworks/${t.framework_id}/executors/${executor}/runs/latest`;
  }

  const joinPath = (...parts) => parts.filter(Boolean).join("/").replace(/\/+/g, "/");

  function history(t) {
    const statuses = t.statuses || [];
    if (!statuses.length) return h("p", { class: "muted" }, "No status update yet.");
    const first = statuses[0].timestamp;
    return h(
      "table",
      { class: "data compact", "data-table": "history" },
      h("thead", {}, h("tr", {}, h("th", {}, "State"), h("th", {}, "Time"), h("th", { class: "num" }, "After"), h("th", {}, "Health"))),
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
          ),
        ),
      ),
    );
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
      ["Executor", t.executor_id ? h("code", {}, t.executor_id) : "command executor"],
      ["Role", t.role],
      ["Resources", Object.entries(t.resources || {}).filter(([, v]) => v).map(([k, v]) => h("span", { class: "chip" }, `${k} ${fmt.resource(k, v)}`))],
      ["IP addresses", ips.join(", ")],
      ["Container", last?.container_status?.container_id?.value ? h("code", {}, last.container_status.container_id.value) : null],
      ["Labels", (t.labels || []).map((l) => h("span", { class: "chip" }, `${l.key}=${l.value ?? ""}`))],
      ["Actions", B.ui.killButton(t)],
    ]);
  }

  B.pages.task = (ctx) => {
    const id = ctx.route.id;
    const error = B.ui.errorBox();
    const factsBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const historyBox = h("div", { id: "task-history" });
    const sandboxBox = h("div", { id: "sandbox" });
    B.replace(
      ctx.el,
      B.ui.header("Task", h("code", {}, id)),
      error,
      h("div", { class: "grid two" }, B.ui.card("Details", factsBox), B.ui.card("Status history", historyBox)),
      B.ui.card("Sandbox", sandboxBox),
    );
    let sandbox = null;
    ctx.live(
      async () => {
        const [doc, fwDoc] = await Promise.all([
          B.get(`/master/tasks?task_id=${encodeURIComponent(id)}&limit=10`),
          B.cache.frameworks.get().catch(() => null),
        ]);
        const t = (doc.tasks || [])[0];
        if (!t) {
          B.replace(factsBox, h("p", { class: "error" }, `No task ${id} is known to this master.`));
          B.replace(historyBox);
          return;
        }
        await B.cache.agentHostnames([t.slave_id]);
        B.replace(factsBox, taskFacts(t, B.cache.frameworkIndex(fwDoc)));
        B.replace(historyBox, history(t));
        if (!sandbox) {
          sandbox = new SandboxBrowser(ctx, sandboxBox, sandboxOf(t));
          sandbox.open(ctx.route.query.get("dir") || "", ctx.route.query.get("file") || "");
        }
      },
      { topics: ["task"], pollMs: 3000, minGapMs: 500, errorEl: error, filter: (_, e) => taskOf(e) === id },
    );
  };

  function taskOf(event) {
    if (!event) return null;
    if (event.task) return event.task.task_id?.value;
    return event.update?.status?.task_id?.value;
  }

  // -- sandbox ------------------------------------------------------------------------------

  const TAIL_WINDOW = 64 * 1024;
  const TAIL_KEEP = 1024 * 1024;
  const TAIL_POLL_MS = 1000;

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
          h("strong", {}, rel),
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
        if (tail.offset === null) {
          const end = await B.get(`/files/read?path=${encodeURIComponent(tail.path)}&offset=-1`);
          tail.offset = Math.max(0, end.offset - TAIL_WINDOW);
          if (tail.offset > 0) tail.text = `… (${fmt.bytes(tail.offset)} earlier not shown; download for all)\n`;
        }
        const doc = await B.get(`/files/read?path=${encodeURIComponent(tail.path)}&offset=${tail.offset}&length=${TAIL_WINDOW}`);
        if (this.tail !== tail) return;
        const data = doc.data || "";
        if (data.length || !tail.pre.textContent) this.append(tail, data);
        tail.offset = doc.offset + new TextEncoder().encode(data).length;
        tail.status.textContent = `${fmt.bytes(tail.offset)} read`;
        if (data.length >= TAIL_WINDOW / 2) delay = 0;
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

  B.tasks = { fetchPage, sandboxOf, matcher };
})(window.Butte);
