/* butte web UI: the maintenance page (#/maintenance). The master's schedule
 * (`/master/maintenance/schedule`: windows of machines with a start and a duration in
 * nanoseconds) and each scheduled machine's mode from `/master/maintenance/status`
 * (draining and down machines, with each framework's answer to its inverse offers). A
 * machine in no window is UP (docs/maintenance.md). Both answers are small whatever the
 * cluster's size, and the master narrows both to what the caller may see. */
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

  /** Machines with their mode, window and the frameworks' answers, from both documents. */
  function machinesOf(schedule, status) {
    const down = new Set((status.down_machines || []).map(machineKey));
    const answers = new Map((status.draining_machines || []).map((d) => [machineKey(d.id), d.statuses || []]));
    const out = new Map();
    (schedule.windows || []).forEach((window, index) => {
      for (const id of window.machine_ids || []) {
        const key = machineKey(id);
        // A machine in the schedule is DRAINING until it is brought DOWN.
        out.set(key, { id, window, index, mode: down.has(key) ? "DOWN" : "DRAINING", answers: answers.get(key) || [] });
      }
    });
    for (const id of status.down_machines || []) {
      const key = machineKey(id);
      if (!out.has(key)) out.set(key, { id, window: null, index: -1, mode: "DOWN", answers: [] });
    }
    return [...out.values()];
  }

  function windowsTable(windows, machines) {
    const modes = new Map(machines.map((m) => [machineKey(m.id), m.mode]));
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

  function machinesTable(machines, names) {
    const fwName = (id) => names.get(id)?.framework_info.name;
    const answerChips = (m) =>
      m.answers.length
        ? m.answers.map((a) => h("span", { class: "chip", dataset: { answer: a.status || "UNKNOWN" } }, B.ui.frameworkLink(a.framework_id?.value || "", fwName(a.framework_id?.value)), ` ${a.status || "UNKNOWN"}`))
        : h("span", { class: "muted" }, m.mode === "DOWN" ? "" : "no inverse offer yet");
    const table = new B.SortableTable(
      [
        { key: "hostname", label: "Hostname", value: (m) => m.id.hostname || "", render: (m) => m.id.hostname || h("span", { class: "muted" }, "–") },
        { key: "ip", label: "IP", value: (m) => m.id.ip || "", render: (m) => m.id.ip || h("span", { class: "muted" }, "–") },
        { key: "mode", label: "Mode", render: (m) => modeBadge(m.mode) },
        { key: "start", label: "Unavailable from", value: (m) => nanosToSeconds(m.window?.unavailability?.start), render: (m) => (m.window ? when(nanosToSeconds(m.window.unavailability?.start)) : "–") },
        { key: "answers", label: "Frameworks' answers", sortable: false, render: answerChips },
        {
          key: "agents",
          label: "",
          sortable: false,
          render: (m) => B.link(B.href("agents", null, { q: m.id.hostname || m.id.ip || "" }), "agents"),
        },
      ],
      { name: "maintenance-machines", rowData: (m) => ({ machine: machineName(m.id), mode: m.mode }) },
    );
    table.render(machines, "Every machine is UP.");
    return table.el;
  }

  B.pages.maintenance = (ctx) => {
    const error = B.ui.errorBox();
    const count = h("span", { class: "muted" });
    const windowsBox = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading…"));
    const machinesBox = h("div", { class: "table-wrap" });
    B.replace(
      ctx.el,
      B.ui.header("Maintenance", count),
      error,
      B.ui.card("Schedule", windowsBox),
      B.ui.card("Machines", machinesBox, h("p", { class: "muted small" }, "A machine in no window is UP. DRAINING machines are still offered, with their unavailability; DOWN machines have no agents.")),
    );
    ctx.live(
      async () => {
        const [schedule, status] = await Promise.all([B.get("/master/maintenance/schedule"), B.get("/master/maintenance/status")]);
        if (!ctx.alive) return;
        const machines = machinesOf(schedule || {}, status || {});
        const windows = (schedule || {}).windows || [];
        count.textContent = `${fmt.num(windows.length, 0)} windows · ${fmt.num(machines.filter((m) => m.mode === "DRAINING").length, 0)} draining · ${fmt.num(machines.filter((m) => m.mode === "DOWN").length, 0)} down`;
        B.replace(windowsBox, windowsTable(windows, machines));
        // Names for the frameworks that answered inverse offers (ids if the list fails).
        const asked = machines.some((m) => m.answers.length);
        const names = asked ? await B.cache.frameworkNames.get().catch(() => new Map()) : new Map();
        if (!ctx.alive) return;
        B.replace(machinesBox, machinesTable(machines, names));
      },
      // Nothing on the change feed names maintenance; agents leave when a machine goes DOWN.
      { topics: ["agent"], pollMs: 5000, always: true, minGapMs: 2000, errorEl: error },
    );
  };
})(window.Butte);
