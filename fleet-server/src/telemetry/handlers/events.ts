import { canonicalIso } from '../../storage/clock.js';
import type { Handler } from './types.js';

/** An agent event (update transition, model failure, outbox drop …): one events row. */
export const handleEvent: Handler<'events'> = (ctx, deviceId, m, receivedAt) =>
  ctx.store.accept(
    { deviceId, seq: m.seq, receivedAt },
    { kind: 'events', event: { ts: canonicalIso(m.ts), kind: m.kind, severity: m.severity, message: m.message, data: m.data } },
  );
