import type { Handler } from './types.js';

/**
 * Reported state. Three forms (shared StateMessageSchema): the full report (online), a clean shutdown (offline,
 * with seq) and the broker's last will (offline, no seq). The last will was fixed at CONNECT time, so it has no
 * seq and is not a message to deduplicate: it only marks the device offline. The other two are stored once,
 * and only the highest-seq one decides online/reported (ingest-store.ts).
 */
export const handleState: Handler<'state'> = (ctx, deviceId, m, receivedAt) => {
  if (!('seq' in m)) {
    ctx.store.markOffline(deviceId);
    return 'offline';
  }
  return ctx.store.accept(
    { deviceId, seq: m.seq, receivedAt },
    // A shutdown keeps the last full report, so an offline device still shows what it runs.
    { kind: 'state', online: m.online, reported: m.online ? (m as Record<string, unknown>) : null },
  );
};
