// Busy polling while the host is at low queue depth (issue 11: the QD1 rows and the seed's claim).
//
// Why: at QD1 a write crosses between processes four times (host → primary → secondary → primary
// → host) and each crossing wakes a sleeping process. On the VMs this project runs on, an idle
// vCPU halts (`hlt`; the guest's haltpoll driver is set never to poll), and waking a halted vCPU
// is a trip through the hypervisor. Measured: a standalone node's QD1 p50 is 27.8 µs with
// everything on one core and 74.2 µs on two (docs/benchmarks.md, "One core against two").
//
// So once replies keep leaving their host connection with nothing in flight (two in a row), the
// next request is likely the host's very next step: the node keeps its event loop turning for a short window
// (a setImmediate chain, so libuv polls with a zero timeout instead of sleeping), the vCPU stays
// awake, and the request is read without a wake-up. While the host is at low depth, frames sent on
// the replication link open the same window for the peer's ack. A secondary has no host
// connections, so it never polls: measured, a secondary that polled too took the primary's
// vCPU and the pair was slower than with the primary polling alone.
//
// Only at low depth: with several requests in flight the event loop is rarely idle for long, and
// polling would turn what idle time it has into CPU (measured at QD32: +7 µs per write when every
// reply polled; with this rule, 0.045 polling turns per write, counted). At QD1 an A/B measured the same CPU per I/O with 45% more
// IOPS (the polling replaces the wake-ups' own cost), though bench:mirror runs read 216-279 µs
// per write against 198-202 (docs/benchmarks.md, "Busy polling at low depth"). The same idea as
// Linux's socket busy poll (net.core.busy_poll) and guest halt polling, in the node.
// `busyPollUs: 0` turns it off, and so does `flush: disk` unless busyPollUs is set: there every
// FLUSH waits milliseconds on the disks, and the hardening after it needs the vCPU a polling
// primary holds (measured: the write after each FLUSH took 60-100 µs longer).

/** Replies in a row that must each leave their connection empty before the host counts as at low depth. */
const lowDepthReplies = 2;

/** The window, and whether the host is at low depth; one per process (every connection shares it). */
export class BusyPoll {
  private untilMs = 0;
  private polling = false;
  /** Replies in a row that left their connection empty, with no request queued behind another. */
  private idleReplies = 0;

  /** windowUs: how long to keep polling after the last activity; 0: never poll. */
  constructor(private readonly windowUs: number, private readonly nowMs: () => number = () => performance.now()) {
    if (!(windowUs >= 0)) throw new RangeError(`busy poll window must be 0 or more µs (got ${windowUs})`);
  }

  /**
   * A reply left its host connection with nothing in flight. Two such replies in a row, with no
   * request queued behind another between them, make low depth: at QD32 a reply empties its
   * connection now and then (2.6% of replies, counted), and a window opened on each of those
   * polled while fio gathered its next batch.
   */
  hostIdle(): void {
    this.idleReplies += 1;
    if (this.lowDepth) this.poll();
  }

  /** A host connection has more than one request in flight: not low depth, and an open window ends at its next turn. */
  hostQueued(): void {
    this.idleReplies = 0;
    this.untilMs = 0;
  }

  /** Frames left on a replication link: while the host is at low depth, poll for the answer. */
  linkSent(): void {
    if (this.lowDepth) this.poll();
  }

  private get lowDepth(): boolean {
    return this.idleReplies >= lowDepthReplies;
  }

  /** Whether a window is open now (tests). */
  get active(): boolean {
    return this.polling;
  }

  private poll(): void {
    if (this.windowUs === 0) return;
    this.untilMs = this.nowMs() + this.windowUs / 1000;
    if (this.polling) return;
    this.polling = true;
    setImmediate(this.step);
  }

  private readonly step = (): void => {
    if (this.nowMs() < this.untilMs) setImmediate(this.step);
    else this.polling = false;
  };
}

/** No polling: the default for servers and links not given one (tests, tools). */
export const noBusyPoll = new BusyPoll(0);
