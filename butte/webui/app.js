/* butte web UI: the shell. Hash routing (#/agents, #/tasks/<id> ...), mounting one page at a
 * time, the live-update helper every page uses, the status indicator and the banner. */
"use strict";

(function (B) {
  const { h } = B;

  /** The current route from location.hash: {name, params, query}. */
  function parseHash() {
    const raw = location.hash.replace(/^#/, "");
    const [path, search] = raw.split("?", 2);
    const parts = path.split("/").filter(Boolean).map(safeDecode);
    const query = new URLSearchParams(search || "");
    const [section, id] = parts;
    const names = {
      agents: id ? "agent" : "agents",
      frameworks: id ? "framework" : "frameworks",
      tasks: id ? "task" : "tasks",
      roles: "roles",
      offers: "offers",
    };
    if (!section) return { name: "overview", section: "overview", id: null, query };
    if (section === "maintenance" && parts.length === 1) return { name: "maintenance", section, id: null, query };
    // The daemons' own logs (Mesos' LOG links): #/log (the master's), #/agents/<agent>/log.
    if (section === "log" && parts.length === 1) return { name: "log", section: "overview", id: null, query };
    if (section === "agents" && parts.length === 3 && parts[2] === "log") return { name: "agentlog", section, id, query };
    // Mesos' address of an executor: #/agents/<agent>/frameworks/<framework>/executors/<id>.
    if (section === "agents" && parts.length === 6 && parts[2] === "frameworks" && parts[4] === "executors") {
      return { name: "executor", section, id, framework: parts[3], executor: parts[5], query };
    }
    // A sandbox directory of an agent: #/agents/<agent>/browse?path=<directory>.
    if (section === "agents" && parts.length === 3 && parts[2] === "browse") return { name: "browse", section, id, query };
    const name = names[section];
    if (!name || (id && !["agents", "frameworks", "tasks"].includes(section)) || parts.length > 2) {
      return { name: "notfound", section: null, id: null, query, path };
    }
    return { name, section, id: id || null, query };
  }

  function safeDecode(s) {
    try {
      return decodeURIComponent(s);
    } catch (err) {
      return s;
    }
  }

  /** A link target inside the app. */
  function href(section, id, query) {
    let out = `#/${section}`;
    if (id) out += `/${encodeURIComponent(id)}`;
    const q = query ? new URLSearchParams(query).toString() : "";
    return q ? `${out}?${q}` : out;
  }

  /** Changes the query of the current view without re-mounting it (no hashchange). */
  function setQuery(values) {
    const route = parseHash();
    const query = new URLSearchParams(route.query);
    for (const [key, value] of Object.entries(values)) {
      if (value === "" || value === null || value === undefined) query.delete(key);
      else query.set(key, String(value));
    }
    const base = location.hash.replace(/^#/, "").split("?")[0] || "/";
    const q = query.toString();
    history.replaceState(null, "", `#${base}${q ? `?${q}` : ""}`);
  }

  // -- page context -------------------------------------------------------------------------

  /** What a page gets: its element, route, and helpers whose effects end with the page. */
  class PageContext {
    constructor(el, route) {
      this.el = el;
      this.route = route;
      this.cleanups = [];
      this.alive = true;
    }

    onCleanup(fn) {
      this.cleanups.push(fn);
    }

    on(topic, fn) {
      this.onCleanup(B.bus.on(topic, fn));
    }

    dispose() {
      this.alive = false;
      for (const fn of this.cleanups.splice(0)) {
        try {
          fn();
        } catch (err) {
          console.error(err);
        }
      }
    }

    /** Runs `load` now, again (at most every `minGapMs`) when one of `topics` is published
     * by the event stream, and every `pollMs` while there is no stream (or always, with
     * `always`). Loads never overlap; a failing load shows its error in `errorEl`. A load
     * may return the `snapshot` freshness of the master's answer; one built before the last
     * change is asked for again when the master may rebuild it. Returns the throttled
     * trigger; its `now()` loads without waiting for the gap. */
    live(load, options) {
      const opts = { topics: [], pollMs: 5000, minGapMs: 1000, ...options };
      let running = false;
      let again = false;
      let urgent = false;
      let last = 0;
      let timer = null;
      let lastChange = 0;
      let settle = null;
      const run = async () => {
        if (!this.alive) return;
        if (running) {
          again = true;
          return;
        }
        running = true;
        last = Date.now();
        try {
          const snapshot = await load();
          if (opts.errorEl) opts.errorEl.hidden = true;
          // The master may have answered from a snapshot built before the change that
          // triggered this load: ask once more when it may build a new one.
          const builtAt = Date.now() - (snapshot?.age_seconds || 0) * 1000;
          if (snapshot?.rebuilt_in_seconds > 0 && lastChange > builtAt - 250) {
            clearTimeout(settle);
            settle = setTimeout(soon, snapshot.rebuilt_in_seconds * 1000 + 100);
          }
        } catch (err) {
          if (opts.errorEl && this.alive) {
            B.replace(opts.errorEl, errorText(err));
            opts.errorEl.hidden = false;
          }
        } finally {
          running = false;
        }
        if (again) {
          again = false;
          if (urgent) {
            urgent = false;
            run();
          } else soon();
        }
      };
      const soon = () => {
        if (timer) return;
        const gap = typeof opts.minGapMs === "function" ? opts.minGapMs() : opts.minGapMs;
        const wait = Math.max(0, gap - (Date.now() - last));
        timer = setTimeout(() => {
          timer = null;
          run();
        }, wait);
      };
      for (const topic of opts.topics) this.on(topic, (payload) => {
        if (!opts.filter || opts.filter(topic, payload)) {
          lastChange = Date.now();
          soon();
        }
      });
      this.on("resync", soon);
      this.on("reconnected", soon);
      const poll = setInterval(() => {
        if (document.hidden) return;
        if (opts.always || B.stream.polling) soon();
      }, opts.pollMs);
      this.onCleanup(() => {
        clearInterval(poll);
        clearTimeout(timer);
        clearTimeout(settle);
      });
      run();
      // What the user asked for (a search, another page) runs at once, not after the gap.
      soon.now = () => {
        clearTimeout(timer);
        timer = null;
        if (running) {
          again = true;
          urgent = true;
        } else run();
      };
      return soon;
    }
  }

  function errorText(err) {
    if (err instanceof B.ApiError) return `The master answered ${err.status}: ${err.message}`;
    return String(err?.message || err);
  }

  // -- shell --------------------------------------------------------------------------------

  let current = null;

  function mount() {
    const route = parseHash();
    if (current) current.dispose();
    const content = document.getElementById("content");
    content.replaceChildren();
    current = new PageContext(content, route);
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.dataset.route === route.section);
    }
    const page = B.pages[route.name] || B.pages.notfound;
    try {
      page(current);
    } catch (err) {
      console.error(err);
      B.replace(content, h("div", { class: "error" }, `This page failed: ${errorText(err)}`));
    }
  }

  function showLive({ mode, why }) {
    const el = document.getElementById("live-status");
    const labels = { stream: "live", polling: "polling", offline: "offline", connecting: "connecting" };
    el.textContent = labels[mode] || mode;
    el.className = `live live-${mode}`;
    el.dataset.mode = mode;
    const titles = {
      stream: "Updates arrive on the master's change feed",
      polling: "Updates are polled every few seconds",
      offline: "The master does not answer",
    };
    el.title = why || titles[mode] || "";
  }

  function banner(text, tone) {
    const el = document.getElementById("banner");
    if (!text) {
      el.hidden = true;
      return;
    }
    el.className = `banner banner-${tone || "warn"}`;
    el.textContent = text;
    el.hidden = false;
  }

  function start() {
    document.getElementById("master-label").textContent = location.host;
    B.bus.on("live", showLive);
    B.bus.on("disconnected", ({ error }) => {
      showLive({ mode: "offline", why: error });
      banner(`Lost contact with the master at ${location.host}; retrying and looking for the leader…`);
    });
    B.bus.on("reconnected", () => {
      banner("");
      // A stream that survived the outage is still delivering; otherwise start one.
      showLive({ mode: B.stream.mode, why: B.stream.why });
      B.stream.start();
      B.metrics.poll();
    });
    B.bus.on("following", ({ address }) => banner(`Following the leading master to ${address}…`, "info"));
    B.bus.on("no-leader", () => banner("This master is not the leader and no leader is elected yet.", "warn"));
    B.bus.on("leader-loop", ({ address }) =>
      banner(`Masters keep pointing elsewhere (last: ${address}); staying here.`, "warn"),
    );
    window.addEventListener("hashchange", mount);
    // The page's own data is asked for first: the master answers in order of arrival. Pages
    // other than the overview need the metrics only to check that this master leads, so at
    // 100k tasks (0.1 s of the master for a snapshot) they come a little later.
    mount();
    B.stream.start();
    if (parseHash().name === "overview") B.metrics.poll();
    else setTimeout(() => B.metrics.poll(), 1500);
  }

  Object.assign(B, { parseHash, href, setQuery, PageContext, errorText });
  B.pages = B.pages || {};
  B.pages.notfound = (ctx) => {
    B.replace(
      ctx.el,
      h("h1", {}, "Not found"),
      h("p", {}, "There is no such page. ", B.link("#/", "Back to the overview"), "."),
    );
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(window.Butte);
