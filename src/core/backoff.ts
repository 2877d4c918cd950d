// The retry pause after the n-th failure in a row of the same disk operation (an fdatasync, a
// metadata save): the base pause doubling with each failure, up to 32 times it, so a failing disk
// is neither hammered nor left alone for long. Pure.

/** Pause before the next try, after `failuresInRow` (>= 1) failures in a row. */
export function retryBackoffMs(baseMs: number, failuresInRow: number): number {
  return baseMs * 2 ** Math.min(Math.max(failuresInRow, 1) - 1, 5);
}

/** The earlier of two optional times (null: none). */
export function earlierMs(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  return b === null || b > a ? a : b;
}
