// Track checksums for an online verify and a checksum resync (issue 14 items 4-5): SHA-256 of each
// track, computed in the shell (node:crypto, OpenSSL's hashing); the core only compares them
// (src/core/track-compare.ts). A checksum that says "equal" lets a resync skip the track, so it
// must be collision resistant: CRC32C, or any 64-bit hash, is not.
import { createHash } from 'node:crypto';
import { TRACK_SUM_BYTES } from '../core/link-codec.js';

/** One TRACK_SUM_BYTES checksum per track of `bytes` (the last track may be short). */
export function trackSums(bytes: Uint8Array, trackSizeBytes: number): Uint8Array {
  const count = Math.ceil(bytes.length / trackSizeBytes);
  const sums = new Uint8Array(count * TRACK_SUM_BYTES);
  for (let i = 0; i < count; i++) {
    const track = bytes.subarray(i * trackSizeBytes, Math.min(bytes.length, (i + 1) * trackSizeBytes));
    sums.set(createHash('sha256').update(track).digest(), i * TRACK_SUM_BYTES);
  }
  return sums;
}
