import type { Handler } from './types.js';

/** The answer to a command the fleet sent (cmd topic): one cmd_results row keyed by the command id. */
export const handleCmdResult: Handler<'cmd/result'> = (ctx, deviceId, m, receivedAt) =>
  ctx.store.accept(
    { deviceId, seq: m.seq, receivedAt },
    { kind: 'cmd/result', result: { id: m.id, ok: m.ok, body: { result: m.result ?? null, error: m.error ?? null } } },
  );
