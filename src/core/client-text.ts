// Escaping and cutting text that came from a client or an unauthenticated peer before it goes into
// a log field or a reason string (issue 9 item 6). Pure, so the link session in src/core can build
// its refusal reasons itself; src/log.ts re-exports it for the shell.

/** Client-supplied text longer than this is cut in log fields (issue 9: no log flooding). */
export const CLIENT_TEXT_MAX_BYTES = 256;

// C0/C1 controls, line and paragraph separators, and surrogates that are not half of a pair.
// eslint-disable-next-line no-control-regex
const unsafeChars = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * A log field for text that came from a client or an unauthenticated peer (an export name, a
 * refuse reason): at most CLIENT_TEXT_MAX_BYTES of UTF-8, with control characters and lone
 * surrogates escaped as \uXXXX, so no client can flood the log, fake a line break in the pretty
 * format or smuggle terminal escapes. A cut is marked with how much was left out.
 */
export function clientText(text: string, maxBytes = CLIENT_TEXT_MAX_BYTES): string {
  const escaped = text.replace(unsafeChars, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  const bytes = Buffer.byteLength(escaped, 'utf8');
  if (bytes <= maxBytes) return escaped;
  let cut = escaped.slice(0, maxBytes);
  while (Buffer.byteLength(cut, 'utf8') > maxBytes) cut = cut.slice(0, -1);
  if (/[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1); // never half of a pair
  return `${cut}...(${bytes - Buffer.byteLength(cut, 'utf8')} more bytes)`;
}
