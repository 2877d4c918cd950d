// A host write and the pieces it is cut into (Fig. 4 steps 60-64 on the primary): track-aligned,
// no larger than half the cache, so each fits once hardening empties it. The same cut applies a
// peer's message on a secondary (replica-apply.ts). Pure.
import type { CacheGeometry } from './cache-types.js';
import type { ReplyErrno } from './replica-types.js';

export interface HostWrite {
  reqId: number; piecesLeft: number; offsetBytes: number; lengthBytes: number; fua: boolean; errno: ReplyErrno | null;
  /** Why it failed, when not for the usual reason (finishWrite). */
  reason?: string;
}
export interface Piece {
  write: HostWrite; offsetBytes: number; lengthBytes: number; data: Uint8Array | null; trim: boolean;
  /** Peers this piece was sent to that have not acknowledged it (nor dropped) yet. */
  acksAwaited: number;
  /**
   * Peers that acknowledged it: a count (among several peers, only those in sync: complete
   * copies), and the names of all once a node has several peers (a resend skips them).
   */
  acks: number;
  ackedBy: string[] | null;
  /** The ack policy was met and the piece counted as done (later acks only release holds). */
  answered: boolean;
  /** When it was last sent to the peers (their ack's round trip steers a yielding resync). */
  mirroredAtMs: number;
}

export function newPiece(write: HostWrite, offsetBytes: number, lengthBytes: number, data: Uint8Array | null, trim: boolean, nowMs: number): Piece {
  return { write, offsetBytes, lengthBytes, data, trim, acksAwaited: 0, acks: 0, ackedBy: null, answered: false, mirroredAtMs: nowMs };
}

function pieceBytesOf({ trackSizeBytes, capacityBytes }: CacheGeometry): number {
  return Math.max(trackSizeBytes, Math.floor(capacityBytes / 2 / trackSizeBytes) * trackSizeBytes);
}

/** True when splitPieces would give [offsetBytes, +lengthBytes) whole (lengthBytes > 0). */
export function isOnePiece(geometry: CacheGeometry, offsetBytes: number, lengthBytes: number): boolean {
  const pieceBytes = pieceBytesOf(geometry);
  return Math.floor(offsetBytes / pieceBytes) === Math.floor((offsetBytes + lengthBytes - 1) / pieceBytes);
}

/** [offset, length] of each piece of [offsetBytes, +lengthBytes). */
export function splitPieces(geometry: CacheGeometry, offsetBytes: number, lengthBytes: number): [number, number][] {
  const pieceBytes = pieceBytesOf(geometry);
  const out: [number, number][] = [];
  const end = offsetBytes + lengthBytes;
  for (let pos = offsetBytes; pos < end;) {
    const pieceEnd = Math.min(end, (Math.floor(pos / pieceBytes) + 1) * pieceBytes);
    out.push([pos, pieceEnd - pos]);
    pos = pieceEnd;
  }
  return out;
}
