// Fig. 4 step 66 on the secondary: the peer's bytes into the cache, its record marked, the write
// acknowledged. A function over the data path and the channel the message came on; the link half
// (replica-link.ts) routes the message here and keeps the node's position in the primary's write
// stream from what it returns. Pure and synchronous.
import type { DataChannel as Channel, DataPath } from './replica-data.js';
import type { LinkMessage } from './replica-types.js';
import type { StreamPosition } from './stream-position.js';
import { currentEpoch, type EpochEntry } from './epochs.js';
import { isOnePiece, splitPieces } from './write-pieces.js';

type PeerData = Extract<LinkMessage, { type: 'write' | 'zero' | 'syncData' | 'syncZero' }>;

/**
 * Applies the peer's write, zero or resync chunk. Returns the tracks it covered, none when it
 * was ignored (this node is primary), or null when it must wait for cache room (it keeps its
 * place on the link, with the pieces already in noted).
 */
export function applyPeerData(d: DataPath, ch: Channel, msg: PeerData, nowMs: number): number[] | null {
  if (d.role !== 'secondary') {
    d.emit({ kind: 'log', level: 'error', msg: 'primary received volume data from its peer: ignored', fields: { type: msg.type } });
    // Promoted while this message was half in (held back for cache room): the pieces already
    // applied are marked in the record (step 66 per piece) but the notifier never heard of them,
    // so a selective destage left them out and a CLEAR dropped the peer's mark while they were
    // still only in this node's RAM (simulator, seed 40118207). It hears of them now.
    const appliedBytes = ch.inbound.headAppliedBytes;
    if (appliedBytes > 0) d.notices.notifyMarked(ch, d.cache.tracksOf(msg.offsetBytes, appliedBytes), nowMs);
    return [];
  }
  const lengthBytes = msg.type === 'zero' || msg.type === 'syncZero' ? msg.lengthBytes : msg.data.length;
  const data = msg.type === 'zero' || msg.type === 'syncZero' ? null : msg.data;
  // A write larger than half our cache goes in as pieces while room allows (our cache may be
  // smaller than the primary's); the message keeps its place until all of it is in.
  const appliedBytes = ch.inbound.headAppliedBytes;
  if (appliedBytes === 0 && lengthBytes > 0 && isOnePiece(d.settings.geometry, msg.offsetBytes, lengthBytes)) {
    // Almost every message: in whole, or not yet (the marks below follow at once).
    if (!d.applyLocal(msg.offsetBytes, lengthBytes, data, nowMs)) return null;
    ch.inbound.noteApplied(lengthBytes);
  } else {
    for (const [off, len] of splitPieces(d.settings.geometry, msg.offsetBytes + appliedBytes, lengthBytes - appliedBytes)) {
      const rel = off - msg.offsetBytes;
      if (!d.applyLocal(off, len, data === null ? null : data.subarray(rel, rel + len), nowMs)) return null;
      ch.inbound.noteApplied(len);
      // Step 66 per piece: if the link drops before the last piece, the applied ones are marked
      // (simulator, seed 3330).
      for (const t of d.cache.tracksOf(off, len)) ch.record.mark(t);
    }
  }
  if (msg.type === 'syncData' || msg.type === 'syncZero') {
    ch.intake.received(lengthBytes);
    d.counters.syncBytesReceived += lengthBytes;
  } else {
    d.counters.writes++;
    d.counters.writtenBytes += lengthBytes;
    d.send(ch, { type: 'writeAck', seq: msg.seq });
  }
  const tracks = d.cache.tracksOf(msg.offsetBytes, lengthBytes);
  for (const t of tracks) ch.record.mark(t); // step 66
  d.notices.notifyMarked(ch, tracks, nowMs);
  return tracks;
}

/**
 * Applies the peer's data and keeps the node's position in its primary's write stream
 * (stream-position.ts); false when it must wait for cache room.
 */
export function applyPeerDataAt(d: DataPath, ch: Channel, msg: PeerData, position: StreamPosition, nowMs: number): boolean {
  const applied = applyPeerData(d, ch, msg, nowMs);
  const seq = 'seq' in msg ? msg.seq : null;
  const heldSeq = 'heldSeq' in msg ? msg.heldSeq : 0;
  if (applied === null) {
    // Part of it is in (a write larger than the room there was): those tracks may already differ
    // from another secondary's, though the write is not all here (simulator, three nodes, seed
    // 40000195: the link dropped with a write half in, and the survey did not resend that track).
    const partBytes = ch.inbound.headAppliedBytes;
    if (partBytes > 0 && ch.peerRole === 'primary') position.partlyReceived(d.cache.tracksOf(msg.offsetBytes, partBytes), seq, heldSeq);
    return false;
  }
  if (applied.length > 0 && ch.peerRole === 'primary') position.received(applied, seq, heldSeq);
  return true;
}

/**
 * Among three or more nodes: is data from `ch` the tail of a stream this node left? It comes from
 * a peer that was primary in an older epoch than one we know of (our history, or another peer
 * that is primary now): sent before that peer stepped down, it reached us late (a stall, a slow
 * link). Applied, it overwrote what the new primary's resync had brought (simulator, three nodes,
 * seed 70004671: an old write over an acknowledged one), so nothing of it is applied or acked.
 */
export function staleStream(channels: readonly Channel[], ch: Channel, history: readonly EpochEntry[]): boolean {
  const view = ch.peerView;
  if (channels.length < 2 || view === null || view.role !== 'primary') return false;
  let newest = currentEpoch(history);
  for (const other of channels) {
    if (other !== ch && other.peerView?.role === 'primary') newest = Math.max(newest, currentEpoch(other.peerView.history));
  }
  return currentEpoch(view.history) < newest;
}
