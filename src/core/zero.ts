// Zero detection for resync chunks: a sparse volume's zero chunks cross the link as extents.
const ZERO_PAGE = new Uint8Array(64 * 1024);

export function isAllZero(data: Uint8Array): boolean {
  for (let at = 0; at < data.length; at += ZERO_PAGE.length) {
    const piece = data.subarray(at, Math.min(data.length, at + ZERO_PAGE.length));
    if (!Buffer.from(piece.buffer, piece.byteOffset, piece.length).equals(ZERO_PAGE.subarray(0, piece.length))) return false;
  }
  return true;
}
