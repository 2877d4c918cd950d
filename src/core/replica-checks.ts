// The data path's boundary checks (replica-data.ts): what may go on the link, and what may be
// hardened, asserted as each action leaves the core. Each assertion is a checked comment
// (TigerBeetle's TIGER_STYLE). Pure: they read the data path and throw; nothing else.
import { assert } from './assert.js';
import type { HardenJob } from './cache-types.js';
import type { TrackCache } from './cache.js';
import type { LinkMessage, PeerState, Role } from './replica-types.js';

/** What the checks read of the data path. */
export interface CheckedPath {
  readonly linkIsUp: boolean;
  readonly mirroring: boolean;
  readonly peerState: PeerState;
  readonly role: Role;
  readonly pendingAcks: ReadonlyMap<number, { offsetBytes: number; lengthBytes: number }>;
  readonly cache: TrackCache;
  readonly diverging: boolean;
  readonly divergingOnDisk: boolean;
}

/**
 * What may go on the link, checked as it leaves; returns the seq of a write or zero sent (the
 * caller keeps the last, so that seqs strictly increase). Acks, flush acks and promote answers
 * may trail a dead link (the shell drops them).
 */
export function checkSend(d: CheckedPath, msg: LinkMessage, lastSentWriteSeq: number): number {
  switch (msg.type) {
    case 'write':
    case 'zero':
      // Fig. 4 step 64: only while the peer receives our writes, in one ordered stream.
      assert(d.linkIsUp && d.mirroring, `a ${msg.type} is sent only while the peer is mirrored (peer state ${d.peerState})`);
      assert(msg.seq > lastSentWriteSeq && d.pendingAcks.has(msg.seq), `write seqs strictly increase on the link, each awaiting its ack (seq ${msg.seq} after ${lastSentWriteSeq})`);
      return msg.seq;
    case 'writeAck':
      assert(d.role === 'secondary', 'only a secondary acknowledges the peer\'s writes (step 66)');
      break;
    case 'flushReq':
      assert(d.linkIsUp && d.mirroring, 'a FLUSH goes to the peer only while it is mirrored');
      break;
    case 'syncStart':
    case 'syncData':
    case 'syncZero':
    case 'syncDone':
      assert(d.linkIsUp && d.peerState === 'resyncing', `${msg.type} is sent only by a resync source (peer state ${d.peerState})`);
      break;
    case 'state':
    case 'promoteReq':
      assert(d.linkIsUp, `${msg.type} is sent only on a live link`);
      break;
    default:
      break;
  }
  return lastSentWriteSeq;
}

/**
 * DESIGN.md "Failures", last point: the primary never hardens a mirrored write its peer has not
 * acknowledged (its store would hold a write no bitmap records if it then crashed).
 */
export function checkHardenJob(d: CheckedPath, job: HardenJob): void {
  // DESIGN.md "Failures": a primary alone starts a new epoch, persisted, before it hardens
  // anything its peer lacks; after a crash the mark on disk is what makes its store untrusted.
  if (d.diverging && d.role === 'primary' && !d.mirroring) assert(d.divergingOnDisk, 'a primary without its peer hardens only once its metadata on disk says it diverges');
  if (d.pendingAcks.size === 0) return;
  const jobTracks = new Set(job.tracks);
  for (const piece of d.pendingAcks.values()) {
    for (const t of d.cache.tracksOf(piece.offsetBytes, piece.lengthBytes)) {
      assert(!jobTracks.has(t), `track ${t} is hardened before the peer acknowledged its write`);
    }
  }
}
