/*
 * The live view's page: one HTML document, one style sheet and one script, all served by the
 * controller itself (the Content-Security-Policy allows nothing else: no CDN, no inline code).
 * The script polls `api/state` (src/controller/view/model.ts, ViewState) and renders it with
 * plain DOM calls; every name from the cluster goes in as text, never as markup. Relative URLs,
 * so that the page also works behind a path prefix (a proxy). The `data-*` attributes are for
 * the browser test (test/lab/live-view.test.ts) and for anyone scripting the page.
 */

export const VIEW_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>static-egress live view</title>
<link rel="stylesheet" href="view.css">
</head>
<body>
<header><h1>static-egress</h1><span id="updated" class="muted">connecting…</span></header>
<main>
<section><h2>Gateways</h2><div id="gateways"></div></section>
<section><h2>Recent failovers</h2>
<p class="muted">instance health changes in the gateways' status, as this controller saw them</p>
<ol id="failovers"></ol></section>
<section class="wide"><h2>Traffic per egress IP</h2><div id="traffic"></div></section>
<section class="wide"><h2>Policies</h2><div id="policies"></div></section>
<section class="wide"><h2>Pods</h2><div id="pods"></div></section>
</main>
<script src="view.js"></script>
</body>
</html>
`;

export const VIEW_CSS = `body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d232a; background: #f6f7f9; }
header { display: flex; gap: 1em; align-items: baseline; padding: 0.6em 1.2em; background: #1d232a; color: #fff; }
header h1 { font-size: 1.2em; margin: 0; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1em; padding: 1em; }
p.muted { margin: 0 0 0.4em; font-size: 0.85em; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 0.6em 1em; overflow-x: auto; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 1em; margin: 0.2em 0 0.6em; }
h3 { font-size: 0.95em; margin: 0.6em 0 0.3em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.2em 0.6em 0.2em 0; border-bottom: 1px solid #eef0f3; white-space: nowrap; }
th { font-weight: 600; color: #56606b; }
.badge { display: inline-block; padding: 0 0.5em; border-radius: 1em; font-size: 0.85em; background: #e4e7eb; }
.health-Up, .ok { background: #c9f0d3; color: #0b5a21; }
.health-Down, .bad { background: #ffd2cc; color: #8a1304; }
.health-PartiallyDown { background: #ffe6b3; color: #7a4a00; }
.health-Draining, .health-Provisioning { background: #d6e6ff; color: #0b3d8a; }
.muted, .empty { color: #7a848f; }
header .muted { color: #b8c0c8; }
.error { color: #b3261e; }
header .error { color: #ffb4ab; }
ol { padding-left: 1.4em; margin: 0; }
li.to-Down { color: #8a1304; }
li.to-Up { color: #0b5a21; }
svg.chart { width: 100%; height: auto; background: #fbfcfd; border: 1px solid #eef0f3; }
.legend { list-style: none; padding: 0; }
.swatch { margin-right: 0.4em; vertical-align: middle; }
`;

// Plain ES2020 for the browser, kept out of template-literal syntax (no backquotes, no dollar-brace).
export const VIEW_JS = `"use strict";
(function () {
  var POLL_MS = 2000;
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  var SVGNS = "http://www.w3.org/2000/svg";
  function $(id) { return document.getElementById(id); }
  function el(tag, attrs) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, String(attrs[k]));
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      e.append(c instanceof Node ? c : document.createTextNode(c === undefined || c === null ? "" : String(c)));
    }
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function ago(iso, now) {
    if (!iso) return "";
    var s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
    return s < 120 ? s + " s ago" : s < 7200 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  }
  function rate(b) {
    if (b === null || b === undefined) return "–";
    var units = ["B/s", "kB/s", "MB/s", "GB/s"], i = 0;
    while (b >= 1000 && i < units.length - 1) { b /= 1000; i++; }
    return (i ? b.toFixed(1) : String(Math.round(b))) + " " + units[i];
  }
  function badge(text, cls) { return el("span", { class: "badge " + cls }, text); }
  function cond(c) {
    if (!c) return badge("no status yet", "");
    return badge(c.status === "True" ? "Ready" : c.reason || c.status, c.status === "True" ? "ok" : c.status === "False" ? "bad" : "");
  }
  function table(head, rows) {
    var tr = el("tr", {});
    head.forEach(function (h) { tr.append(el("th", {}, h)); });
    var body = el("tbody", {});
    rows.forEach(function (r) { body.append(r); });
    return el("table", {}, el("thead", {}, tr), body);
  }
  function fill(id, nodes, empty) {
    $(id).replaceChildren.apply($(id), nodes.length ? nodes : [el("p", { class: "empty" }, empty)]);
  }

  function gateways(state, now) {
    fill("gateways", state.gateways.map(function (g) {
      return el("div", { "data-gateway": g.name },
        el("h3", {}, g.name + " ", cond(g.ready)),
        g.invalid ? el("p", { class: "error" }, g.invalid) : "",
        table(["instance", "address", "egress IPs", "health", "since", "seen down by"], g.instances.map(function (i) {
          return el("tr", { "data-instance": i.key, "data-health": i.health },
            el("td", {}, i.name), el("td", {}, i.address), el("td", {}, i.egressIPs.join(", ")),
            el("td", {}, badge(i.health, "health-" + i.health)),
            el("td", { title: i.since || "" }, ago(i.since, now)),
            el("td", {}, i.seenDownBy.join(", ") || "–"));
        })));
    }), "no EgressGateways");
  }

  function failovers(state, now) {
    fill("failovers", state.failovers.map(function (f) {
      return el("li", { "data-instance": f.instance, "data-to": f.to, "data-at": f.at, class: "to-" + f.to, title: f.at },
        new Date(f.at).toLocaleTimeString() + "  " + f.instance + ": " + (f.from || "first seen") + " → " + f.to +
        " (" + ago(f.at, now) + ")");
    }), "no instance health change since this controller started");
  }

  function traffic(state, now) {
    var t = state.traffic, W = 1000, H = 220, L = 64, B = 20;
    if (!t.series.length) return fill("traffic", [], "no traffic reported yet (gateway agents write it every --traffic-report-seconds)");
    // From the oldest point kept (at most the window, at least a minute): a young history fills the chart.
    var from = now - 60000, max = 1;
    t.series.forEach(function (s) {
      s.points.forEach(function (p) { if (p[1] > max) max = p[1]; if (p[0] < from) from = p[0]; });
    });
    from = Math.max(from, now - t.windowSeconds * 1000);
    var chart = svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "bytes per second per egress IP" });
    var x = function (ms) { return L + ((ms - from) / (now - from)) * (W - L - 8); };
    var y = function (v) { return 8 + (1 - v / max) * (H - B - 8); };
    chart.append(svg("line", { x1: L, y1: y(0), x2: W - 8, y2: y(0), stroke: "#c4cad1" }));
    var label = function (text, attrs) {
      var e = svg("text", attrs);
      e.setAttribute("font-size", "11");
      e.setAttribute("fill", "#56606b");
      e.textContent = text;
      return e;
    };
    chart.append(label(rate(max), { x: 4, y: 16 }), label("0", { x: 4, y: y(0) }));
    var span = Math.round((now - from) / 1000);
    chart.append(label("-" + (span < 120 ? span + " s" : Math.round(span / 60) + " min"), { x: L, y: H - 4 }), label("now", { x: W - 34, y: H - 4 }));
    var legend = el("ul", { class: "legend" });
    t.series.forEach(function (s, n) {
      var color = COLORS[n % COLORS.length];
      var pts = s.points.filter(function (p) { return p[0] >= from; });
      chart.append(svg("polyline", {
        points: pts.map(function (p) { return x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join(" "),
        fill: "none", stroke: color, "stroke-width": 2
      }));
      var last = pts.length ? pts[pts.length - 1][1] : 0;
      var swatch = svg("svg", { class: "swatch", width: 10, height: 10 });
      swatch.append(svg("rect", { width: 10, height: 10, fill: color }));
      legend.append(el("li", { "data-egress-ip": s.egressIPs.join(","), "data-instance": s.instance, "data-rate": last },
        swatch, (s.egressIPs.join(" + ") || "?") + "  " + s.instance + "  " + s.policy + ": " + rate(last)));
    });
    fill("traffic", [chart, legend]);
  }

  function policies(state) {
    fill("policies", state.policies.length ? [table(["policy", "gateway", "egress IPs", "ready", "pods", "traffic"], state.policies.map(function (p) {
      return el("tr", { "data-policy": p.resource },
        el("td", { title: p.invalid || "" }, p.resource), el("td", {}, p.gateway), el("td", {}, p.egressIPs.join(", ")),
        el("td", { title: p.ready ? p.ready.message : "" }, p.invalid ? badge("Invalid", "bad") : cond(p.ready)),
        el("td", {}, (p.programmedPods === null ? "–" : p.programmedPods) + " / " + (p.selectedPods === null ? "–" : p.selectedPods)),
        el("td", {}, rate(p.bytesPerSecond)));
    }))] : [], "no policies");
  }

  function pods(state) {
    var rows = state.pods.map(function (p) {
      var egress = p.path === "gateway" ? p.egressIPs.join(", ") : p.path === "dropped" ? "dropped (fail-closed)" : "node IP (fallback)";
      return el("tr", { "data-pod": p.pod, "data-egress-ip": p.egressIPs.join(","), "data-path": p.path },
        el("td", {}, p.pod), el("td", {}, p.node + (p.nodeReporting ? "" : " (not reporting)")), el("td", {}, p.ip),
        el("td", {}, p.policy), el("td", {}, p.instance || "–"),
        el("td", {}, p.path === "gateway" ? egress : badge(egress, "bad")));
    });
    fill("pods", rows.length ? [table(["pod", "node", "pod IP", "policy", "instance", "egress IP"], rows)].concat(
      state.podsTruncated ? [el("p", { class: "muted" }, "only the first " + rows.length + " are listed")] : []) : [],
      "no selected pods");
  }

  function status(text, error) {
    var u = $("updated");
    u.textContent = text;
    u.className = error ? "error" : "muted";
  }

  function poll() {
    fetch("api/state", { cache: "no-store" })
      .then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
          return body;
        });
      })
      .then(function (state) {
        var now = Date.parse(state.generatedAt);
        gateways(state, now); failovers(state, now); traffic(state, now); policies(state); pods(state);
        document.body.setAttribute("data-generated-at", state.generatedAt);
        status("updated " + new Date(now).toLocaleTimeString(), false);
      })
      .catch(function (e) { status("cannot read the controller's state: " + e.message, true); })
      .finally(function () { setTimeout(poll, POLL_MS); });
  }
  poll();
})();
`;
