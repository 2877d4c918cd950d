// What the dashboard's server sends its page (issue 15): types only, shared by the node
// (dashboard.ts, dashboard-feed.ts) and the browser script (web/client.ts), so both are checked
// against the same shape by tsc.
import type { HeatMap } from '../core/heat-map.js';
import type { NodeStatus } from '../node/status.js';

/** One peer's heat map as the node that holds the record sees it. */
export interface PeerHeat {
  peer: string;
  map: HeatMap;
}

/** GET /dashboard/state: a node's status plus what only the dashboard needs. */
export interface DashboardState {
  status: NodeStatus;
  heat: PeerHeat[];
}

/** One point of a node's time series (exposure and host writes). */
export interface Sample {
  atMs: number;
  unhardenedBytes: number;
  oldestDirtyAgeMs: number;
  iops: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

/** One node of the volume as the serving node sees it. */
export interface NodeView {
  name: string;
  /** The node serving the page. */
  self: boolean;
  /** Its admin address from the config (0.0.0.0 or :: means the page's own host). */
  admin: { host: string; port: number };
  /** Whether its admin port answered the last time it was asked; null: not asked yet. */
  reachable: boolean | null;
  error: string | null;
  /** When it last answered (the serving node's clock, ms since the epoch). */
  lastSeenMs: number | null;
  /** Its last answer (kept, marked by reachable false, when it stops answering). */
  state: DashboardState | null;
  /** New samples since the previous event; the whole history when the event is `full`. */
  samples: Sample[];
}

/** One server-sent event of GET /dashboard/events. */
export interface DashboardEvent {
  volume: string;
  self: string;
  atMs: number;
  intervalMs: number;
  /** How many samples the page keeps per node. */
  historySamples: number;
  /** The first event of a stream: samples are the whole history. */
  full: boolean;
  nodes: NodeView[];
}
