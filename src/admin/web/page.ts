// The dashboard's page (issue 15): one HTML document with its style inline and one script
// (/dashboard.js, compiled from client.ts). Kept as strings in a module so tsc ships them in dist/
// with the rest of the node: no asset copy step, no bundler, nothing fetched from the network.
// Layout: a grid of node cards that collapses to one column on a phone (no horizontal scroll at
// 390 px: long values wrap, charts and heat maps scale to their column).

const STYLE = `
:root { color-scheme: light dark; --bg: #f6f7f9; --card: #fff; --fg: #1b1f24; --muted: #5b6470; --line: #d7dbe0;
  --ok: #1a7f37; --warn: #9a6700; --down: #cf222e; --heat: 9, 105, 218; --accent: #0969da; }
@media (prefers-color-scheme: dark) { :root { --bg: #0d1117; --card: #161b22; --fg: #e6edf3; --muted: #8d96a0; --line: #30363d;
  --ok: #3fb950; --warn: #d29922; --down: #f85149; --heat: 56, 139, 253; --accent: #58a6ff; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--fg); }
header.top { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px; padding: 12px 16px; border-bottom: 1px solid var(--line); background: var(--card); }
header.top h1 { font-size: 18px; margin: 0; }
header.top small { color: var(--muted); font-weight: normal; }
main { padding: 16px; display: grid; gap: 16px; max-width: 1400px; margin: 0 auto; }
h2 { font-size: 15px; margin: 0 0 8px; }
h3 { font-size: 14px; margin: 0; }
section { min-width: 0; }
.pill { border-radius: 999px; padding: 2px 10px; font-size: 12px; border: 1px solid var(--line); white-space: nowrap; }
.pill[data-live="live"] { color: var(--ok); border-color: var(--ok); }
.pill[data-live="lost"] { color: var(--down); border-color: var(--down); }
.nodes { display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(min(100%, 340px), 1fr)); }
.node { background: var(--card); border: 1px solid var(--line); border-left: 6px solid var(--ok); border-radius: 8px; padding: 12px; min-width: 0; }
.node[data-health="warn"] { border-left-color: var(--warn); }
.node[data-health="down"] { border-left-color: var(--down); background: color-mix(in srgb, var(--down) 8%, var(--card)); }
.node header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 10px; margin-bottom: 8px; }
.role { font-weight: 600; text-transform: uppercase; font-size: 12px; }
.muted { color: var(--muted); }
.bad { color: var(--down); font-weight: 600; }
.warn { color: var(--warn); font-weight: 600; }
dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2px 10px; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
.resync { margin: 8px 0 0; }
.stale { opacity: 0.55; }
.resync progress { width: 100%; height: 10px; }
.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 8px; margin-top: 10px; }
figure { margin: 0; min-width: 0; }
figcaption { font-size: 12px; color: var(--muted); overflow-wrap: anywhere; }
svg.spark { display: block; width: 100%; height: 36px; border-bottom: 1px solid var(--line); }
svg.spark polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; vector-effect: non-scaling-stroke; }
svg.spark polyline.second { stroke: var(--warn); }
.heatmaps { display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(min(100%, 340px), 1fr)); }
.heat { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px; min-width: 0; }
.heat p { margin: 4px 0 8px; overflow-wrap: anywhere; }
.cells { display: grid; grid-template-columns: repeat(16, minmax(0, 22px)); gap: 2px; }
.cell { aspect-ratio: 1; border-radius: 2px; background: rgba(var(--heat), calc(0.08 + 0.92 * var(--u, 0))); }
.cell[data-out-of-sync] { outline: 2px solid var(--down); outline-offset: -2px; }
.legend { font-size: 12px; color: var(--muted); }
.actions { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
.actions label { display: flex; flex-wrap: wrap; gap: 6px 10px; align-items: center; margin-bottom: 10px; }
.actions input { flex: 1 1 180px; min-width: 0; padding: 6px 8px; font: inherit; }
.buttons { display: flex; flex-wrap: wrap; gap: 8px; }
button { font: inherit; padding: 6px 14px; border-radius: 6px; border: 1px solid var(--line); background: var(--bg); color: var(--fg); cursor: pointer; }
button.danger { border-color: var(--down); color: var(--down); }
#action-result { min-height: 1.4em; margin: 10px 0 0; overflow-wrap: anywhere; }
#action-result.error { color: var(--down); }
#action-result.ok { color: var(--ok); }
dialog { max-width: min(92vw, 520px); border: 1px solid var(--line); border-radius: 8px; background: var(--card); color: var(--fg); }
dialog::backdrop { background: rgba(0, 0, 0, 0.4); }
a { color: var(--accent); }
`;

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>twinblock dashboard</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<style>${STYLE}</style>
</head>
<body>
<header class="top">
  <h1>twinblock <span id="volume"></span> <small id="served-by"></small></h1>
  <span id="live" class="pill" data-live="connecting">connecting</span>
</header>
<main>
  <section aria-label="nodes"><div id="nodes" class="nodes"></div></section>
  <section aria-label="heat maps">
    <h2>Ranges a peer may hold only in RAM</h2>
    <div id="heatmaps" class="heatmaps"></div>
    <p class="legend">One cell per group of ranges; darker: more tracks the peer may hold only in RAM (current OR old
      bitmap, cleared by its hardening notices); red outline: tracks it lacks (out of sync, resent on resync).</p>
  </section>
  <form class="actions" id="actions" aria-label="actions">
    <h2>Actions on <span id="action-node">this node</span></h2>
    <label>Admin token <input id="token" type="password" autocomplete="off" placeholder="without it the page is read-only"></label>
    <div class="buttons">
      <button type="button" data-action="promote">Promote</button>
      <button type="button" data-action="demote">Demote</button>
      <button type="button" data-action="verify">Verify</button>
    </div>
    <p id="action-result" role="status"></p>
  </form>
</main>
<dialog id="confirm">
  <form method="dialog">
    <h2 id="confirm-title"></h2>
    <p id="confirm-text"></p>
    <div class="buttons"><button value="cancel">Cancel</button><button value="ok" id="confirm-ok" class="danger">Confirm</button></div>
  </form>
</dialog>
<noscript>This page needs JavaScript; GET /status gives the same data as JSON.</noscript>
<script type="module" src="/dashboard.js"></script>
</body>
</html>
`;

/** Two squares, the mirrored pair. */
export const FAVICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">
<rect x="2" y="6" width="13" height="20" rx="2" fill="#0969da"/><rect x="17" y="6" width="13" height="20" rx="2" fill="#1a7f37"/>
</svg>
`;
