// The simulator's only source of randomness: xoshiro128** seeded through splitmix32. Everything a
// run does (options, workload, latencies, faults) is drawn from one Prng built from the seed, so a
// seed replays exactly (DESIGN.md "Testing layers" 2). Never Math.random here: one stray call and
// a failing seed stops reproducing.
//
// Sub-streams (`fork`) give each component its own generator, so adding a draw in, say, the
// workload does not shift every later network delay and turn a known-bad seed into a good one.

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    // splitmix32 spreads any integer seed (0, 1, 2 …) over the whole state; xoshiro must not
    // start from all zeros.
    let s = seed >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    if ((this.a | this.b | this.c | this.d) === 0) this.d = 1;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.b << 9) >>> 0;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c = (this.c ^ t) >>> 0;
    this.d = rotl(this.d >>> 0, 11);
    this.a >>>= 0;
    this.b >>>= 0;
    return result;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform integer in [0, n). n ≥ 1. */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** Uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return p > 0 && this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  /** A child generator: an independent stream derived from this one's next draw. */
  fork(): Prng {
    return new Prng(this.u32());
  }

  /**
   * A delay around `meanMs` with a tail: mostly uniform in [0, 2·mean], one in eight up to 8·mean.
   * Most events are quick and a few are slow, and the tail is where reorderings and timeouts
   * hide. Integer arithmetic only (Math.log is not bit-exact across platforms).
   */
  delay(meanMs: number): number {
    if (meanMs <= 0) return 0;
    const spread = this.int(8) === 0 ? 8 * meanMs : 2 * meanMs;
    return this.int(Math.floor(spread) + 1);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
