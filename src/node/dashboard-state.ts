// The node's side of the dashboard (issue 15): its status plus one heat map per peer, and the NBD
// observer that times host writes for the p50/p99 and IOPS that status and the page show.
import type { DashboardState } from '../admin/dashboard-types.js';
import { heatMap } from '../core/heat-map.js';
import type { ReplicaCore } from '../core/replica.js';
import type { HostWriteWindow } from '../core/write-window.js';
import type { NbdRequestObserver } from '../nbd/export.js';
import type { NodeStatus } from './status.js';

/** Heat map cells per peer: a readable grid on a phone, a range or a few per cell on most volumes. */
export const HEAT_MAP_CELLS = 64;

export function buildDashboardState(status: NodeStatus, core: ReplicaCore): DashboardState {
  return {
    status,
    heat: core.peers.map((ch) => ({ peer: ch.name, map: heatMap(ch.record, ch.outOfSync, HEAT_MAP_CELLS) })),
  };
}

/** Passes every request to `inner` and records each host write that succeeded in `writes`. */
export function observeHostWrites(inner: NbdRequestObserver, writes: HostWriteWindow): NbdRequestObserver {
  return {
    requestDone(command, bytes, latencySeconds, errno) {
      inner.requestDone(command, bytes, latencySeconds, errno);
      if (command === 'write' && errno === null) writes.record(latencySeconds * 1000);
    },
    connectionOpened: () => inner.connectionOpened(),
    connectionClosed: (reason) => inner.connectionClosed(reason),
  };
}
