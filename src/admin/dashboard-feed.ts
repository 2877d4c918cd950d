// The dashboard's view of every node of the volume (issue 15): this node's state read directly,
// every other node's fetched from its admin port (GET /dashboard/state), and a short history of
// samples per node for the page's time series. The page talks to one node only: no cross-origin
// requests, and a node that goes away shows as unreachable with its last answer instead of
// breaking the page. Fetches run only while a page is open (dashboard.ts starts the ticks), one
// at a time per node, each bounded by a timeout.
import { formatAddress, type Address } from '../config/config.js';
import { clientText } from '../log.js';
import { adminRequest } from './http-client.js';
import type { DashboardEvent, DashboardState, NodeView, Sample } from './dashboard-types.js';

export interface FeedNode {
  name: string;
  admin: Address;
}

export interface DashboardFeedOptions {
  volume: string;
  self: string;
  /** Every node of the volume, this one included, in config order. */
  nodes: readonly FeedNode[];
  getState: () => DashboardState;
  intervalMs: number;
  /** A node whose admin port has not answered within this is unreachable. */
  fetchTimeoutMs: number;
  /** The volume's CA when the nodes serve HTTPS (issue 14: `tls`); null: plain HTTP. */
  ca?: Buffer | null;
  historySamples: number;
}

/** A /dashboard/state answer bigger than this is not a node's (64 heat cells per peer are a few KiB). */
const MAX_STATE_BYTES = 4 * 1024 * 1024;

interface Tracked {
  view: Omit<NodeView, 'samples'>;
  /** Where its state is fetched; null for this node. */
  url: string | null;
  history: Sample[];
  /** Samples taken since the last event. */
  fresh: Sample[];
  inFlight: boolean;
}

/** The admin address to dial: a wildcard listener is reached on loopback. */
function dialAddress(admin: Address): Address {
  if (admin.host === '0.0.0.0') return { host: '127.0.0.1', port: admin.port };
  if (admin.host === '::') return { host: '::1', port: admin.port };
  return admin;
}

function sampleOf(state: DashboardState, atMs: number): Sample {
  const s = state.status;
  return {
    atMs, unhardenedBytes: s.exposure.unhardenedBytes, oldestDirtyAgeMs: s.exposure.oldestDirtyAgeMs,
    iops: s.hostWrites.iops, p50Ms: s.hostWrites.p50Ms, p99Ms: s.hostWrites.p99Ms,
  };
}

/** Enough of the shape to render; a node of another version or another service fails here. */
function checkState(body: unknown, expectedNode: string): DashboardState {
  const b = body as Partial<DashboardState> | null;
  const status = b?.status as Partial<DashboardState['status']> | undefined;
  if (typeof status !== 'object' || status === null || !Array.isArray(b?.heat) || typeof status.exposure !== 'object' || typeof status.hostWrites !== 'object') {
    throw new Error('its /dashboard/state is not a twinblock node\'s');
  }
  if (status.node !== expectedNode) throw new Error(`it answers as node ${clientText(String(status.node), 40)}, not ${expectedNode}`);
  return b as DashboardState;
}

export class DashboardFeed {
  private readonly tracked: Tracked[];

  constructor(private readonly opts: DashboardFeedOptions) {
    this.tracked = opts.nodes.map((n) => ({
      view: { name: n.name, self: n.name === opts.self, admin: { host: n.admin.host, port: n.admin.port }, reachable: n.name === opts.self ? true : null, error: null, lastSeenMs: null, state: null },
      url: n.name === opts.self ? null : `${(opts.ca ?? null) === null ? 'http' : 'https'}://${formatAddress(dialAddress(n.admin))}/dashboard/state`,
      history: [],
      fresh: [],
      inFlight: false,
    }));
  }

  /** Reads this node, asks every other node that is not still answering, and returns the event. */
  tick(nowMs: number): DashboardEvent {
    for (const t of this.tracked) {
      if (t.url === null) this.accept(t, this.opts.getState(), nowMs);
      else if (!t.inFlight) this.ask(t, t.url);
    }
    const event = this.event(nowMs, false);
    for (const t of this.tracked) t.fresh = [];
    return event;
  }

  /** The first event of a stream: every node's whole history. */
  fullEvent(nowMs: number): DashboardEvent {
    return this.event(nowMs, true);
  }

  private event(nowMs: number, full: boolean): DashboardEvent {
    return {
      volume: this.opts.volume, self: this.opts.self, atMs: nowMs, intervalMs: this.opts.intervalMs, historySamples: this.opts.historySamples, full,
      nodes: this.tracked.map((t) => ({ ...t.view, samples: full ? [...t.history] : [...t.fresh] })),
    };
  }

  private accept(t: Tracked, state: DashboardState, nowMs: number): void {
    t.view = { ...t.view, reachable: true, error: null, lastSeenMs: nowMs, state };
    const sample = sampleOf(state, nowMs);
    t.history.push(sample);
    if (t.history.length > this.opts.historySamples) t.history.shift();
    t.fresh.push(sample);
  }

  private ask(t: Tracked, url: string): void {
    t.inFlight = true;
    void fetchState(url, t.view.name, this.opts.fetchTimeoutMs, this.opts.ca ?? null).then(
      (state) => this.accept(t, state, Date.now()),
      (err: unknown) => { t.view = { ...t.view, reachable: false, error: describeFetchError(err) }; },
    ).finally(() => { t.inFlight = false; });
  }
}

async function fetchState(url: string, node: string, timeoutMs: number, ca: Buffer | null): Promise<DashboardState> {
  const res = await adminRequest(new URL(url), { method: 'GET', timeoutMs, ca, maxBytes: MAX_STATE_BYTES });
  if (!res.ok) throw new Error(`HTTP ${res.status} from its admin port`);
  return checkState(JSON.parse(res.text), node);
}

/** "connection refused", "no answer within 1000 ms": what an operator can act on. */
function describeFetchError(err: unknown): string {
  const e = err as Error & { timedOut?: boolean };
  if (e.timedOut === true) return 'its admin port did not answer in time';
  if (e instanceof SyntaxError) return 'its answer is not JSON';
  // adminRequest's "cannot reach admin at URL: why": the URL is on the card already.
  return clientText(e.message.replace(/^cannot reach admin at \S+: /, ''), 200);
}
