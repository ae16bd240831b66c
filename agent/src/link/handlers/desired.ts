import type { DesiredMessage } from '../../../../shared/src/mqtt/messages.js';
import type { HandlerContext } from './index.js';

/**
 * Desired state (retained, QoS 1). The broker hands the retained copy over on every (re)subscribe and may
 * redeliver it, so only a revision newer than the one held counts as a change. The update machine (a later
 * issue) consumes it through the link's 'desired' event; the link only keeps the latest one.
 */
export function handleDesired(ctx: HandlerContext, message: DesiredMessage): void {
  const held = ctx.desired?.revision ?? 0;
  if (message.revision <= held) {
    ctx.log.debug({ revision: message.revision, held }, 'desired state already known; ignored');
    return;
  }
  ctx.log.info({ revision: message.revision, models: message.models.map((m) => `${m.name}@${m.version}`) }, 'desired state received');
  ctx.onDesired(message);
}
