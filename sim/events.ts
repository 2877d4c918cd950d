// The simulated clock and its event queue. One step = one event: the simulator pops the earliest
// event (ties broken by insertion order, so the order is a pure function of the seed), advances
// the clock to it, runs it, and then checks every invariant. Nothing happens between events, which
// is what makes "after every step" a meaningful place to check. (A step also runs the promise
// continuations its event set off: the simulator drains them before it checks; sim/cluster.ts.)
import type { Clock, TimerHandle } from '../src/node/ports.js';

/**
 * Who an event belongs to. A node's crash cancels its token: every store completion, timer and
 * delivery queued for that incarnation silently disappears, like the process it belonged to.
 */
export class Owner {
  cancelled = false;
  constructor(readonly name: string) {}
}

interface Event {
  at: number;
  seq: number;
  label: string;
  owner: Owner | null;
  run: () => void;
  cancelled: boolean;
}

export class Scheduler {
  nowMs = 0;
  steps = 0;
  private readonly heap: Event[] = [];
  private seq = 0;

  /** Runs `run` at `atMs` (never in the past). A cancelled event is skipped, not a step. */
  at(atMs: number, label: string, run: () => void, owner: Owner | null = null): TimerHandle {
    const ev: Event = { at: Math.max(atMs, this.nowMs), seq: this.seq++, label, owner, run, cancelled: false };
    this.push(ev);
    return { cancel: () => { ev.cancelled = true; } };
  }

  after(delayMs: number, label: string, run: () => void, owner: Owner | null = null): TimerHandle {
    return this.at(this.nowMs + delayMs, label, run, owner);
  }

  get pending(): number {
    return this.heap.length;
  }

  /** Pops and runs the next live event; returns its label, or null when the queue is empty. */
  step(): string | null {
    while (this.heap.length > 0) {
      const ev = this.pop();
      if (ev.cancelled || ev.owner?.cancelled) continue;
      this.nowMs = ev.at;
      this.steps++;
      ev.run();
      return ev.label;
    }
    return null;
  }

  /** The time of the next event, or null. */
  peekTime(): number | null {
    return this.heap.length > 0 ? this.heap[0]!.at : null;
  }

  private less(x: Event, y: Event): boolean {
    return x.at < y.at || (x.at === y.at && x.seq < y.seq);
  }

  private push(ev: Event): void {
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  private pop(): Event {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

/** The clock port (src/node/ports.ts) of one node incarnation: simulated time, timers as events it owns. */
export function simClock(sched: Scheduler, owner: Owner, label: string): Clock {
  return {
    nowMs: () => sched.nowMs,
    setTimer: (delayMs, fn) => sched.after(delayMs, label, fn, owner),
  };
}
