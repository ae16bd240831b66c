import type { DeviceRecord } from '../storage/fleet-store.js';

/** A device as the REST API shows it: its enrollment plus the summary of the last state it reported. */
export interface DeviceView {
  id: string;
  tags: Record<string, string>;
  online: boolean;
  revoked: boolean;
  enrolledAt: string;
  lastSeen: string | null;
  agentVersion: string | null;
  provider: string | null;
  models: { name: string; version: number; state: string }[];
  outbox: { rows: number; bytes: number; droppedTelemetry: number; deadLettered: number } | null;
}

/**
 * `reported` is a state message validated at ingest (shared StateMessageSchema), so its fields have the
 * documented types; the checks here only guard against a row written by an older schema.
 */
export function deviceView(d: DeviceRecord): DeviceView {
  const r = d.reported ?? {};
  const models = Array.isArray(r.models) ? (r.models as { name: string; version: number; state: string }[]) : [];
  const outbox = r.outbox as DeviceView['outbox'] | undefined;
  return {
    id: d.id,
    tags: d.tags,
    online: d.online && d.revokedAt === null,
    revoked: d.revokedAt !== null,
    enrolledAt: d.enrolledAt,
    lastSeen: d.lastSeen,
    agentVersion: typeof r.agentVersion === 'string' ? r.agentVersion : null,
    provider: typeof r.provider === 'string' ? r.provider : null,
    models: models.map((m) => ({ name: m.name, version: m.version, state: m.state })),
    outbox: outbox ? { rows: outbox.rows, bytes: outbox.bytes, droppedTelemetry: outbox.droppedTelemetry, deadLettered: outbox.deadLettered } : null,
  };
}

/** The single-device view adds the full last reported state (hardware, update machine, model errors). */
export function deviceDetail(d: DeviceRecord): DeviceView & { reported: Record<string, unknown> | null } {
  return { ...deviceView(d), reported: d.reported };
}
