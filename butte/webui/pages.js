/* butte web UI: the overview, agents, frameworks, roles and offers pages. Each page is a
 * function of a PageContext (app.js) that builds its DOM and keeps it fresh with ctx.live. */
"use strict";

(function (B) {
  const { h, fmt } = B;
  B.pages = B.pages || {};

  // -- building blocks ----------------------------------------------------------------------

  function header(title, ...extra) {
    return h("div", { class: "page-head" }, h("h1", {}, title), h("div", { class: "page-sub" }, extra));
  }

  function errorBox() {
    return h("div", { class: "error", role: "alert", hidden: true });
  }

  function card(title, ...body) {
    return h("section", { class: "card" }, title ? h("h2", {}, title) : null, body);
  }

  /** Definition list from [label, value] pairs (values may be nodes). */
  function facts(pairs) {
    return h(
      "dl",
      { class: "facts" },
      pairs.filter((p) => p && p[1] !== undefined && p[1] !== null && p[1] !== "" && !(Array.isArray(p[1]) && !p[1].length)).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
    );
  }

  /** Prev / next buttons for a list shown `size` rows at a time. */
  function pager(state, onChange) {
    const { page, size, total, hasMore } = state;
    const last = total !== undefined ? Math.max(0, Math.ceil(total / size) - 1) : null;
    const more = last !== null ? page < last : Boolean(hasMore);
    const from = total === 0 ? 0 : page * size + 1;
    const shown = state.shown ?? (total !== undefined ? Math.min(size, total - page * size) : size);
    const to = page * size + Math.max(0, shown);
    const range = total !== undefined ? `${fmt.num(from)}–${fmt.num(to)} of ${fmt.num(total)}` : `${fmt.num(from)}–${fmt.num(to)}`;
    return h(
      "div",
      { class: "pager" },
      h("button", { type: "button", class: "btn", "data-page": "prev", disabled: page <= 0, onclick: () => onChange(page - 1) }, "‹ Prev"),
      h("span", { class: "pager-range" }, shown > 0 ? range : "no rows"),
      h("button", { type: "button", class: "btn", "data-page": "next", disabled: !more, onclick: () => onChange(page + 1) }, "Next ›"),
    );
  }

  const resourceText = (map, name) => fmt.resource(name, (map || {})[name] || 0);

  function usedOfTotal(used, total, name) {
    return h(
      "div",
      { class: "used-of" },
      h("span", {}, `${fmt.resource(name, used || 0)} / ${fmt.resource(name, total || 0)}`),
      B.usageBar(used || 0, 0, total || 0),
    );
  }

  const frameworkLink = (id, name) => B.link(B.href("frameworks", id), name || fmt.shortId(id), { title: id });
  const agentLink = (id, name) => B.link(B.href("agents", id), name || fmt.shortId(id), { title: id });

  function activeBadge(active, connected) {
    if (active === false) return h("span", { class: "badge badge-bad" }, "inactive");
    if (connected === false) return h("span", { class: "badge badge-busy" }, "disconnected");
    return h("span", { class: "badge badge-good" }, "active");
  }

  /** A text filter, sorting and pages done by the master over one of its listings
   * (`/master/ui/agents`, `/master/ui/frameworks`): only the page shown is ever fetched.
   * `relevant(change, shownIds, sortKey)` says whether a change on the bus needs a refetch. */
  function serverPages(ctx, table, opts) {
    const q = ctx.route.query;
    const state = { q: q.get("q") || "", page: Math.max(0, Number(q.get("page")) - 1 || 0), size: opts.size || 50 };
    if (table.columns.some((c) => c.key === q.get("sort"))) {
      table.sortKey = q.get("sort");
      table.sortDesc = q.get("order") === "des";
      table.renderHead();
    }
    const info = h("div", { class: "pager-box" });
    let shown = new Set();
    let lastMs = 0;
    let refresh = null;
    const input = h("input", {
      type: "search",
      class: "search",
      placeholder: opts.placeholder,
      value: state.q,
      "aria-label": opts.placeholder,
      oninput: B.debounce(() => {
        state.q = input.value.trim();
        state.page = 0;
        B.setQuery({ q: state.q, page: "" });
        refresh.now();
      }, 200),
    });
    table.options.onSort = () => {
      state.page = 0;
      B.setQuery({ sort: table.sortKey, order: table.sortDesc ? "des" : "", page: "" });
      refresh.now();
    };
    async function load() {
      const started = performance.now();
      const params = { offset: state.page * state.size, limit: state.size, q: state.q, sort: table.sortKey, order: table.sortDesc ? "des" : "asc", ...(opts.params || {}) };
      const doc = await B.listing(opts.kind, params);
      lastMs = performance.now() - started;
      if (!ctx.alive) return;
      if (doc.count > 0 && params.offset >= doc.count) {
        state.page = Math.max(0, Math.ceil(doc.count / state.size) - 1);
        B.setQuery({ page: state.page ? state.page + 1 : "" });
        return load();
      }
      shown = new Set(doc.rows.map((r) => r.id));
      table.render(doc.rows, state.q ? "No match." : opts.empty);
      B.replace(
        info,
        pager({ page: state.page, size: state.size, total: doc.count }, (p) => {
          state.page = p;
          B.setQuery({ page: p ? p + 1 : "" });
          refresh.now();
        }),
      );
      opts.onLoad?.(doc);
      return doc.snapshot;
    }
    refresh = ctx.live(load, {
      topics: [opts.topic],
      filter: (_, change) => opts.relevant(change, shown, table.sortKey),
      pollMs: opts.pollMs || 5000,
      // A slow answer (a big cluster) is asked for again no more often than 5x its time.
      minGapMs: () => Math.max(opts.minGapMs || 1000, lastMs * 5),
      errorEl: opts.errorEl,
      always: !!opts.always,
    });
    return { input, info, refresh };
  }

  // -- overview -----------------------------------------------------------------------------

  const RESOURCE_LABELS = { cpus: "CPUs", mem: "Memory", disk: "Disk", gpus: "GPUs" };

  function resourceCard(name, m) {
    const total = m[`master/${name}_total`] || 0;
    const used = m[`master/${name}_used`] || 0;
    const offered = m[`master/${name}_offered`] || 0;
    const idle = Math.max(0, total - used - offered);
    return h(
      "section",
      { class: "card resource", "data-resource": name },
      h("h2", {}, RESOURCE_LABELS[name]),
      h("div", { class: "big" }, fmt.resource(name, used), h("span", { class: "muted" }, ` / ${fmt.resource(name, total)}`)),
      B.usageBar(used, offered, total),
      h(
        "div",
        { class: "split" },
        h("span", {}, h("i", { class: "dot dot-used" }), `used ${fmt.percent(total ? used / total : 0)}`),
        h("span", {}, h("i", { class: "dot dot-offered" }), `offered ${fmt.resource(name, offered)}`),
        h("span", {}, h("i", { class: "dot dot-idle" }), `idle ${fmt.resource(name, idle)}`),
      ),
    );
  }

  function countCard(title, href, rows) {
    return h(
      "section",
      { class: "card counts", "data-count": title.toLowerCase() },
      h("h2", {}, href ? B.link(href, title) : title),
      h(
        "dl",
        {},
        rows.map(([label, value, tone]) => [h("dt", {}, label), h("dd", { class: tone ? `tone-${tone}` : "" }, fmt.num(value, 0))]),
      ),
    );
  }

  function overviewCards(m) {
    const v = (name) => m[`master/${name}`] || 0;
    const resources = B.SCALARS.filter((n) => n !== "gpus" || v("gpus_total") > 0).map((n) => resourceCard(n, m));
    const counts = [
      countCard("Agents", "#/agents", [
        ["active", v("slaves_active"), "good"],
        ["inactive", v("slaves_inactive")],
        ["disconnected", v("slaves_disconnected"), v("slaves_disconnected") ? "bad" : ""],
        ["unreachable", v("slaves_unreachable"), v("slaves_unreachable") ? "bad" : ""],
      ]),
      countCard("Frameworks", "#/frameworks", [
        ["active", v("frameworks_active"), "good"],
        ["inactive", v("frameworks_inactive")],
        ["disconnected", v("frameworks_disconnected")],
        ["completed", v("frameworks_completed")],
      ]),
      countCard("Tasks", "#/tasks", [
        ["running", v("tasks_running"), "good"],
        ["staging / starting", v("tasks_staging") + v("tasks_starting")],
        ["killing", v("tasks_killing")],
        ["finished", v("tasks_finished")],
        ["failed / error", v("tasks_failed") + v("tasks_error"), v("tasks_failed") + v("tasks_error") ? "bad" : ""],
        ["killed / lost", v("tasks_killed") + v("tasks_lost")],
      ]),
      countCard("Offers", "#/offers", [["outstanding", v("outstanding_offers")]]),
    ];
    return [h("div", { class: "grid resources" }, resources), h("div", { class: "grid counts-grid" }, counts)];
  }

  B.pages.overview = (ctx) => {
    const sub = h("span", { class: "muted" });
    const cards = h("div", { id: "overview-cards" }, h("p", { class: "muted" }, "Loading…"));
    const chart = B.chart.utilisationChart();
    ctx.onCleanup(chart.dispose);
    const error = errorBox();
    B.replace(
      ctx.el,
      header("Cluster", sub),
      error,
      cards,
      card("Utilisation, last hour", h("p", { class: "muted small" }, "Share of each resource held by tasks and executors, sampled by the master every 5 s."), chart),
    );
    let master = null;
    const render = (m) => {
      if (!m) return;
      B.replace(cards, overviewCards(m));
      const info = master?.master_info;
      B.replace(
        sub,
        info ? `master ${info.hostname}:${info.port} · ${info.version || ""} · ` : "",
        `up ${fmt.duration(m["master/uptime_secs"] || 0)}`,
        m["master/elected"] === 0 ? " · standby" : " · leading",
        " · ",
        h("a", { href: "#/log", id: "master-log-link", title: "The master's log (--log_dir or --external_log_file)" }, "LOG"),
      );
    };
    ctx.on("metrics", (m) => {
      error.hidden = true;
      render(m);
    });
    ctx.on("metrics-error", (err) => {
      B.replace(error, B.errorText(err));
      error.hidden = false;
    });
    B.call("GET_MASTER")
      .then((doc) => {
        master = doc;
        render(B.metrics.latest);
      })
      .catch(() => {});
    render(B.metrics.latest);
  };

  // -- agents -------------------------------------------------------------------------------

  const runningOn = (a) => (a.TASK_RUNNING || 0) + (a.TASK_STARTING || 0) + (a.TASK_STAGING || 0) + (a.TASK_KILLING || 0);

  // Sorting by these follows the tasks, so any change of an agent may reorder the page.
  const USAGE_SORTS = new Set(["cpus", "mem", "disk", "tasks"]);

  B.pages.agents = (ctx) => {
    const scalar = (name) => ({
      key: name,
      label: RESOURCE_LABELS[name],
      render: (a) => usedOfTotal(a.used_resources?.[name], a.resources?.[name], name),
    });
    const table = new B.SortableTable(
      [
        { key: "hostname", label: "Host", render: (a) => agentLink(a.id, `${a.hostname}:${a.port}`) },
        { key: "id", label: "ID", render: (a) => h("code", { title: a.id }, fmt.shortId(a.id)) },
        scalar("cpus"),
        scalar("mem"),
        scalar("disk"),
        { key: "tasks", label: "Active tasks", num: true, render: (a) => fmt.num(runningOn(a), 0) },
        { key: "active", label: "Status", render: (a) => activeBadge(a.active, a.connected) },
        { key: "registered", label: "Registered", render: (a) => h("span", { title: fmt.datetime(a.registered_time) }, fmt.ago(a.registered_time)) },
      ],
      { name: "agents", presorted: true, rowData: (a) => ({ agent: a.id }) },
    );
    const count = h("span", { class: "muted" });
    const error = errorBox();
    const list = serverPages(ctx, table, {
      kind: "agents",
      topic: "agent",
      placeholder: "Filter by host or id",
      empty: "No agents are registered.",
      errorEl: error,
      pollMs: 10000,
      relevant: (change, shown, sortKey) =>
        change.membership > 0 || B.touches(change, shown) || (USAGE_SORTS.has(sortKey) && change.ids.size > 0),
      onLoad: (doc) => {
        B.cache.rememberAgents(doc.rows);
        count.textContent = `${fmt.num(doc.total, 0)} registered`;
      },
    });
    B.replace(ctx.el, header("Agents", count), error, h("div", { class: "toolbar" }, list.input), h("div", { class: "table-wrap" }, table.el), list.info);
  };

  B.pages.agent = (ctx) => {
    const id = ctx.route.id;
    const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const error = errorBox();
    B.replace(ctx.el, header("Agent", h("code", {}, id)), error, body, B.executors.executorsCard(ctx, { agent_id: id }));
    ctx.live(
      async () => {
        const [doc, held] = await Promise.all([B.get(`/master/slaves?slave_id=${encodeURIComponent(id)}`), B.reservations.fetch(id).catch(() => null)]);
        const a = (doc.slaves || [])[0];
        if (!a) {
          B.replace(body, h("p", { class: "error" }, `No agent ${id} is registered.`));
          return;
        }
        B.cache.rememberAgents([a]);
        const names = Object.keys(a.resources || {});
        const rows = names.map((name) =>
          h(
            "tr",
            {},
            h("th", {}, name),
            ["resources", "used_resources", "offered_resources", "unreserved_resources"].map((k) => h("td", { class: "num" }, resourceText(a[k], name))),
          ),
        );
        const attributes = Object.entries(a.attributes || {}).map(([k, v]) => h("span", { class: "chip" }, `${k}: ${v}`));
        B.replace(
          body,
          card(
            null,
            facts([
              ["Host", `${a.hostname}:${a.port}`],
              ["Status", activeBadge(a.active)],
              ["PID", a.pid],
              ["Version", a.version],
              ["Registered", `${fmt.datetime(a.registered_time)} (${fmt.ago(a.registered_time)})`],
              ["Attributes", attributes.length ? attributes : h("span", { class: "muted" }, "none")],
              ["Tasks", B.link(B.href("tasks", null, { agent: a.id }), "tasks on this agent")],
              ["Log", h("a", { href: `#/agents/${encodeURIComponent(a.id)}/log`, id: "agent-log-link" }, "LOG")],
            ]),
          ),
          card(
            "Resources",
            h(
              "table",
              { class: "data compact" },
              h("thead", {}, h("tr", {}, h("th", {}, ""), ["Total", "Used", "Offered", "Unreserved"].map((t) => h("th", { class: "num" }, t)))),
              h("tbody", {}, rows),
            ),
          ),
          held ? B.reservations.cards(held) : null,
        );
      },
      { topics: ["agent"], pollMs: 5000, minGapMs: 2000, errorEl: error, filter: (_, change) => B.touches(change, [id]) },
    );
  };

  // -- frameworks ---------------------------------------------------------------------------

  const activeTasks = (f) => (f.TASK_STAGING || 0) + (f.TASK_STARTING || 0) + (f.TASK_RUNNING || 0) + (f.TASK_KILLING || 0);
  const rolesOf = (f) => (f.roles || (f.role ? [f.role] : [])).join(", ");

  /** The operator API's framework (v1 shape) in the legacy summary's shape. */
  function fromOperator(fw) {
    const info = fw.framework_info;
    return {
      id: info.id.value,
      name: info.name,
      user: info.user,
      roles: info.roles || (info.role ? [info.role] : ["*"]),
      active: fw.active,
      connected: fw.connected,
      registered_time: B.fmt.seconds(fw.registered_time),
      unregistered_time: fw.unregistered_time ? B.fmt.seconds(fw.unregistered_time) : 0,
      used_resources: B.resourceMap(fw.allocated_resources),
      offered_resources: B.resourceMap(fw.offered_resources),
    };
  }

  function frameworkTable(name, completed) {
    const columns = [
      { key: "name", label: "Name", render: (f) => frameworkLink(f.id, f.name) },
      { key: "id", label: "ID", render: (f) => h("code", { title: f.id }, fmt.shortId(f.id)) },
      { key: "role", label: "Roles", render: rolesOf },
      { key: "user", label: "User" },
    ];
    if (!completed) {
      columns.push(
        { key: "state", label: "Status", render: (f) => activeBadge(f.active, f.connected) },
        { key: "tasks", label: "Active tasks", num: true, render: (f) => fmt.num(activeTasks(f), 0) },
        { key: "cpus", label: "CPUs", num: true, render: (f) => resourceText(f.used_resources, "cpus") },
        { key: "mem", label: "Memory", num: true, render: (f) => resourceText(f.used_resources, "mem") },
        { key: "offered", label: "Offered CPUs", num: true, render: (f) => resourceText(f.offered_resources, "cpus") },
      );
    }
    columns.push({
      key: "registered",
      label: completed ? "Ended" : "Registered",
      render: (f) => fmt.ago(completed ? f.unregistered_time : f.registered_time),
    });
    return new B.SortableTable(columns, { name, presorted: true, sortKey: "registered", sortDesc: true, rowData: (f) => ({ framework: f.id }) });
  }

  B.pages.frameworks = (ctx) => {
    const active = frameworkTable("frameworks", false);
    const completed = frameworkTable("completed-frameworks", true);
    const count = h("span", { class: "muted" });
    const error = errorBox();
    const list = serverPages(ctx, active, {
      kind: "frameworks",
      topic: "framework",
      placeholder: "Filter by name, id or role",
      empty: "No framework is registered.",
      errorEl: error,
      pollMs: 10000,
      // Polled even while the change feed runs: as in Mesos, nothing on the operator event
      // stream says that a framework disconnected (no FRAMEWORK_UPDATED until it subscribes
      // again), and its status column must still change.
      always: true,
      relevant: () => true, // frameworks are few: any change may show
      onLoad: (doc) => {
        count.textContent = `${fmt.num(doc.total, 0)} registered`;
      },
    });
    // The newest 50 completed frameworks (Mesos keeps the last 50 as well).
    ctx.live(
      async () => {
        const doc = await B.listing("frameworks", { completed: 1, limit: 50, sort: "registered", order: "des" });
        completed.render(doc.rows, "None yet.");
      },
      { topics: ["framework"], filter: (_, change) => change.membership > 0, pollMs: 10000, minGapMs: 2000, errorEl: error },
    );
    B.replace(
      ctx.el,
      header("Frameworks", count),
      error,
      h("div", { class: "toolbar" }, list.input),
      h("div", { class: "table-wrap" }, active.el),
      list.info,
      h("h2", { class: "section" }, "Completed frameworks"),
      h("div", { class: "table-wrap" }, completed.el),
    );
  };

  /** The framework's row of the master's listing (live or completed). */
  async function frameworkRow(id) {
    const [live, done] = await Promise.all([B.listing("frameworks", { id: [id] }), B.listing("frameworks", { id: [id], completed: 1 })]);
    return live.rows[0] || done.rows[0] || null;
  }

  B.pages.framework = (ctx) => {
    const id = ctx.route.id;
    const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const error = errorBox();
    const title = h("span", {}, h("code", {}, id));
    B.replace(ctx.el, header("Framework", title), error, body, B.executors.executorsCard(ctx, { framework_id: id }));
    ctx.live(
      async () => {
        const [doc, row] = await Promise.all([B.cache.frameworks.get(true), frameworkRow(id)]);
        const op = B.cache.frameworkIndex(doc).get(id);
        if (!op) {
          B.replace(body, h("p", { class: "error" }, `No framework ${id} is known to this master.`));
          return;
        }
        const f = { ...fromOperator(op), ...(row || {}) };
        const info = op.framework_info;
        const counts = B.TASK_STATES.filter((s) => f[s]).map((s) => h("span", { class: "chip" }, B.stateBadge(s), ` ${fmt.num(f[s], 0)}`));
        B.replace(
          body,
          card(
            null,
            facts([
              ["Name", info.name],
              ["Status", op.completed ? h("span", { class: "badge badge-neutral" }, "completed") : activeBadge(f.active, f.connected)],
              ["User", info.user],
              ["Roles", rolesOf(f)],
              ["Principal", info.principal],
              ["Hostname", info.hostname],
              ["Web UI", info.webui_url ? h("a", { href: info.webui_url, rel: "noopener" }, info.webui_url) : null],
              ["Failover timeout", `${fmt.num(info.failover_timeout || 0)} s`],
              ["Checkpoint", info.checkpoint ? "yes" : "no"],
              ["Capabilities", (info.capabilities || []).map((c) => h("span", { class: "chip" }, c.type))],
              ["Registered", `${fmt.datetime(f.registered_time)} (${fmt.ago(f.registered_time)})`],
              ["Used", B.SCALARS.map((n) => `${n} ${resourceText(f.used_resources, n)}`).join(" · ")],
              ["Offered", B.SCALARS.map((n) => `${n} ${resourceText(f.offered_resources, n)}`).join(" · ")],
              ["Tasks", [counts, " ", B.link(B.href("tasks", null, { framework: id }), "list tasks")]],
            ]),
          ),
          offersCard((op.offers || []).map((o) => ({ offer: o, framework: info })), "Outstanding offers"),
        );
      },
      // Polled always: a disconnection (status) and offers come with no event (as in Mesos).
      { topics: ["framework"], filter: (_, change) => B.touches(change, [id]), pollMs: 5000, always: true, minGapMs: 2000, errorEl: error },
    );
  };

  // -- roles --------------------------------------------------------------------------------

  B.pages.roles = (ctx) => {
    const share = (r) => B.metrics.latest?.[`allocator/mesos/roles/${r.name}/shares/dominant`] || 0;
    const amount = (key, name) => ({
      key: `${key}-${name}`,
      label: `${RESOURCE_LABELS[name]}`,
      num: true,
      value: (r) => r[key]?.[name] || 0,
      render: (r) => resourceText(r[key], name),
    });
    // Quota amounts (name -> value) as "cpus 2 · mem 1 GiB"; "–" when none.
    const quotaText = (m) => {
      const names = Object.keys(m || {}).sort();
      return names.length ? names.map((n) => `${n} ${fmt.resource(n, m[n])}`).join(" · ") : "–";
    };
    const quotaColumn = (key, label) => ({
      key: `quota-${key}`,
      label,
      value: (r) => r.quota?.[key]?.cpus || 0,
      render: (r) => quotaText(r.quota?.[key]),
    });
    const table = new B.SortableTable(
      [
        { key: "name", label: "Role", render: (r) => h("strong", {}, r.name) },
        { key: "weight", label: "Weight", num: true, render: (r) => fmt.num(r.weight, 3) },
        { key: "frameworks", label: "Frameworks", num: true, value: (r) => (r.frameworks || []).length, render: (r) => fmt.num((r.frameworks || []).length, 0) },
        amount("allocated", "cpus"),
        amount("allocated", "mem"),
        amount("allocated", "disk"),
        { key: "offered", label: "Offered", value: (r) => r.offered?.cpus || 0, render: (r) => `${resourceText(r.offered, "cpus")} cpus · ${resourceText(r.offered, "mem")}` },
        { key: "reserved", label: "Reserved", value: (r) => r.reserved?.cpus || 0, render: (r) => `${resourceText(r.reserved, "cpus")} cpus · ${resourceText(r.reserved, "mem")} · disk ${resourceText(r.reserved, "disk")}` },
        quotaColumn("guarantee", "Quota guarantee"),
        quotaColumn("limit", "Quota limit"),
        quotaColumn("consumed", "Quota consumed"),
        {
          key: "share",
          label: "Dominant share",
          value: share,
          render: (r) => h("div", { class: "used-of" }, h("span", {}, fmt.percent(share(r))), B.usageBar(share(r), 0, 1)),
        },
      ],
      { name: "roles", rowData: (r) => ({ role: r.name }) },
    );
    const error = errorBox();
    B.replace(
      ctx.el,
      header("Roles", h("span", { class: "muted" }, "Allocation, weights and DRF dominant shares")),
      error,
      h("div", { class: "table-wrap" }, table.el),
      h("p", { class: "muted small" }, "Allocated counts what tasks and executors hold. The dominant share is the allocator's, as in the metric allocator/mesos/roles/<role>/shares/dominant."),
    );
    let lastMs = 0;
    ctx.live(
      async () => {
        const started = performance.now();
        const doc = await B.get("/master/ui/roles");
        lastMs = performance.now() - started;
        table.render(doc.roles || [], "No roles yet.");
      },
      { topics: ["framework", "task"], pollMs: 5000, minGapMs: () => Math.max(2000, lastMs * 5), errorEl: error },
    );
    ctx.on("metrics", () => table.render(table.rows, "No roles yet."));
  };

  // -- offers -------------------------------------------------------------------------------

  const offerRole = (x) => x.offer.allocation_info?.role || "*";
  const offerHost = (x) => {
    const port = x.offer.url?.address?.port;
    return port ? `${x.offer.hostname}:${port}` : x.offer.hostname;
  };

  function offersCard(items, title) {
    const table = new B.SortableTable(
      [
        { key: "id", label: "Offer", value: (x) => x.offer.id.value, render: (x) => h("code", { title: x.offer.id.value }, fmt.shortId(x.offer.id.value)) },
        { key: "framework", label: "Framework", value: (x) => x.framework.name, render: (x) => frameworkLink(x.framework.id.value, x.framework.name) },
        { key: "agent", label: "Agent", value: offerHost, render: (x) => agentLink(x.offer.agent_id.value, offerHost(x)) },
        { key: "role", label: "Role", value: offerRole, render: offerRole },
        ...["cpus", "mem", "disk", "gpus"].map((name) => ({
          key: name,
          label: RESOURCE_LABELS[name],
          num: true,
          value: (x) => B.resourceMap(x.offer.resources)[name] || 0,
          render: (x) => resourceText(B.resourceMap(x.offer.resources), name),
        })),
        { key: "ports", label: "Ports", value: (x) => B.resourceMap(x.offer.resources).ports || "", render: (x) => B.resourceMap(x.offer.resources).ports || "" },
      ],
      { name: "offers", rowData: (x) => ({ offer: x.offer.id.value }) },
    );
    table.render(items, "No outstanding offers.");
    return card(title, h("div", { class: "table-wrap" }, table.el));
  }

  B.pages.offers = (ctx) => {
    const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const count = h("span", { class: "muted" });
    const error = errorBox();
    B.replace(ctx.el, header("Offers", count), error, body);
    ctx.live(
      async () => {
        const doc = await B.cache.frameworks.get(true);
        const items = [];
        for (const fw of doc.frameworks || []) {
          for (const offer of fw.offers || []) items.push({ offer, framework: fw.framework_info });
        }
        count.textContent = `${fmt.num(items.length, 0)} outstanding`;
        B.replace(body, offersCard(items, null));
      },
      { topics: ["framework", "task", "agent"], pollMs: 5000, always: true, minGapMs: 1000, errorEl: error },
    );
  };

  Object.assign(B, { ui: { header, errorBox, card, facts, pager, frameworkLink, agentLink, RESOURCE_LABELS } });
})(window.Butte);
