/* butte web UI: the maintenance page (#/maintenance?q=&mode=&page=). The master's schedule
 * (`/master/maintenance/schedule`: windows of machines with a start and a duration in
 * nanoseconds, each machine DOWN when `/master/maintenance/status` says so, else DRAINING),
 * and every machine, the agents' included, a page at a time from `/master/ui/maintenance`:
 * its mode (a machine in no window is UP, docs/maintenance.md), its window, each framework's
 * answer to its inverse offers and links to its agents. The master narrows all three
 * answers to the machines the caller may see. */
"use strict";

(function (B) {
  const { h, fmt } = B;

  /** A MachineID as one key: "hostname|ip" (either may be empty). */
  const machineKey = (m) => `${(m?.hostname || "").toLowerCase()}|${m?.ip || ""}`;
  const machineName = (m) => m?.hostname || m?.ip || "?";
  const nanosToSeconds = (t) => Number(t?.nanoseconds || 0) / 1e9;

  function modeBadge(mode) {
    const tone = { UP: "good", DRAINING: "busy", DOWN: "bad" }[mode] || "neutral";
    return h("span", { class: `badge badge-${tone} mode`, dataset: { mode } }, mode);
  }

  function when(seconds) {
    const delta = seconds - Date.now() / 1000;
    const rel = Math.abs(delta) < 1 ? "now" : delta > 0 ? `in ${fmt.duration(delta)}` : `${fmt.duration(-delta)} ago`;
    return h("span", { title: rel }, fmt.datetime(seconds), h("span", { class: "muted small" }, ` (${rel})`));
  }

  /** Each scheduled machine's mode (DOWN from the status, else DRAINING), for the windows. */
  function scheduledModes(status) {
    return new Map((status.down_machines || []).map((id) => [machineKey(id), "DOWN"]));
  }

  function windowsTable(windows, modes) {
    const table = new B.SortableTable(
      [
        { key: "start", label: "Begins", value: (w) => nanosToSeconds(w.unavailability?.start), render: (w) => when(nanosToSeconds(w.unavailability?.start)) },
        {
          key: "end",
          label: "Ends",
          value: (w) => (w.unavailability?.duration ? nanosToSeconds(w.unavailability.start) + nanosToSeconds(w.unavailability.duration) : Infinity),
          render: (w) =>
            w.unavailability?.duration ? when(nanosToSeconds(w.unavailability.start) + nanosToSeconds(w.unavailability.duration)) : h("span", { class: "muted" }, "open-ended"),
        },
        { key: "duration", label: "Duration", value: (w) => nanosToSeconds(w.unavailability?.duration), render: (w) => (w.unavailability?.duration ? fmt.duration(nanosToSeconds(w.unavailability.duration)) : "–") },
        {
          key: "machines",
          label: "Machines",
          sortable: false,
          render: (w) => (w.machine_ids || []).map((id) => h("span", { class: "chip", dataset: { machine: machineName(id) } }, machineName(id), " ", modeBadge(modes.get(machineKey(id)) || "DRAINING"))),
        },
      ],
      { name: "maintenance-windows", rowData: (w) => ({ start: String(w.unavailability?.start?.nanoseconds ?? "") }) },
    );
    table.render(windows, "No maintenance is scheduled.");
    return table.el;
  }

  const unavailableFrom = (m) => nanosToSeconds(m.unavailability?.start);

  /** One page of machines as the master lists them (`/master/ui/maintenance`: DOWN, DRAINING,
   * then UP), each with its mode, window, the frameworks' answers and links to its agents. */
  function machinesTable(machines, names) {
    const fwName = (id) => names.get(id)?.framework_info.name;
    const answerChips = (m) =>
      m.statuses.length
        ? m.statuses.map((a) => h("span", { class: "chip", dataset: { answer: a.status || "UNKNOWN" } }, B.ui.frameworkLink(a.framework_id?.value || "", fwName(a.framework_id?.value)), ` ${a.status || "UNKNOWN"}`))
        : h("span", { class: "muted" }, m.mode === "DRAINING" ? "no inverse offer yet" : "");
    const agentLinks = (m) => {
      const links = m.agents.map((a) =>
        h("span", { class: "chip agent-chip", dataset: { agent: a.id } }, B.ui.agentLink(a.id, `${a.hostname}:${a.port}`), a.connected ? "" : h("span", { class: "muted small" }, " disconnected")),
      );
      if (m.agent_count > m.agents.length) links.push(B.link(B.href("agents", null, { q: m.hostname || m.ip }), `all ${fmt.num(m.agent_count, 0)}`));
      return links.length ? links : h("span", { class: "muted" }, "no agent");
    };
    const table = new B.SortableTable(
      [
        { key: "hostname", label: "Hostname", sortable: false, render: (m) => m.hostname || h("span", { class: "muted" }, "–") },
        { key: "ip", label: "IP", sortable: false, render: (m) => m.ip || h("span", { class: "muted" }, "–") },
        { key: "mode", label: "Mode", sortable: false, render: (m) => modeBadge(m.mode) },
        { key: "start", label: "Unavailable from", sortable: false, render: (m) => (m.unavailability ? when(unavailableFrom(m)) : "–") },
        {
          key: "duration",
          label: "For",
          sortable: false,
          render: (m) => (!m.unavailability ? "–" : m.unavailability.duration ? fmt.duration(nanosToSeconds(m.unavailability.duration)) : h("span", { class: "muted" }, "open-ended")),
        },
        { key: "answers", label: "Frameworks' answers", sortable: false, render: answerChips },
        { key: "agents", label: "Agents", sortable: false, render: agentLinks },
      ],
      { name: "maintenance-machines", presorted: true, rowData: (m) => ({ machine: m.hostname || m.ip, mode: m.mode }) },
    );
    return table;
  }

  const PAGE_SIZE = 500;

  B.pages.maintenance = (ctx) => {
    const q = ctx.route.query;
    const state = { q: q.get("q") || "", mode: (q.get("mode") || "").toUpperCase(), page: Math.max(0, Number(q.get("page")) - 1 || 0) };
    const error = B.ui.errorBox();
    const count = h("span", { class: "muted" });
    const windowsBox = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading…"));
    const machinesBox = h("div", { class: "table-wrap" });
    const info = h("div", { class: "pager-box" });
    let refresh = null;
    const changed = (values) => {
      Object.assign(state, values, { page: 0 });
      B.setQuery({ q: state.q, mode: state.mode, page: "" });
      refresh.now();
    };
    const input = h("input", {
      type: "search",
      class: "search",
      id: "machine-search",
      placeholder: "Search hostname, IP or agent id",
      "aria-label": "Search hostname, IP or agent id",
      value: state.q,
      oninput: B.debounce(() => changed({ q: input.value.trim() }), 200),
    });
    const modeSelect = h(
      "select",
      { id: "machine-mode", "aria-label": "Mode", onchange: () => changed({ mode: modeSelect.value }) },
      ["", "UP", "DRAINING", "DOWN"].map((mode) => h("option", { value: mode, selected: mode === state.mode }, mode || "Every mode")),
    );
    B.replace(
      ctx.el,
      B.ui.header("Maintenance", count),
      error,
      B.ui.card("Schedule", windowsBox),
      B.ui.card(
        "Machines",
        h("div", { class: "toolbar" }, input, modeSelect),
        machinesBox,
        info,
        h("p", { class: "muted small" }, "Every agent's machine and every scheduled one. A machine in no window is UP. DRAINING machines are still offered, with their unavailability; DOWN machines have no agents."),
      ),
    );
    refresh = ctx.live(
      async () => {
        const params = new URLSearchParams({ offset: state.page * PAGE_SIZE, limit: PAGE_SIZE, q: state.q, mode: state.mode });
        const [schedule, status, listing] = await Promise.all([
          B.get("/master/maintenance/schedule"),
          B.get("/master/maintenance/status"),
          B.get(`/master/ui/maintenance?${params}`),
        ]);
        if (!ctx.alive) return;
        const windows = (schedule || {}).windows || [];
        const counts = listing.counts || {};
        count.textContent = `${fmt.num(windows.length, 0)} windows · ${fmt.num(counts.DRAINING || 0, 0)} draining · ${fmt.num(counts.DOWN || 0, 0)} down · ${fmt.num(counts.UP || 0, 0)} up`;
        B.replace(windowsBox, windowsTable(windows, scheduledModes(status || {})));
        // Names for the frameworks that answered inverse offers (ids if the list fails).
        const asked = listing.rows.some((m) => m.statuses.length);
        const names = asked ? await B.cache.frameworkNames.get().catch(() => new Map()) : new Map();
        if (!ctx.alive) return;
        const table = machinesTable(listing.rows, names);
        table.render(listing.rows, state.q || state.mode ? "No match." : "No machine: no agent is registered and nothing is scheduled.");
        // What the whole list says at a glance, whatever page is shown.
        if (!counts.DRAINING && !counts.DOWN && !state.q && !state.mode) table.el.prepend(h("caption", { class: "muted small" }, "Every machine is UP."));
        B.replace(machinesBox, table.el);
        B.replace(
          info,
          B.ui.pager({ page: state.page, size: PAGE_SIZE, total: listing.total }, (p) => {
            state.page = p;
            B.setQuery({ page: p ? p + 1 : "" });
            refresh.now();
          }),
        );
      },
      // Nothing on the change feed names maintenance; agents come and go (a DOWN machine's leave).
      { topics: ["agent"], pollMs: 5000, always: true, minGapMs: 2000, errorEl: error },
    );
  };
})(window.Butte);
