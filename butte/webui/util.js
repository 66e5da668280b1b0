/* butte web UI: small helpers shared by every page (DOM building, formatting, an event bus,
 * sortable tables). Plain browser JavaScript, no build step; everything hangs off `Butte`. */
"use strict";

window.Butte = window.Butte || {};

(function (B) {
  /** Builds an element: h("a", {href: "#/x", class: "y"}, "text", child, [more]).
   * Strings become text nodes, so nothing from the server is ever parsed as HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") {
        el.addEventListener(key.slice(2), value);
      } else if (key === "style") {
        // Through the CSSOM: the page's CSP forbids style attributes, not this.
        el.style.cssText = String(value);
      } else if (key === "dataset") {
        Object.assign(el.dataset, value);
      } else if (value === true) {
        el.setAttribute(key, "");
      } else {
        el.setAttribute(key, String(value));
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      if (Array.isArray(child)) append(el, child);
      else if (child instanceof Node) el.appendChild(child);
      else el.appendChild(document.createTextNode(String(child)));
    }
  }

  /** Replaces every child of `el`. */
  function replace(el, ...children) {
    el.replaceChildren();
    append(el, children);
    return el;
  }

  // -- formatting ---------------------------------------------------------------------------

  const num = (value, digits) =>
    Number(value || 0).toLocaleString("en-US", { maximumFractionDigits: digits ?? 2 });

  /** Megabytes (Mesos' unit for mem and disk) in a readable unit. */
  function megabytes(mb) {
    const v = Number(mb || 0);
    if (v >= 1024 * 1024) return `${num(v / (1024 * 1024), 1)} TB`;
    if (v >= 1024) return `${num(v / 1024, 1)} GB`;
    return `${num(v, 0)} MB`;
  }

  function bytes(n) {
    const v = Number(n || 0);
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    let x = v;
    while (x >= 1024 && i < units.length - 1) {
      x /= 1024;
      i += 1;
    }
    return i === 0 ? `${v} B` : `${num(x, 1)} ${units[i]}`;
  }

  /** One resource amount in its natural unit. */
  function resource(name, value) {
    if (name === "mem" || name === "disk") return megabytes(value);
    if (typeof value === "string") return value;
    return num(value, 2);
  }

  const percent = (fraction) => `${num((fraction || 0) * 100, 1)}%`;

  function duration(seconds) {
    let s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const hh = Math.floor(s / 3600);
    s -= hh * 3600;
    const mm = Math.floor(s / 60);
    s -= mm * 60;
    if (d) return `${d}d ${hh}h`;
    if (hh) return `${hh}h ${mm}m`;
    if (mm) return `${mm}m ${s}s`;
    return `${s}s`;
  }

  /** "3m 2s ago" for an epoch-seconds timestamp. */
  function ago(epochSeconds) {
    if (!epochSeconds) return "";
    const delta = Date.now() / 1000 - epochSeconds;
    return delta < 1 ? "just now" : `${duration(delta)} ago`;
  }

  function datetime(epochSeconds) {
    if (!epochSeconds) return "";
    const d = new Date(epochSeconds * 1000);
    const pad = (n, w) => String(n).padStart(w || 2, "0");
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
      pad(d.getMilliseconds(), 3)
    );
  }

  /** A long id shortened for tables; the full id stays in the title. */
  function shortId(id) {
    const s = String(id || "");
    return s.length > 24 ? `${s.slice(0, 8)}…${s.slice(-12)}` : s;
  }

  /** `TaskTimeInfo`-style {nanoseconds} or plain seconds, as epoch seconds. */
  function seconds(t) {
    if (t && typeof t === "object" && "nanoseconds" in t) return Number(t.nanoseconds) / 1e9;
    return Number(t || 0);
  }

  // -- resources ----------------------------------------------------------------------------

  /** A v1 Resource list -> {name: value} of scalars (ranges/sets as text), like the legacy
   * endpoints' maps. */
  function resourceMap(list) {
    const out = {};
    for (const r of list || []) {
      if (r.type === "SCALAR" || r.scalar) {
        out[r.name] = (out[r.name] || 0) + Number(r.scalar?.value || 0);
      } else if (r.ranges) {
        const text = r.ranges.range.map((x) => `${x.begin}-${x.end}`).join(",");
        out[r.name] = out[r.name] ? `${out[r.name]},${text}` : `[${text}]`;
      } else if (r.set) {
        out[r.name] = `{${(r.set.item || []).join(",")}}`;
      }
    }
    return out;
  }

  // -- task states --------------------------------------------------------------------------

  const TASK_STATES = [
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_RUNNING",
    "TASK_KILLING",
    "TASK_FINISHED",
    "TASK_KILLED",
    "TASK_FAILED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
    "TASK_UNREACHABLE",
    "TASK_UNKNOWN",
  ];
  const ACTIVE_STATES = new Set(["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"]);
  const BAD_STATES = new Set([
    "TASK_FAILED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
    "TASK_UNREACHABLE",
  ]);

  function stateBadge(state) {
    const s = String(state || "");
    let tone = "neutral";
    if (s === "TASK_RUNNING") tone = "good";
    else if (ACTIVE_STATES.has(s)) tone = "busy";
    else if (BAD_STATES.has(s)) tone = "bad";
    else if (s === "TASK_FINISHED") tone = "done";
    return h("span", { class: `badge badge-${tone}`, title: s }, s.replace(/^TASK_/, ""));
  }

  // -- events -------------------------------------------------------------------------------

  /** A tiny publish/subscribe hub: `on` returns the function that unsubscribes. */
  class Bus {
    constructor() {
      this.handlers = new Map();
    }
    on(topic, fn) {
      if (!this.handlers.has(topic)) this.handlers.set(topic, new Set());
      this.handlers.get(topic).add(fn);
      return () => this.handlers.get(topic)?.delete(fn);
    }
    emit(topic, payload) {
      for (const fn of [...(this.handlers.get(topic) || [])]) {
        try {
          fn(payload);
        } catch (err) {
          console.error(`handler of ${topic} failed`, err);
        }
      }
    }
  }

  function debounce(fn, ms) {
    let timer = null;
    const wrapped = (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
    wrapped.cancel = () => clearTimeout(timer);
    return wrapped;
  }

  // -- tables -------------------------------------------------------------------------------

  /** A sortable table over rows already in memory.
   * columns: [{key, label, value(row) -> sortable, render(row) -> node|text, num: bool}]. */
  class SortableTable {
    constructor(columns, options) {
      this.columns = columns;
      this.options = options || {};
      this.sortKey = this.options.sortKey || columns[0].key;
      this.sortDesc = Boolean(this.options.sortDesc);
      this.rows = [];
      this.body = h("tbody");
      this.head = h("thead");
      this.el = h("table", { class: "data", "data-table": this.options.name || "" }, this.head, this.body);
      this.renderHead();
    }

    renderHead() {
      const cells = this.columns.map((col) => {
        const active = col.key === this.sortKey;
        const arrow = active ? (this.sortDesc ? " ▾" : " ▴") : "";
        return h(
          "th",
          { class: col.num ? "num" : "", "aria-sort": active ? (this.sortDesc ? "descending" : "ascending") : null },
          col.sortable === false
            ? col.label
            : h("button", { class: "sort", type: "button", onclick: () => this.sortBy(col.key) }, col.label + arrow),
        );
      });
      replace(this.head, h("tr", {}, cells));
    }

    sortBy(key) {
      if (this.sortKey === key) this.sortDesc = !this.sortDesc;
      else {
        this.sortKey = key;
        this.sortDesc = false;
      }
      this.renderHead();
      this.render(this.rows);
      this.options.onSort?.();
    }

    sorted(rows) {
      const col = this.columns.find((c) => c.key === this.sortKey);
      if (!col || col.sortable === false) return rows;
      const value = col.value || ((row) => row[col.key]);
      const dir = this.sortDesc ? -1 : 1;
      return [...rows].sort((a, b) => {
        const x = value(a);
        const y = value(b);
        if (typeof x === "number" && typeof y === "number") return (x - y) * dir;
        return String(x ?? "").localeCompare(String(y ?? "")) * dir;
      });
    }

    /** Shows `rows` (all of them, or the slice the caller paginates to). */
    render(rows, empty) {
      this.rows = rows;
      const shown = this.options.presorted ? rows : this.sorted(rows);
      const limit = this.options.pageSize;
      const page = limit ? shown.slice(this.options.offset || 0, (this.options.offset || 0) + limit) : shown;
      if (!page.length) {
        replace(this.body, h("tr", { class: "empty" }, h("td", { colspan: this.columns.length }, empty || "Nothing here yet.")));
        return;
      }
      replace(
        this.body,
        page.map((row) =>
          h(
            "tr",
            { dataset: this.options.rowData ? this.options.rowData(row) : {} },
            this.columns.map((col) => h("td", { class: col.num ? "num" : "" }, col.render ? col.render(row) : row[col.key])),
          ),
        ),
      );
    }
  }

  /** A "used of total" bar: used solid, offered hatched, the rest empty. */
  function usageBar(used, offered, total) {
    const u = total > 0 ? Math.min(1, used / total) : 0;
    const o = total > 0 ? Math.min(1 - u, (offered || 0) / total) : 0;
    return h(
      "div",
      { class: "bar", title: `${percent(u)} used, ${percent(o)} offered` },
      h("span", { class: "bar-used", style: `width:${(u * 100).toFixed(2)}%` }),
      h("span", { class: "bar-offered", style: `width:${(o * 100).toFixed(2)}%` }),
    );
  }

  function link(href, text, attrs) {
    return h("a", { href, ...(attrs || {}) }, text);
  }

  Object.assign(B, {
    h,
    replace,
    fmt: { num, megabytes, bytes, resource, percent, duration, ago, datetime, shortId, seconds },
    resourceMap,
    TASK_STATES,
    ACTIVE_STATES,
    BAD_STATES,
    stateBadge,
    Bus,
    bus: new Bus(),
    debounce,
    SortableTable,
    usageBar,
    link,
  });
})(window.Butte);
