/* butte web UI: an agent's reservations and persistent volumes, for the agent page (pages.js).
 * The rows come from /master/ui/agent-resources, the same ones `butte reservations` and
 * `butte volumes` print; every value goes into the page as text (B.h), never as HTML. */
"use strict";

(function (B) {
  const { h, fmt } = B;

  const stackText = (roles) => (roles || []).join(" › ");

  function labelChips(labels) {
    const pairs = Object.entries(labels || {});
    if (!pairs.length) return h("span", { class: "muted" }, "–");
    return pairs.map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`));
  }

  /** Who holds a reservation or volume: links to the tasks, plain text for executors. */
  function holders(names) {
    if (!names || !names.length) return h("span", { class: "muted" }, "–");
    const out = [];
    for (const name of names) {
      if (out.length) out.push(", ");
      const isTask = !name.startsWith("executor ") && name !== "(hidden)";
      out.push(isTask ? B.link(B.href("tasks", name), name, { title: name }) : name);
    }
    return h("span", {}, out);
  }

  function reservationsTable(rows) {
    const table = new B.SortableTable(
      [
        { key: "role", label: "Role", value: (r) => stackText(r.roles), render: (r) => h("strong", { title: stackText(r.roles) }, stackText(r.roles)) },
        { key: "type", label: "Type", render: (r) => h("span", { class: `badge badge-${r.type === "STATIC" ? "neutral" : "done"}` }, r.type) },
        { key: "principal", label: "Principal", value: (r) => r.principal || "", render: (r) => r.principal || h("span", { class: "muted" }, "–") },
        { key: "labels", label: "Labels", sortable: false, render: (r) => labelChips(r.labels) },
        { key: "text", label: "Resources", render: (r) => h("code", {}, r.text) },
        { key: "used", label: "Used", render: (r) => (r.used ? h("code", {}, r.used) : h("span", { class: "muted" }, "no")) },
        { key: "used_by", label: "Used by", sortable: false, render: (r) => holders(r.used_by) },
      ],
      { name: "reservations", rowData: (r) => ({ role: r.role }) },
    );
    table.render(rows, "Nothing on this agent is reserved.");
    return table;
  }

  function volumesTable(rows) {
    const table = new B.SortableTable(
      [
        { key: "id", label: "Volume", render: (v) => h("code", { title: v.id }, v.id) },
        { key: "role", label: "Role", value: (v) => stackText(v.roles), render: (v) => stackText(v.roles) },
        { key: "size", label: "Size", num: true, render: (v) => fmt.megabytes(v.size) },
        { key: "source", label: "Disk source", render: (v) => (v.root ? `${v.source} ${v.root}` : v.source) },
        { key: "container_path", label: "Container path", render: (v) => h("code", {}, v.container_path || "") },
        { key: "mode", label: "Mode" },
        { key: "principal", label: "Created by", value: (v) => v.principal || "", render: (v) => v.principal || h("span", { class: "muted" }, "–") },
        {
          key: "used_by",
          label: "In use",
          value: (v) => (v.used_by || []).length,
          render: (v) => ((v.used_by || []).length ? holders(v.used_by) : h("span", { class: "badge badge-neutral" }, "free")),
        },
      ],
      { name: "volumes", rowData: (v) => ({ volume: v.id }) },
    );
    table.render(rows, "No persistent volumes on this agent.");
    return table;
  }

  /** The agent page's two cards for a /master/ui/agent-resources answer. */
  function cards(doc) {
    const { card } = B.ui;
    return [
      card("Reservations", h("div", { class: "table-wrap" }, reservationsTable(doc.reservations || []).el)),
      card("Persistent volumes", h("div", { class: "table-wrap" }, volumesTable(doc.volumes || []).el)),
    ];
  }

  B.reservations = { cards, fetch: (agentId) => B.get(`/master/ui/agent-resources?agent_id=${encodeURIComponent(agentId)}`) };
})(window.Butte);
