/**
 * Half-open link detection (research §5.2 N4): a TCP connection whose peer vanished (cable pulled, NAT
 * entry expired, broker frozen) keeps looking healthy to the sender until TCP gives up, which takes
 * minutes. mqtt.js 5.16 sends PINGREQ after `keepalive` and gives up 1.5 × keepalive after the last
 * acknowledgement it *received*, but its timer is re-armed only by acks and PINGRESP. This watchdog is the
 * contract the link promises independently of the client library's version: if NO packet of any kind has
 * arrived for `silenceMs` (1.5 × keepalive), `onSilent` ends the connection. A healthy idle link never trips
 * it, because the client's PINGREQ at 1 × keepalive is answered well inside the limit.
 */
export class SilenceWatchdog {
  private lastPacketAt = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly silenceMs: number,
    private readonly onSilent: (silentForMs: number) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** Starts watching (call when the connection comes up: CONNACK counts as the first packet). */
  start(): void {
    this.lastPacketAt = this.now();
    this.arm(this.silenceMs);
  }

  /** Any packet from the broker. Cheap: only a timestamp; the timer re-arms itself lazily. */
  packet(): void {
    this.lastPacketAt = this.now();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(ms: number): void {
    this.stop();
    this.timer = setTimeout(() => this.check(), Math.max(1, ms));
    this.timer.unref();
  }

  private check(): void {
    this.timer = undefined;
    const silent = this.now() - this.lastPacketAt;
    if (silent >= this.silenceMs) {
      this.onSilent(silent);
      return;
    }
    // A packet came in meanwhile: sleep exactly until the earliest moment the link could be silent for too long.
    this.arm(this.silenceMs - silent);
  }
}
