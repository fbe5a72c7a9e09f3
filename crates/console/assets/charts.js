// Small hand-written SVG line charts: no library, no CDN. A chart is drawn afresh from its
// series each time; it keeps no state of its own.
"use strict";

const CHART_COLOURS = ["#0b6e99", "#d9730d", "#2f9e44", "#9c36b5", "#c92a2a", "#5c7cfa", "#e8590c", "#087f5b"];

function formatFigure(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "-";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e9) return (value / 1e9).toFixed(1) + "G";
  if (magnitude >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (magnitude >= 1e3) return (value / 1e3).toFixed(1) + "k";
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

// Draws `series` ([{name, points: [[time_ms, value], ...]}]) into the <svg> `svg`, over the
// last `windowMs` milliseconds. Sets data-max (the highest value shown) and data-points (how
// many points are drawn) so that a test, or a curious reader, can see what the picture says.
function drawLineChart(svg, series, windowMs) {
  const width = 600, height = 180, left = 44, right = 8, top = 8, bottom = 20;
  const now = Date.now();
  const start = now - windowMs;
  let max = 0, drawn = 0;
  for (const one of series) for (const [, value] of one.points) max = Math.max(max, value);
  const ceiling = max > 0 ? max * 1.1 : 1;
  const x = (time) => left + ((time - start) / windowMs) * (width - left - right);
  const y = (value) => top + (1 - value / ceiling) * (height - top - bottom);
  const parts = [];
  parts.push(`<line class="axis" x1="${left}" y1="${height - bottom}" x2="${width - right}" y2="${height - bottom}"/>`);
  for (const fraction of [0, 0.5, 1]) {
    const value = ceiling * fraction;
    parts.push(`<line class="axis" x1="${left}" y1="${y(value)}" x2="${width - right}" y2="${y(value)}" stroke-dasharray="2,3"/>`);
    parts.push(`<text x="${left - 4}" y="${y(value) + 3}" text-anchor="end">${formatFigure(value)}</text>`);
  }
  parts.push(`<text x="${left}" y="${height - 4}">-${Math.round(windowMs / 1000)}s</text>`);
  parts.push(`<text x="${width - right}" y="${height - 4}" text-anchor="end">now</text>`);
  series.forEach((one, index) => {
    const points = one.points.filter(([time]) => time >= start);
    drawn += points.length;
    const colour = CHART_COLOURS[index % CHART_COLOURS.length];
    const coordinates = points.map(([time, value]) => `${x(time).toFixed(1)},${y(value).toFixed(1)}`).join(" ");
    parts.push(`<polyline data-series="${escapeHtml(one.name)}" stroke="${colour}" points="${coordinates}"/>`);
    // The newest point as a dot, so a series of one point is seen too.
    if (points.length) {
      const [time, value] = points[points.length - 1];
      parts.push(`<circle r="3" fill="${colour}" cx="${x(time).toFixed(1)}" cy="${y(value).toFixed(1)}"/>`);
    }
  });
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.innerHTML = parts.join("");
  svg.dataset.max = String(max);
  svg.dataset.points = String(drawn);
  const legend = svg.nextElementSibling;
  if (legend && legend.classList.contains("legend")) {
    legend.innerHTML = series
      .map((one, index) => {
        const last = one.points.length ? one.points[one.points.length - 1][1] : null;
        return `<span style="--swatch:${CHART_COLOURS[index % CHART_COLOURS.length]}">${escapeHtml(one.name)}: ${formatFigure(last)}</span>`;
      })
      .join("");
  }
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (character) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[character]);
}

// A table cell's small chart of one series: no axes, the newest value as text beside it.
function drawSparkline(svg, points, windowMs) {
  const width = 120, height = 24;
  const start = Date.now() - windowMs;
  const shown = points.filter(([time]) => time >= start);
  const max = shown.reduce((highest, [, value]) => Math.max(highest, value), 0);
  const ceiling = max > 0 ? max : 1;
  const coordinates = shown
    .map(([time, value]) => `${(((time - start) / windowMs) * width).toFixed(1)},${(height - 2 - (value / ceiling) * (height - 4)).toFixed(1)}`)
    .join(" ");
  const last = shown.length ? shown[shown.length - 1][1] : null;
  svg.setAttribute("viewBox", `0 0 ${width + 40} ${height}`);
  svg.innerHTML = `<polyline stroke="${CHART_COLOURS[0]}" points="${coordinates}"/><text x="${width + 4}" y="${height - 8}">${formatFigure(last)}</text>`;
  svg.dataset.max = String(max);
  svg.dataset.points = String(shown.length);
}
