// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the replication link's frame checksum
// (DESIGN.md "Architecture": src/link framing, CRC). Castagnoli rather than the zlib CRC32
// because it detects more error patterns at the frame sizes we send (iSCSI, ext4 and SCTP chose
// it for the same reason).
//
// Speed matters: the link checksums every mirrored write on both nodes, up to a 1 MiB body per
// host write (seed Fig. 4 steps 64-66 are on the host's latency path). The table form is
// "slicing": k tables of 256 entries let one loop iteration consume k bytes with independent
// lookups instead of one byte per dependent lookup (Intel's slicing-by-8, 2005). We slice by 16
// and read the input as little-endian 32-bit words: on Node 20/V8 that measured ~1.95 GB/s on
// 1 MiB against ~1.5 GB/s for byte-wise slice-by-8. Unaligned heads and short tails, and
// big-endian machines (where the word view would read bytes in the wrong order), take the
// byte-at-a-time loop over the first table. Pure: no I/O.
//
// Native: even sliced, the JavaScript CRC cost 1.1-1.7 ms per MiB per node under load, a fifth of
// each node's time on 1 MiB mirrored writes (docs/benchmarks.md). @node-rs/crc32 (napi-rs,
// prebuilt per platform, SSE4.2 / ARMv8 CRC instructions) does the same sum several times faster
// and chains the same way (initialState = the previous CRC), so inputs of nativeMinBytes or more
// go to it; shorter ones (frame headers, acks) stay here, where a call costs less than crossing
// into native code. If the binding does not load (a platform without a prebuilt binary) every
// input takes the JavaScript path; crc32cImplementation says which is in use and why, and the
// link logs it once at start (src/link/peer-link.ts), so a slow fallback is never silent.

type NativeCrc32c = (input: Uint8Array, initialState?: number | null) => number;

/** Below this many bytes the JavaScript loop beats the call into native code (measured ~256). */
const nativeMinBytes = 256;

const nativeLoad = await loadNative();
const nativeCrc32c: NativeCrc32c | null = nativeLoad.fn;

/** Which CRC32C serves inputs of nativeMinBytes or more, and why the native one did not load. */
export const crc32cImplementation: { readonly kind: 'native' | 'javascript'; readonly loadError: string | null } =
  { kind: nativeCrc32c === null ? 'javascript' : 'native', loadError: nativeLoad.error };

async function loadNative(): Promise<{ fn: NativeCrc32c | null; error: string | null }> {
  try {
    const mod = await import('@node-rs/crc32');
    const fn = mod.crc32c as NativeCrc32c;
    // Trust it only if it agrees with the check value and with our chaining.
    const check = new TextEncoder().encode('123456789');
    if (fn(check) !== 0xe3069283 || fn(check.subarray(4), fn(check.subarray(0, 4))) !== 0xe3069283) {
      return { fn: null, error: '@node-rs/crc32 gave a wrong check value' };
    }
    return { fn, error: null };
  } catch (err) {
    return { fn: null, error: err instanceof Error ? err.message.split('\n')[0]! : String(err) };
  }
}

const polynomial = 0x82f63b78;
const slices = 16;

/**
 * tables[k * 256 + n] = the CRC contribution of byte n followed by k zero bytes. One flat
 * Int32Array (16 KiB) so the tables share one cache-friendly block.
 */
const tables = buildTables();

const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Below this many bytes the word view's setup costs more than it saves. */
const minWordPathBytes = 64;

function buildTables(): Int32Array {
  const t = new Int32Array(slices * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? (c >>> 1) ^ polynomial : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n]!;
    for (let k = 1; k < slices; k++) {
      c = (c >>> 8) ^ t[c & 0xff]!;
      t[k * 256 + n] = c;
    }
  }
  return t;
}

/**
 * CRC32C of data. Chaining: crc32c(b, crc32c(a)) === crc32c(a followed by b), so a frame whose
 * body lies in several buffers (header prefix, a caller's write data) is checksummed without
 * concatenating them.
 */
export function crc32c(data: Uint8Array, seed = 0): number {
  if (nativeCrc32c !== null && data.length >= nativeMinBytes) return nativeCrc32c(data, seed);
  return crc32cJs(data, seed);
}

/** The table implementation alone (tests compare it with the native one; short inputs use it). */
export function crc32cJs(data: Uint8Array, seed = 0): number {
  const t = tables;
  const length = data.length;
  let crc = ~seed;
  let i = 0;
  if (littleEndian && length >= minWordPathBytes) {
    while ((data.byteOffset + i) & 3) crc = (crc >>> 8) ^ t[(crc ^ data[i++]!) & 0xff]!;
    const wordCount = ((length - i) >>> 4) << 2;
    crc = crcWords(new Int32Array(data.buffer, data.byteOffset + i, wordCount), crc);
    i += wordCount * 4;
  }
  while (i < length) crc = (crc >>> 8) ^ t[(crc ^ data[i++]!) & 0xff]!;
  return ~crc >>> 0;
}

/** Slice-by-16 over whole 16-byte blocks; crc is the running (inverted) register. */
function crcWords(words: Int32Array, crc: number): number {
  const t = tables;
  const n = words.length;
  for (let w = 0; w < n; w += 4) {
    // The first word is folded into the running CRC; the other three look up the tables directly.
    const a = crc ^ words[w]!;
    const b = words[w + 1]!;
    const c = words[w + 2]!;
    const d = words[w + 3]!;
    crc = t[0xf00 + (a & 0xff)]! ^ t[0xe00 + ((a >>> 8) & 0xff)]!
      ^ t[0xd00 + ((a >>> 16) & 0xff)]! ^ t[0xc00 + (a >>> 24)]!
      ^ t[0xb00 + (b & 0xff)]! ^ t[0xa00 + ((b >>> 8) & 0xff)]!
      ^ t[0x900 + ((b >>> 16) & 0xff)]! ^ t[0x800 + (b >>> 24)]!
      ^ t[0x700 + (c & 0xff)]! ^ t[0x600 + ((c >>> 8) & 0xff)]!
      ^ t[0x500 + ((c >>> 16) & 0xff)]! ^ t[0x400 + (c >>> 24)]!
      ^ t[0x300 + (d & 0xff)]! ^ t[0x200 + ((d >>> 8) & 0xff)]!
      ^ t[0x100 + ((d >>> 16) & 0xff)]! ^ t[d >>> 24]!;
  }
  return crc;
}
