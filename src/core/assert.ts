// The core's assertion (TIGER_STYLE: assert what must hold, and fail loudly where it breaks). Pure.

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
