// The dashboard's script (issue 15), run by the browser: it follows GET /dashboard/events and
// redraws the node cards, heat maps and time series; its buttons POST to this node's actions with
// the token typed in. Compiled by tsc beside dashboard.js's server (no bundler): the only import
// is of types. Every text from the server goes through textContent, never innerHTML.
import type { DashboardEvent, NodeView, PeerHeat, Sample } from '../dashboard-types.js';
import type { NodeStatus, PeerStatus } from '../../node/status.js';

type Health = 'ok' | 'warn' | 'down';
type Child = Node | string | null;

const series = new Map<string, Sample[]>();
let last: DashboardEvent | null = null;

function h(tag: string, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) if (c !== null) el.append(c);
  return el;
}

function byId(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`page lacks #${id}`);
  return el;
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

function ms(value: number | null): string {
  return value === null ? '–' : `${value < 1 ? value.toFixed(3) : value.toFixed(1)} ms`;
}

// ------------------------------------------------------------------------------- node cards

/** Roles by node name, from the last answers. */
let roles = new Map<string, string>();

/**
 * Among three or more nodes two secondaries show each other `connecting` for good: no data flows
 * between them, and that is no fault.
 */
function idleBetweenSecondaries(holder: string, p: PeerStatus): boolean {
  return p.state === 'connecting' && roles.get(holder) === 'secondary' && roles.get(p.node) === 'secondary';
}

/** Red: its admin port is gone, or the serving node's link to it is down or split. */
function healthOf(view: NodeView, self: NodeView | undefined): Health {
  if (view.reachable === false) return 'down';
  const seen = self?.state?.status.peers.find((p) => p.node === view.name);
  if (seen !== undefined && !idleBetweenSecondaries(self!.name, seen) && (!seen.connected || seen.state === 'split-brain')) return 'down';
  const status = view.state?.status;
  if (status === undefined) return 'warn';
  if (status.peers.some((p) => p.state === 'split-brain')) return 'down';
  const unsettled = status.peers.some((p) => p.state !== 'in-sync' && !idleBetweenSecondaries(view.name, p)) ||
    !status.quorum.ok || !status.storeHealth.trustedForDelta;
  return unsettled ? 'warn' : 'ok';
}

function adminText(view: NodeView, nowMs: number): Node {
  if (view.self) return h('span', {}, 'this page');
  if (view.reachable === null) return h('span', { class: 'muted' }, 'asking…');
  if (view.reachable) return h('span', {}, 'reachable');
  const seen = view.lastSeenMs === null ? 'never answered' : `last answer ${duration(nowMs - view.lastSeenMs)} ago`;
  return h('span', { class: 'bad' }, `UNREACHABLE: ${view.error ?? '?'} (${seen})`);
}

function linkText(holder: string, p: PeerStatus): Node {
  if (idleBetweenSecondaries(holder, p)) return h('div', { class: 'muted', 'data-link': p.node }, `${p.node}: both secondaries, no data between them`);
  const cls = p.state === 'in-sync' ? '' : p.state === 'resyncing' || p.state === 'connecting' ? 'warn' : 'bad';
  const rtt = p.rttMs === null ? '' : `, rtt ${ms(p.rttMs)}`;
  return h('div', { class: cls, 'data-link': p.node }, `${p.node}: ${p.connected ? '' : 'disconnected, '}${p.state}${rtt}`);
}

function resyncBlock(p: PeerStatus): HTMLElement | null {
  const s = p.sync;
  if (s === null) return null;
  const pct = s.totalBytes > 0 ? Math.floor((100 * s.doneBytes) / s.totalBytes) : 100;
  const eta = s.etaSeconds === null ? '' : `, ETA ${duration(s.etaSeconds * 1000)}`;
  const bar = h('progress', { max: String(Math.max(1, s.totalBytes)), value: String(s.doneBytes) });
  return h('div', { class: 'resync', 'data-resync': p.node },
    h('div', {}, `resync to ${p.node}: ${pct}% (${bytes(s.doneBytes)} of ${bytes(s.totalBytes)}), ${bytes(s.rateBytesPerSec)}/s${eta}${s.full ? ', full' : ''}`), bar);
}

function arbiterText(status: NodeStatus): string | null {
  const a = status.arbiter;
  if (a === null) return null;
  const reach = a.connected ? 'etcd connected' : `etcd UNREACHABLE${a.lastError === null ? '' : ` (${a.lastError})`}`;
  return `${reach}, ${a.state}, leader ${a.leader ?? 'none'}, epoch ${a.epoch ?? '–'}, electable ${a.electable.join(', ') || 'none'}${a.autoFailover ? '' : ', autoFailover off'}`;
}

function rows(status: NodeStatus): Array<[string, Child]> {
  const q = status.quorum;
  const e = status.exposure;
  const w = status.hostWrites;
  const health = status.storeHealth;
  const out: Array<[string, Child]> = [
    ['links', status.peers.length === 0 ? 'standalone' : h('div', {}, ...status.peers.map((p) => linkText(status.node, p)))],
    ['quorum', h('span', { class: q.ok ? '' : 'bad' }, `${q.ok ? 'ok' : 'LOST'}: reaches ${q.have} of ${q.need} needed (${q.policy}, ack ${status.ack})`)],
    ['exposure', e.unhardenedBytes === 0 ? 'none, everything hardened' : `${bytes(e.unhardenedBytes)} unhardened, oldest ${duration(e.oldestDirtyAgeMs)} (limit ${duration(e.maxDirtyAgeMs)})`],
    ['host writes', `${Math.round(w.iops)} IOPS, p50 ${ms(w.p50Ms)}, p99 ${ms(w.p99Ms)}`],
    ['NBD', `${status.nbd.uri}${status.nbd.readOnly ? ' (read-only)' : ''}, ${status.nbd.connections} connected`],
  ];
  const arbiter = arbiterText(status);
  if (arbiter !== null) out.push(['arbiter', arbiter]);
  if (!health.trustedForDelta || health.fsyncFailuresInRow > 0 || health.metadataFailuresInRow > 0) {
    out.push(['store', h('span', { class: 'warn' }, `${health.trustedForDelta ? '' : 'not trusted for a delta resync; '}fsync failures in a row ${health.fsyncFailuresInRow}, metadata ${health.metadataFailuresInRow}`)]);
  }
  return out;
}

function spark(values: Array<number | null>, second: Array<number | null> | null = null): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', '0 0 100 36');
  svg.setAttribute('preserveAspectRatio', 'none');
  const all = [...values, ...(second ?? [])].filter((v): v is number => v !== null);
  const max = Math.max(1e-9, ...all);
  const capacity = last?.historySamples ?? 120;
  for (const [line, cls] of [[values, ''], [second, 'second']] as const) {
    if (line === null || line.length === 0) continue;
    const points = line.map((v, i) => `${(100 * (capacity - line.length + i)) / Math.max(1, capacity - 1)},${35 - (34 * (v ?? 0)) / max}`);
    const poly = document.createElementNS(ns, 'polyline');
    poly.setAttribute('points', points.join(' '));
    if (cls !== '') poly.setAttribute('class', cls);
    svg.append(poly);
  }
  return svg;
}

function charts(name: string): HTMLElement {
  const s = series.get(name) ?? [];
  const lastOf = <T>(pick: (x: Sample) => T): T | undefined => (s.length === 0 ? undefined : pick(s[s.length - 1]!));
  const fig = (caption: string, svg: SVGSVGElement): HTMLElement => h('figure', {}, h('figcaption', {}, caption), svg);
  return h('div', { class: 'charts' },
    fig(`unhardened ${bytes(lastOf((x) => x.unhardenedBytes) ?? 0)}`, spark(s.map((x) => x.unhardenedBytes))),
    fig(`oldest dirty ${duration(lastOf((x) => x.oldestDirtyAgeMs) ?? 0)}`, spark(s.map((x) => x.oldestDirtyAgeMs))),
    fig(`write IOPS ${Math.round(lastOf((x) => x.iops) ?? 0)}`, spark(s.map((x) => x.iops))),
    fig('p50 / p99 ms', spark(s.map((x) => x.p50Ms), s.map((x) => x.p99Ms))));
}

function dashboardLink(view: NodeView): HTMLElement {
  const wildcard = view.admin.host === '0.0.0.0' || view.admin.host === '::';
  const host = wildcard ? location.hostname : view.admin.host;
  const url = `${location.protocol}//${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${view.admin.port}/`;
  return h('a', { href: url }, `open ${view.name}'s dashboard`);
}

function nodeCard(view: NodeView, self: NodeView | undefined, nowMs: number): HTMLElement {
  const status = view.state?.status ?? null;
  const head = h('header', {}, h('h3', {}, view.name),
    h('span', { class: 'role', 'data-role': status?.role ?? 'unknown' }, status?.role ?? 'unknown'),
    h('span', { class: 'muted' }, status === null ? '' : `epoch ${status.epoch}`));
  // A node that stopped answering keeps its last answer on the card, greyed: it is history.
  const stale = view.reachable === false;
  const list = h('dl', {}, h('dt', {}, 'admin'), h('dd', {}, adminText(view, nowMs)));
  if (stale && status !== null) list.append(h('dt', {}, ''), h('dd', { class: 'muted' }, 'its last answer, greyed:'));
  const old: Record<string, string> = stale ? { class: 'stale' } : {};
  for (const [k, v] of status === null ? [] : rows(status)) list.append(h('dt', old, k), h('dd', old, v));
  const card = h('article', { class: 'node', 'data-node': view.name, 'data-health': healthOf(view, self) }, head, list);
  for (const p of stale ? [] : status?.peers ?? []) card.append(resyncBlock(p) ?? '');
  const trend = charts(view.name);
  if (stale) trend.classList.add('stale');
  card.append(trend);
  if (!view.self) card.append(h('p', {}, dashboardLink(view)));
  return card;
}

// ------------------------------------------------------------------------------- heat maps

function heatBlock(holder: string, heat: PeerHeat): HTMLElement {
  const m = heat.map;
  const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
  const united = sum(m.united);
  const outOfSync = sum(m.outOfSync);
  const cells = h('div', { class: 'cells' });
  m.united.forEach((u, i) => {
    const firstRange = i * m.rangesPerCell;
    const tracks = Math.min(m.tracksPerCell, m.trackCount - i * m.tracksPerCell);
    // Any mark shows: a single track in a cell of thousands is what an operator looks for.
    const shade = u === 0 ? 0 : 0.25 + (0.75 * u) / Math.max(1, tracks);
    const attrs: Record<string, string> = {
      class: 'cell', style: `--u:${shade.toFixed(3)}`,
      title: `ranges ${firstRange}-${firstRange + m.rangesPerCell - 1}: ${u} may be only in ${heat.peer}'s RAM (current ${m.current[i]}, old ${m.old[i]}), ${m.outOfSync[i]} out of sync`,
    };
    if (u > 0) attrs['data-united'] = String(u);
    if ((m.outOfSync[i] ?? 0) > 0) attrs['data-out-of-sync'] = String(m.outOfSync[i]);
    cells.append(h('span', attrs));
  });
  return h('div', { class: 'heat', 'data-holder': holder, 'data-peer': heat.peer, 'data-united': String(united), 'data-out-of-sync': String(outOfSync) },
    h('h3', {}, `${holder}'s record of ${heat.peer}`),
    h('p', {}, `${united} tracks ${heat.peer} may hold only in RAM (current ${sum(m.current)}, old ${sum(m.old)}); ${outOfSync} out of sync`),
    cells);
}

// ------------------------------------------------------------------------------- updates

function absorb(event: DashboardEvent): void {
  for (const view of event.nodes) {
    const kept = event.full ? [] : series.get(view.name) ?? [];
    kept.push(...view.samples);
    series.set(view.name, kept.slice(-event.historySamples));
  }
  last = event;
}

function render(): void {
  if (last === null) return;
  const event = last;
  const self = event.nodes.find((n) => n.self);
  roles = new Map(event.nodes.flatMap((n) => (n.state === null ? [] : [[n.name, n.state.status.role] as [string, string]])));
  byId('volume').textContent = event.volume;
  byId('served-by').textContent = `served by node ${event.self}`;
  byId('action-node').textContent = `node ${event.self}`;
  byId('nodes').replaceChildren(...event.nodes.map((v) => nodeCard(v, self, event.atMs)));
  const heat = event.nodes.flatMap((v) => (v.reachable === false ? [] : (v.state?.heat ?? []).map((p) => heatBlock(v.name, p))));
  byId('heatmaps').replaceChildren(...(heat.length > 0 ? heat : [h('p', { class: 'muted' }, 'no peers: a standalone node keeps no record')]));
}

function setLive(state: 'live' | 'lost', text: string): void {
  const el = byId('live');
  el.dataset['live'] = state;
  el.textContent = text;
}

function follow(): void {
  const source = new EventSource('/dashboard/events');
  source.onopen = () => setLive('live', 'live');
  source.onmessage = (m: MessageEvent<string>) => {
    absorb(JSON.parse(m.data) as DashboardEvent);
    render();
  };
  // EventSource retries by itself (the server says after how long); the page says so meanwhile.
  source.onerror = () => setLive('lost', 'connection to this node lost: retrying');
}

// ------------------------------------------------------------------------------- actions

const consequences: Record<string, (node: string) => string> = {
  promote: (node) => `${node} becomes primary at a new epoch and serves writes at its NBD address; hosts must reconnect there. ` +
    'It refuses while it sees a connected primary. If another node is still primary out of its sight, this makes a split brain.',
  demote: (node) => `${node} drains its in-flight writes and becomes secondary: its export turns read-only and host writes fail ` +
    'with EPERM until a node is promoted.',
  verify: (node) => `${node} compares its data with its peers'. It reads the whole volume on both sides, which loads the disks and the link while it runs.`,
};

function confirmAction(action: string, node: string): Promise<boolean> {
  const dialog = byId('confirm') as HTMLDialogElement;
  byId('confirm-title').textContent = `${action[0]!.toUpperCase()}${action.slice(1)} node ${node}?`;
  byId('confirm-text').textContent = consequences[action]!(node);
  byId('confirm-ok').textContent = `${action[0]!.toUpperCase()}${action.slice(1)} ${node}`;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true }));
}

function showResult(kind: 'ok' | 'error' | '', text: string): void {
  const el = byId('action-result');
  el.className = kind;
  el.textContent = text;
}

async function act(action: string): Promise<void> {
  const node = last?.self ?? 'this node';
  if (!(await confirmAction(action, node))) return;
  const token = (byId('token') as HTMLInputElement).value.trim();
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== '') headers['authorization'] = `Bearer ${token}`;
  showResult('', `${action}: sent to ${node}…`);
  try {
    const res = await fetch(`/${action}`, { method: 'POST', headers, body: '{}' });
    const text = await res.text();
    let body: unknown = text;
    try { body = JSON.parse(text); } catch { /* not JSON: shown as it is */ }
    const error = typeof body === 'object' && body !== null && 'error' in body ? String((body as { error: unknown }).error) : text.trim();
    if (res.ok) showResult('ok', `${action} on ${node}: done ${typeof body === 'string' ? body : JSON.stringify(body)}`);
    else showResult('error', `${action} on ${node} refused: HTTP ${res.status}: ${error}`);
  } catch (err) {
    showResult('error', `${action} on ${node} failed: ${(err as Error).message}`);
  }
}

// Enter in the token field must not submit (and reload) the page.
byId('actions').addEventListener('submit', (e) => e.preventDefault());
for (const button of document.querySelectorAll<HTMLButtonElement>('button[data-action]')) {
  button.addEventListener('click', () => void act(button.dataset['action']!));
}
follow();
