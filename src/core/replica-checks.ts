// The data path's boundary checks (replica-data.ts): what may go on the link, and what may be
// hardened, asserted as each action leaves the core. Each assertion is a checked comment
// (TigerBeetle's TIGER_STYLE). Pure: they read the data path and throw; nothing else.
import { assert, assertionFailed } from './assert.js';
import type { HardenJob } from './cache-types.js';
import type { TrackCache } from './cache.js';
import type { LinkMessage, PeerState, Role } from './replica-types.js';

/** What the checks read of the data path. */
/** What the checks read of one peer channel (peer-channel.ts). */
export interface CheckedChannel {
  readonly linkIsUp: boolean;
  readonly mirroring: boolean;
  readonly state: PeerState;
  readonly pendingAcks: { has(seq: number): boolean; readonly size: number; values(): Iterable<{ offsetBytes: number; lengthBytes: number }> };
}

/** What the checks read of the data path. */
export interface CheckedPath {
  readonly channels: readonly CheckedChannel[];
  readonly mirroring: boolean;
  readonly role: Role;
  readonly cache: TrackCache;
  readonly diverging: boolean;
  readonly divergingOnDisk: boolean;
}

/**
 * What may go on the link, checked as it leaves; returns the seq of a write or zero sent (the
 * caller keeps the last, so that seqs strictly increase). Acks, flush acks and promote answers
 * may trail a dead link (the shell drops them).
 */
export function checkSend(d: CheckedPath, ch: CheckedChannel, msg: LinkMessage, lastSentWriteSeq: number): number {
  switch (msg.type) {
    case 'write':
    case 'zero':
      // Fig. 4 step 64: only while the peer receives our writes, in one ordered stream.
      // Every write sent: messages are built only when a check fails (assertionFailed).
      if (!(ch.linkIsUp && ch.mirroring)) assertionFailed(`a ${msg.type} is sent only while the peer is mirrored (peer state ${ch.state})`);
      if (!(msg.seq > lastSentWriteSeq && ch.pendingAcks.has(msg.seq))) assertionFailed(`write seqs strictly increase on the link, each awaiting its ack (seq ${msg.seq} after ${lastSentWriteSeq})`);
      return msg.seq;
    case 'writeAck':
      assert(d.role === 'secondary', 'only a secondary acknowledges the peer\'s writes (step 66)');
      break;
    case 'flushReq':
      assert(ch.linkIsUp && ch.mirroring, 'a FLUSH goes to the peer only while it is mirrored');
      break;
    case 'syncStart':
    case 'syncData':
    case 'syncZero':
    case 'syncDone':
      if (!(ch.linkIsUp && ch.state === 'resyncing')) assertionFailed(`${msg.type} is sent only by a resync source (peer state ${ch.state})`);
      break;
    case 'state':
    case 'promoteReq':
    case 'fetchReq':
      if (!ch.linkIsUp) assertionFailed(`${msg.type} is sent only on a live link`);
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
  for (const ch of d.channels) {
    if (ch.pendingAcks.size === 0) continue;
    const jobTracks = new Set(job.tracks);
    for (const piece of ch.pendingAcks.values()) {
      for (const t of d.cache.tracksOf(piece.offsetBytes, piece.lengthBytes)) {
        if (jobTracks.has(t)) assertionFailed(`track ${t} is hardened before a peer acknowledged its write`);
      }
    }
  }
}
