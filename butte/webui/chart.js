/* butte web UI: the utilisation chart of the overview, drawn on a <canvas> from the samples
 * the master keeps (the last hour, one every 5 s; `B.history`, /master/ui/utilisation). */
"use strict";

(function (B) {
  const SERIES = [
    { name: "cpus", label: "CPUs", color: "#2f6fdb", index: 1 },
    { name: "mem", label: "Memory", color: "#1f9d6b", index: 4 },
    { name: "disk", label: "Disk", color: "#d9822b", index: 7 },
    { name: "gpus", label: "GPUs", color: "#8a4fd6", index: 10 },
    // What the allocator has handed out: held by tasks plus offered and not yet answered.
    { name: "cpus-offered", label: "CPUs used + offered", color: "#2f6fdb", index: 1, offered: true, dash: [5, 4] },
  ];
  const WINDOW_MS = 3600 * 1000;
  // Samples further apart than this are not joined: the page was closed or the master down.
  const GAP_MS = 30 * 1000;

  function cssVar(el, name, fallback) {
    const v = getComputedStyle(el).getPropertyValue(name).trim();
    return v || fallback;
  }

  /** Used / total of one series in one sample (null when the cluster has none of it). */
  function fraction(sample, series) {
    const used = sample[series.index] + (series.offered ? sample[series.index + 2] : 0);
    const total = sample[series.index + 1];
    return total > 0 ? Math.min(1, used / total) : null;
  }

  /** Draws the chart into `canvas` (sized to its box) from `samples`. */
  function draw(canvas, samples) {
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600;
    const height = canvas.clientHeight || 220;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const pad = { left: 44, right: 12, top: 10, bottom: 24 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const now = Date.now();
    const x = (t) => pad.left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * plotW;
    const y = (f) => pad.top + (1 - f) * plotH;

    const grid = cssVar(canvas, "--grid", "#e3e6eb");
    const muted = cssVar(canvas, "--muted", "#6b7280");
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = grid;
    ctx.fillStyle = muted;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      ctx.beginPath();
      ctx.moveTo(pad.left, Math.round(y(f)) + 0.5);
      ctx.lineTo(width - pad.right, Math.round(y(f)) + 0.5);
      ctx.stroke();
      ctx.fillText(`${f * 100}%`, pad.left - 6, y(f));
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let minutes = 60; minutes >= 0; minutes -= 10) {
      const t = now - minutes * 60000;
      ctx.fillText(minutes ? `-${minutes}m` : "now", x(t), height - pad.bottom + 6);
    }

    for (const series of SERIES) {
      if (!samples.some((s) => fraction(s, series) !== null)) continue;
      drawSeries(ctx, samples, series, x, y);
    }
  }

  function drawSeries(ctx, samples, series, x, y) {
    ctx.strokeStyle = series.color;
    ctx.fillStyle = series.color;
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.setLineDash(series.dash || []);
    ctx.beginPath();
    let previous = null;
    let lonely = null;
    for (const sample of samples) {
      const f = fraction(sample, series);
      if (f === null) {
        previous = null;
        continue;
      }
      const px = x(sample[0]);
      const py = y(f);
      if (previous && sample[0] - previous <= GAP_MS) {
        ctx.lineTo(px, py);
        lonely = null;
      } else {
        ctx.moveTo(px, py);
        lonely = [px, py];
      }
      previous = sample[0];
    }
    ctx.stroke();
    ctx.setLineDash([]);
    // A series with a single point so far still shows where it is.
    if (lonely) {
      ctx.beginPath();
      ctx.arc(lonely[0], lonely[1], 3, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  /** The chart and its legend as one element: drawn from the master's hour of samples as
   * soon as they arrive, then with the new ones after every metrics poll, and on resize;
   * `dispose()` stops that. */
  function utilisationChart() {
    const canvas = B.h("canvas", { id: "utilisation-chart", class: "chart", role: "img" });
    const legend = B.h("div", { class: "legend" });
    const el = B.h("div", { class: "chart-box" }, canvas, legend);
    let alive = true;

    function refresh() {
      if (!alive) return;
      const samples = B.history.samples;
      draw(canvas, samples);
      canvas.dataset.samples = String(samples.length);
      const last = samples[samples.length - 1];
      const items = SERIES.filter((s) => last && fraction(last, s) !== null).map((s) =>
        B.h(
          "span",
          { class: "legend-item" },
          B.h("span", { class: s.dash ? "swatch dashed" : "swatch", style: `background:${s.color}` }),
          `${s.label} ${B.fmt.percent(fraction(last, s))}`,
        ),
      );
      canvas.setAttribute(
        "aria-label",
        `Utilisation over the last hour: ${items.map((i) => i.textContent).join(", ") || "no data yet"}`,
      );
      B.replace(legend, items.length ? items : B.h("span", { class: "muted" }, "Collecting samples…"));
    }

    const load = () =>
      B.history
        .load()
        .then(() => requestAnimationFrame(refresh))
        .catch(() => {});
    const off = B.bus.on("metrics", load);
    const observer = new ResizeObserver(() => refresh());
    observer.observe(canvas);
    load();
    requestAnimationFrame(refresh);
    el.dispose = () => {
      alive = false;
      off();
      observer.disconnect();
    };
    return el;
  }

  B.chart = { draw, utilisationChart, SERIES };
})(window.Butte);
