// Warnings any client can trigger at will (a refused connection, a dropped handshake, a protocol
// violation) are rate limited, so a client opening connections in a loop cannot flood the log
// (issue 9 item 6): at most linesPerSecond lines per message each second; the next line printed
// for that message says how many were left out.
import type { NbdLog } from './server-handshake.js';

interface Window {
  startMs: number;
  lines: number;
  suppressed: number;
}

export class RateLimitedLog {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly log: NbdLog,
    private readonly linesPerSecond = 10,
    private readonly nowMs: () => number = () => performance.now(),
  ) {}

  warn(msg: string, fields: Record<string, unknown>): void {
    const now = this.nowMs();
    let window = this.windows.get(msg);
    if (window === undefined) {
      window = { startMs: now, lines: 0, suppressed: 0 };
      this.windows.set(msg, window);
    }
    if (now - window.startMs >= 1000) {
      window.startMs = now;
      window.lines = 0;
    }
    if (window.lines >= this.linesPerSecond) {
      window.suppressed += 1;
      return;
    }
    window.lines += 1;
    const suppressed = window.suppressed;
    window.suppressed = 0;
    this.log('warn', msg, suppressed > 0 ? { ...fields, suppressedSinceLastLine: suppressed } : fields);
  }
}
