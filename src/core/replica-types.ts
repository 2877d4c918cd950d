// Types shared by the replica core and its shell: what goes in, what comes out.
import type { HardenJob } from './cache.js';
import type { HardenReason } from './hardening.js';
import type { LinkMessage } from './link-codec.js';

export type Role = 'primary' | 'secondary';

/**
 * The state of this node's relation with its peer (DESIGN.md "Interfaces"):
 *  standalone — the config has one node; connecting — no link yet (a primary serves alone);
 *  resyncing — the link is up and the primary is sending the volume; in-sync — mirrored;
 *  degraded — the link was lost: the primary serves alone and the peer needs a resync.
 */
export type PeerState = 'standalone' | 'connecting' | 'resyncing' | 'in-sync' | 'degraded';

export type FlushPolicy = 'memory' | 'disk';
export type DegradedPolicy = 'write-through' | 'write-back';

/** errno names the core answers hosts with (a subset of NBD's). */
export type ReplyErrno = 'EPERM' | 'EIO' | 'ESHUTDOWN';

export type ReplicaAction =
  | { kind: 'send'; msg: LinkMessage }
  | { kind: 'reply'; reqId: number; errno: ReplyErrno | null; message?: string }
  | { kind: 'harden'; job: HardenJob; reason: HardenReason }
  /** fdatasync the store, then call storeSynced(syncId). */
  | { kind: 'sync-store'; syncId: number }
  /** Read this span for the initial sync (cache-aware), then call syncChunkRead. */
  | { kind: 'sync-read'; offsetBytes: number; lengthBytes: number }
  | { kind: 'log'; level: 'info' | 'warn' | 'error'; msg: string; fields?: Record<string, unknown> };

export type { LinkMessage };
