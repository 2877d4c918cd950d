// The core's assertion (TIGER_STYLE: assert what must hold, and fail loudly where it breaks). Pure.

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) assertionFailed(message);
}

/**
 * For checks that run on every event or host write: `if (!(condition)) assertionFailed(`...`)`.
 * An argument is evaluated before the call, so a template literal handed to assert() is built,
 * numbers formatted and all, on every call that passes; this builds it only when the check fails.
 */
export function assertionFailed(message: string): never {
  throw new Error(`assertion failed: ${message}`);
}
