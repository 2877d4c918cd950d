// The data path's mirrored writes (seed Fig. 4 steps 62-66) and their acks, a part the data path
// (replica-data.ts) owns: a write piece goes to every peer receiving our writes under one seq,
// each peer's ack is counted, and the piece is answered once the ack policy (issue 12) is met,
// once. Its state lives in the pieces and in each peer channel's pending acks; it reaches the
// cache, the quorum part and the link through the data path. Pure and synchronous.
import type { LinkMessage } from './replica-types.js';
import type { DataChannel, DataPath, Piece } from './replica-data.js';

export class AckPart {
  constructor(private readonly d: DataPath) {}

  /**
   * Fig. 4 steps 62-64: sends an applied piece, under one seq, to every peer receiving our writes
   * that does not hold it yet (a piece held for quorum and sent again skips those that acked it).
   * Their acks complete it, per the ack policy (acked).
   */
  mirror(piece: Piece, nowMs: number): void {
    const tracks = this.d.cache.tracksOf(piece.offsetBytes, piece.lengthBytes);
    const seq = ++this.d.sendSeq;
    this.d.counters.mirroredWrites++;
    const heldSeq = this.heldSeq();
    const msg: LinkMessage = piece.data === null
      ? { type: 'zero', seq, heldSeq, offsetBytes: piece.offsetBytes, lengthBytes: piece.lengthBytes, trim: piece.trim }
      // The host's payload itself: the shell keeps it until every frame carrying it was written,
      // even when the write is answered first (src/nbd/payload-pool.ts, src/link/connection.ts).
      : { type: 'write', seq, heldSeq, offsetBytes: piece.offsetBytes, data: piece.data };
    piece.mirroredAtMs = nowMs;
    for (const ch of this.d.channels) {
      if (!ch.mirroring || piece.ackedBy?.includes(ch.name) === true) continue;
      this.d.cache.holdHardening(piece.offsetBytes, piece.lengthBytes); // not on our disk before it is in this peer's cache
      ch.pendingAcks.set(seq, piece);
      piece.acksAwaited++;
      this.d.counters.mirroredBytes += piece.lengthBytes;
      this.d.send(ch, msg); // step 64
      this.d.notices.markSent(ch, tracks, nowMs); // step 62
    }
    if (piece.acksAwaited === 0) this.answer(piece); // every peer receiving writes holds it already
  }

  /**
   * Every configured peer acknowledged every write of this stream up to this seq (a peer away, or
   * never connected, holds it back): secondaries keep the tracks they get above it, which another
   * secondary may lack (src/core/stream-position.ts).
   */
  private heldSeq(): number {
    let held = Infinity;
    for (const ch of this.d.channels) held = Math.min(held, ch.ackedSeq);
    return held;
  }

  /**
   * A peer acknowledged (step 66) the write `seq` it was sent. The piece is done once the ack
   * policy is met (issue 12): `all`, when no peer it was sent to still owes an ack (a peer that
   * dropped owes none: the united bitmap makes its tracks out of sync); `quorum`, as soon as this
   * node and the peers that acked it are a majority of the configured nodes. The track stays held
   * from hardening until every peer holds it (checkHardenJob).
   */
  acked(ch: DataChannel, seq: number, nowMs: number): void {
    const piece = ch.pendingAcks.get(seq);
    if (piece === undefined) return;
    // What a resync into this peer costs host writes (resync-throttle.ts).
    ch.resync?.throttle?.roundTrip(nowMs, nowMs - piece.mirroredAtMs);
    ch.pendingAcks.delete(seq);
    ch.ackedSeq = Math.max(ch.ackedSeq, seq);
    this.d.cache.releaseHardening(piece.offsetBytes, piece.lengthBytes);
    piece.acksAwaited--;
    // Among three or more nodes only a complete copy counts as holding a write: a peer still being
    // resynced may be all that holds it when the primary dies, and its store cannot be promoted.
    if (this.d.channels.length === 1 || (ch.state === 'in-sync' && seq > ch.inSyncFromSeq)) piece.acks++;
    if (this.d.channels.length > 1) (piece.ackedBy ??= []).push(ch.name);
    if (this.d.settings.quorum.ack === 'quorum' && 1 + piece.acks >= this.d.quorumPart.majority) return this.answer(piece);
    if (piece.acksAwaited > 0) return;
    // Every peer it went to holds it, or dropped; but with three or more nodes, quorum may have
    // gone with the peers that dropped: then fewer than `need` nodes hold it, and a primary
    // without quorum acknowledges nothing. Nor may it hold the write to send it again once quorum
    // returns, as a pair does with the writes its one peer lost: newer writes to the same blocks
    // may have gone out since, and the old bytes sent after them would overwrite them (the
    // randomized test, seed 2208: an acknowledged write lost that way). It fails (EIO): a failed
    // write's bytes may or may not be on the volume, and the resyncs make every node agree.
    if (this.d.role === 'primary') this.failIfTooFewHold(piece);
    this.answer(piece);
  }

  /**
   * Fewer nodes than quorum needs hold the piece: its write fails (EIO). Whether the node has
   * quorum *now* does not matter: a peer that counts toward it now may never have held this piece
   * (it finished a resync since, and the resync's data may still be on its way: simulator, three
   * nodes, seed 24, where a write held by the primary alone was acknowledged that way).
   */
  failIfTooFewHold(piece: Piece): void {
    const { need, configuredNodes, settings } = this.d.quorumPart;
    if (1 + piece.acks >= need) return;
    piece.write.errno ??= 'EIO';
    const held = `${1 + piece.acks} of ${configuredNodes} nodes hold this write and ${need} must (quorum: ${settings.policy})`;
    piece.write.reason ??= this.d.writesHaveQuorum ? `${held}: a peer's link dropped before it acknowledged` : `${this.d.noQuorumMessage()}; ${held}`;
  }

  /** The piece met the ack policy: it counts as done, once. */
  answer(piece: Piece): void {
    if (piece.answered) return;
    piece.answered = true;
    this.d.pieceDone(piece);
  }

  /**
   * The link to `ch` dropped: its writes in flight await it no more. Returns those now owed no
   * ack and not yet answered (the data path's settleUnacked decides them).
   */
  dropPending(ch: DataChannel): Piece[] {
    const unacked: Piece[] = [];
    for (const piece of ch.pendingAcks.values()) {
      this.d.cache.releaseHardening(piece.offsetBytes, piece.lengthBytes);
      if (--piece.acksAwaited === 0 && !piece.answered) unacked.push(piece);
    }
    ch.pendingAcks.clear();
    return unacked;
  }
}
