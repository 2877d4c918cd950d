// Byte sizes as people write them in configs and on the command line ("64KiB", "1GiB", "4096").
//
// Decisions (README and tests rely on them):
// - Units are binary: KiB/MiB/GiB/TiB, and the one-letter forms K/M/G/T (as qemu-img and dd read
//   them) mean the same powers of 1024. "B" or no unit means bytes. Case does not matter.
// - "KB", "MB", "GB", "TB" are rejected: half the world reads them as 1000ⁿ and half as 1024ⁿ, and
//   a cache or track size silently off by 2.4 % is worse than an error that names the fix.
// - A decimal number is allowed when it names a whole number of bytes: "1.5GiB" is 1610612736,
//   "0.5KiB" is 512, but "1.3KiB" (1331.2 bytes) is an error. Alignment (multiples of 512, powers
//   of two) is the caller's rule, not this parser's.

const unitBytes: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
};

const ambiguousUnits = new Set(['kb', 'mb', 'gb', 'tb']);

const sizePattern = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/;

/** Thrown by parseSize; the message is one line and quotes the bad text. */
export class SizeError extends Error {
  override readonly name = 'SizeError';
}

/** Parse "64KiB", "1GiB", "1.5GiB", "4096" or a non-negative integer number into bytes. */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text) || text < 0) {
      throw new SizeError(`bad size ${text}: a byte count must be a non-negative integer`);
    }
    return text;
  }
  const trimmed = text.trim();
  const match = sizePattern.exec(trimmed);
  if (match === null) throw new SizeError(`bad size "${text}" (use e.g. 64KiB, 1GiB)`);
  const [, numberText = '', unitText = ''] = match;
  const unit = unitText.toLowerCase();
  if (ambiguousUnits.has(unit)) {
    throw new SizeError(`bad size "${text}": ${unitText} is ambiguous, use ${unitText[0]?.toUpperCase()}iB (powers of 1024) or plain bytes`);
  }
  const multiplier = unitBytes[unit];
  if (multiplier === undefined) throw new SizeError(`bad size "${text}" (use e.g. 64KiB, 1GiB)`);
  const bytes = exactProduct(numberText, multiplier);
  if (bytes === null) throw new SizeError(`bad size "${text}": not a whole number of bytes`);
  if (!Number.isSafeInteger(bytes)) throw new SizeError(`bad size "${text}": too large`);
  return bytes;
}

/**
 * numberText × multiplier, computed in BigInt so that "1.1GiB" is judged exactly rather than
 * through binary floating point; null when the product has a fractional part.
 */
function exactProduct(numberText: string, multiplier: number): number | null {
  const [whole = '0', fraction = ''] = numberText.split('.');
  const scale = 10n ** BigInt(fraction.length);
  const scaled = BigInt(whole + fraction) * BigInt(multiplier);
  if (scaled % scale !== 0n) return null;
  return Number(scaled / scale);
}

const displayUnits: Array<[string, number]> = [
  ['TiB', 1024 ** 4],
  ['GiB', 1024 ** 3],
  ['MiB', 1024 ** 2],
  ['KiB', 1024],
];

/**
 * Human-readable size in the largest binary unit not above it, with at most two decimals:
 * 65536 → "64KiB", 1610612736 → "1.5GiB", 1000 → "1000B". A size that is a whole number of
 * hundredths in that unit round-trips through parseSize; others are rounded, for display only.
 */
export function formatSize(bytes: number): string {
  if (!Number.isFinite(bytes)) return `${bytes}B`;
  const sign = bytes < 0 ? '-' : '';
  const magnitude = Math.abs(bytes);
  for (const [name, unit] of displayUnits) {
    if (magnitude >= unit) {
      const value = Math.round((magnitude / unit) * 100) / 100;
      return `${sign}${value}${name}`;
    }
  }
  return `${sign}${Math.round(magnitude)}B`;
}
