/* butte web UI: executors. The executor page (#/agents/<agent>/frameworks/<fw>/executors/<id>,
 * Mesos' address for it) from the agent's own /state, which the master asks for the page
 * (`/master/ui/executor`); the executors cards of the agent and framework pages
 * (`/master/ui/executors`, from the master's records); the sandbox browser of a path on an
 * agent (#/agents/<agent>/browse?path=). */
"use strict";

(function (B) {
  const { h, fmt } = B;
  const enc = encodeURIComponent;

  /** The address of an executor's page. */
  function executorHref(agentId, frameworkId, executorId) {
    return `#/agents/${enc(agentId)}/frameworks/${enc(frameworkId)}/executors/${enc(executorId)}`;
  }

  /** The address of the sandbox browser on `path` (a sandbox directory of that agent). */
  function browseHref(agentId, path) {
    return `#/agents/${enc(agentId)}/browse?${new URLSearchParams({ path })}`;
  }

  // -- executors cards (agent and framework pages) ------------------------------------------

  /** A card listing the executors of one agent (`{agent_id}`) or framework
   * (`{framework_id}`), each linking to its page; kept fresh with `ctx.live`. */
  function executorsCard(ctx, params) {
    const onAgent = Boolean(params.agent_id);
    const columns = [
      {
        key: "executor_id",
        label: "Executor",
        render: (r) => B.link(executorHref(r.agent_id, r.framework_id, r.executor_id), fmt.shortId(r.executor_id), { title: r.executor_id, class: "executor-link" }),
      },
      onAgent
        ? { key: "framework", label: "Framework", value: (r) => r.framework || r.framework_id, render: (r) => B.ui.frameworkLink(r.framework_id, r.framework) }
        : { key: "agent", label: "Agent", value: (r) => r.agent || r.agent_id, render: (r) => B.ui.agentLink(r.agent_id, r.agent) },
      { key: "active_tasks", label: "Active tasks", num: true, render: (r) => fmt.num(r.active_tasks, 0) },
    ];
    const table = new B.SortableTable(columns, { name: "executors", rowData: (r) => ({ executor: r.executor_id }) });
    const note = h("p", { class: "muted small" });
    const error = B.ui.errorBox();
    let lastMs = 0;
    ctx.live(
      async () => {
        const started = performance.now();
        const doc = await B.get(`/master/ui/executors?${new URLSearchParams(params)}`);
        lastMs = performance.now() - started;
        if (!ctx.alive) return;
        table.render(doc.executors || [], onAgent ? "No executor runs on this agent." : "No executor of this framework runs.");
        note.textContent = doc.total > (doc.executors || []).length ? `The first ${fmt.num(doc.executors.length, 0)} of ${fmt.num(doc.total, 0)}.` : "";
      },
      // Executors come and go with tasks; a change of tasks anywhere may concern this card.
      { topics: ["task", onAgent ? "agent" : "framework"], pollMs: 5000, minGapMs: () => Math.max(2000, lastMs * 5), errorEl: error },
    );
    return B.ui.card("Executors", error, h("div", { class: "table-wrap" }, table.el), note);
  }

  // -- the executor page --------------------------------------------------------------------

  const resourcesOf = (t) => t.resources || {};

  /** The sandbox of a task of this executor: a member of a task group (the DEFAULT executor
   * runs it, and it names its executor) has its own `tasks/<id>` inside the executor's. */
  function taskSandbox(executor, t, root) {
    return executor.type === "DEFAULT" && t.executor_id ? `${root}/tasks/${t.id}` : root;
  }

  function taskTable(name, tasks, executor, agentId, root, withState) {
    const columns = [
      { key: "id", label: "ID", render: (t) => B.link(B.href("tasks", t.id), fmt.shortId(t.id), { title: t.id }) },
      { key: "name", label: "Name" },
      { key: "role", label: "Role" },
    ];
    if (withState) columns.push({ key: "state", label: "State", render: (t) => B.stateBadge(t.state) });
    for (const res of ["cpus", "mem", "disk", "gpus"]) {
      columns.push({
        key: res,
        label: B.ui.RESOURCE_LABELS[res],
        num: true,
        value: (t) => resourcesOf(t)[res] || 0,
        render: (t) => fmt.resource(res, resourcesOf(t)[res] || 0),
      });
    }
    // What a task may use beyond what it was allocated (TaskInfo.limits; "inf": no limit).
    const limitText = (t) => {
      const limits = t.limits || {};
      const parts = ["cpus", "mem"].filter((n) => limits[n] !== undefined).map((n) => `${n} ${typeof limits[n] === "number" ? fmt.resource(n, limits[n]) : limits[n]}`);
      return parts.length ? parts.join(" · ") : "–";
    };
    columns.push({ key: "limits", label: "Limits", sortable: false, render: limitText });
    columns.push({
      key: "sandbox",
      label: "",
      sortable: false,
      render: (t) => B.link(browseHref(agentId, taskSandbox(executor, t, root)), "Sandbox", { class: "sandbox-link" }),
    });
    const table = new B.SortableTable(columns, { name, rowData: (t) => ({ task: t.id }) });
    table.render(tasks, "None.");
    return table;
  }

  function tasksCard(title, key, executor, agentId, root, withState) {
    const tasks = executor[key] || [];
    const total = executor.counts?.[key] ?? tasks.length;
    const table = taskTable(key.replace(/_/g, "-"), tasks, executor, agentId, root, withState);
    const cut = total > tasks.length ? h("p", { class: "muted small" }, `The newest ${fmt.num(tasks.length, 0)} of ${fmt.num(total, 0)}.`) : null;
    return B.ui.card(`${title} (${fmt.num(total, 0)})`, h("div", { class: "table-wrap" }, table.el), cut);
  }

  /** Allocated and in use per resource. In use is what the agent measures of the container:
   * CPU rate and memory always, disk only under `disk/du` (`disk_used_bytes`); GPUs are
   * allocated, never measured. "–" where nothing is measured. */
  function resourcesTable(executor, usage) {
    const allocated = executor.resources || {};
    const none = () => h("span", { class: "muted", title: "not measured" }, "–");
    const measured = usage && !usage.error;
    const used = {
      cpus: measured ? (usage.cpus === null ? "measuring…" : fmt.num(usage.cpus, 3)) : none(),
      mem: measured && usage.memBytes !== null ? fmt.bytes(usage.memBytes) : none(),
      disk: measured && usage.diskBytes !== null ? h("span", { title: usage.diskLimitBytes !== null ? `limit ${fmt.bytes(usage.diskLimitBytes)}` : "no limit" }, fmt.bytes(usage.diskBytes)) : none(),
      gpus: none(),
    };
    const rows = ["cpus", "mem", "disk", "gpus"].map((name) =>
      h(
        "tr",
        { dataset: { resource: name } },
        h("th", {}, B.ui.RESOURCE_LABELS[name]),
        h("td", { class: "num" }, used[name]),
        h("td", { class: "num" }, fmt.resource(name, allocated[name] || 0)),
      ),
    );
    return h(
      "table",
      { class: "data compact", "data-table": "executor-resources" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", { class: "num" }, "In use"), h("th", { class: "num" }, "Allocated"))),
      h("tbody", {}, rows),
    );
  }

  B.pages.executor = (ctx) => {
    const { id: agentId, framework: frameworkId, executor: executorId } = ctx.route;
    const error = B.ui.errorBox();
    const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const crumbs = h(
      "div",
      { class: "crumbs" },
      B.link(B.href("agents", agentId), "agent", { title: agentId }),
      " / ",
      B.link(B.href("frameworks", frameworkId), "framework", { title: frameworkId }),
      " / executor",
    );
    B.replace(ctx.el, B.ui.header("Executor", h("code", {}, executorId)), crumbs, error, body);
    const query = new URLSearchParams({ agent_id: agentId, framework_id: frameworkId, executor_id: executorId });
    let shown = new Set();
    let usage = null;
    ctx.live(
      async () => {
        const doc = await B.get(`/master/ui/executor?${query}`);
        if (!ctx.alive) return;
        const { executor: ex, framework: fw, agent } = doc;
        const root = ex.directory || `/slaves/${agentId}/frameworks/${frameworkId}/executors/${executorId}/runs/latest`;
        shown = new Set(B.tasksOf(ex).map((t) => t.id));
        // What the container uses, from the agent's statistics of one running task's container.
        const running = (ex.tasks || []).find((t) => t.state === "TASK_RUNNING");
        usage = null;
        if (running) {
          try {
            usage = (await B.usage.fetch([running.id])).get(running.id) || null;
          } catch (err) {
            usage = { error: B.errorText(err) };
          }
        }
        const host = agent.hostname ? `${agent.hostname}:${agent.port}` : agentId;
        B.replace(
          body,
          h(
            "div",
            { class: "grid two" },
            B.ui.card(
              "Details",
              B.ui.facts([
                ["ID", h("code", { id: "executor-id" }, ex.id)],
                ["Name", ex.name],
                ["Status", ex.completed ? h("span", { class: "badge badge-neutral" }, "completed") : h("span", { class: "badge badge-good" }, "running")],
                ["Framework", [B.ui.frameworkLink(frameworkId, fw.name), fw.completed ? " (completed)" : ""]],
                ["Agent", B.ui.agentLink(agentId, host)],
                ["Type", ex.type],
                ["Source", ex.source],
                ["Role", ex.role],
                ["Container", ex.container ? h("code", {}, ex.container) : null],
                ["Directory", ex.directory ? h("code", {}, ex.directory) : null],
                ["Sandbox", B.link(browseHref(agentId, root), "browse the sandbox", { id: "executor-sandbox" })],
                ["Active tasks", fmt.num((ex.tasks || []).length, 0)],
              ]),
            ),
            B.ui.card(
              "Resources",
              resourcesTable(ex, usage),
              h("p", { class: "muted small" }, "Allocated: the executor's and its live tasks' resources. In use: the container's statistics from its agent (disk only where the agent measures it, disk/du isolation; GPUs are not measured)."),
            ),
          ),
          tasksCard("Queued tasks", "queued_tasks", ex, agentId, root, false),
          tasksCard("Tasks", "tasks", ex, agentId, root, true),
          tasksCard("Completed tasks", "completed_tasks", ex, agentId, root, true),
        );
      },
      {
        topics: ["task"],
        // Its own tasks changed, or new tasks came (one of them may be this executor's).
        filter: (_, change) => change.added > 0 || B.touches(change, shown),
        pollMs: 5000,
        always: true, // the CPU figure is a rate: it needs answers coming in
        minGapMs: 2000,
        errorEl: error,
      },
    );
  };

  // -- the sandbox browser of a path on an agent --------------------------------------------

  B.pages.browse = (ctx) => {
    const agentId = ctx.route.id;
    const path = ctx.route.query.get("path") || "";
    const box = h("div", { id: "sandbox" });
    B.replace(
      ctx.el,
      B.ui.header("Sandbox", B.ui.agentLink(agentId, B.cache.agentNames.get(agentId)), " ", h("code", { id: "browse-path" }, path)),
      B.ui.card(null, box),
    );
    if (!path) {
      B.replace(box, h("p", { class: "error" }, "No path given (?path=<a sandbox directory>)."));
      return;
    }
    const browser = new B.tasks.SandboxBrowser(ctx, box, path);
    browser.open(ctx.route.query.get("dir") || "", ctx.route.query.get("file") || "");
  };

  /** The master's log (`/master/log`): Mesos' LOG link of the master. */
  B.pages.log = (ctx) => {
    const box = h("div", { id: "log" });
    B.replace(ctx.el, B.ui.header("Master log", h("code", {}, "/master/log")), B.ui.card(null, box));
    new B.tasks.LogViewer(ctx, box, "/master/log").show("master");
  };

  /** An agent's log (`/slave/log`, read through the master): the LOG link of an agent. */
  B.pages.agentlog = (ctx) => {
    const agentId = ctx.route.id;
    const box = h("div", { id: "log" });
    B.replace(
      ctx.el,
      B.ui.header("Agent log", B.ui.agentLink(agentId, B.cache.agentNames.get(agentId)), " ", h("code", {}, "/slave/log")),
      B.ui.card(null, box),
    );
    new B.tasks.LogViewer(ctx, box, `/slaves/${agentId}/slave/log`).show("agent");
  };

  /** Every task of an executor, queued, running and completed. */
  B.tasksOf = (ex) => [...(ex.queued_tasks || []), ...(ex.tasks || []), ...(ex.completed_tasks || [])];
  B.executors = { executorHref, browseHref, executorsCard };
})(window.Butte);
