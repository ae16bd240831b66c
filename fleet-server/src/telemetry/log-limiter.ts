import type { Logger } from 'pino';
import type { Clock } from '../storage/clock.js';

/**
 * Logs at most once per key per interval and says how many were suppressed in between, so a device
 * flooding garbage cannot flood the log (the counters still count every message).
 */
export function rateLimitedLog(log: Logger, clock: Clock, intervalMs = 10_000): (level: 'warn' | 'error', key: string, fields: Record<string, unknown>, message: string) => void {
  const windows = new Map<string, { since: number; suppressed: number }>();
  return (level, key, fields, message) => {
    const now = clock.now();
    const w = windows.get(key);
    if (w && now - w.since < intervalMs) {
      w.suppressed++;
      return;
    }
    log[level]({ ...fields, suppressedSinceLast: w?.suppressed ?? 0 }, message);
    // Keys are (kind, reason) pairs, a few dozen; the clear only guards against a caller keying by device.
    if (windows.size > 10_000) windows.clear();
    windows.set(key, { since: now, suppressed: 0 });
  };
}
