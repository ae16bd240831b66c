import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { CmdMessageSchema, PROTOCOL_VERSION, type CmdMessage } from '../../../shared/src/mqtt/messages.js';
import { topicFor } from '../../../shared/src/mqtt/topics.js';
import type { Db } from '../../../shared/src/sqlite.js';
import type { FleetClient } from '../broker/types.js';
import { fail } from '../errors.js';
import type { FleetMetrics } from '../metrics/fleet-metrics.js';
import { isoAt, type Clock } from '../storage/clock.js';
import type { DeviceStore } from '../storage/fleet-store.js';

export type CommandKind = CmdMessage['kind'];
export type CommandState = 'sent' | 'ok' | 'failed' | 'timed_out';

/** A command as the REST API shows it. `result`/`error` come from the device's cmd/result (or the fleet: timeout, publish failure). */
export interface CommandView {
  id: string;
  deviceId: string;
  kind: CommandKind;
  args: Record<string, unknown>;
  state: CommandState;
  result: Record<string, unknown> | null;
  error: { code: string; message: string } | null;
  createdAt: string;
  /** When an unanswered command becomes timed_out. */
  deadline: string;
  finishedAt: string | null;
}

interface CommandRow {
  id: string;
  device_id: string;
  kind: string;
  args: string;
  state: string;
  created_at: string;
  deadline: string;
  finished_at: string | null;
  result: string | null;
}

function toView(r: CommandRow): CommandView {
  const body = r.result === null ? {} : (JSON.parse(r.result) as { result?: Record<string, unknown> | null; error?: { code: string; message: string } | null });
  return {
    id: r.id, deviceId: r.device_id, kind: r.kind as CommandKind, args: JSON.parse(r.args) as Record<string, unknown>,
    state: r.state as CommandState, result: body.result ?? null, error: body.error ?? null,
    createdAt: r.created_at, deadline: r.deadline, finishedAt: r.finished_at,
  };
}

export interface CommandsDeps {
  db: Db;
  devices: DeviceStore;
  client(): FleetClient | undefined;
  clock: Clock;
  metrics: FleetMetrics;
  log: Logger;
  /** Default answer time when the request gives none, ms. */
  defaultTimeoutMs: number;
}

/**
 * Commands to one device over outpost/v1/{id}/cmd (QoS 1, not retained: a command is meant for now, not for
 * whenever the device next connects). The row is written before the publish; the device's cmd/result ingest
 * finishes it (storage/ingest-store.ts, same transaction as the result); a timer marks it timed_out at its
 * deadline, and start() sweeps the ones whose deadline passed while the fleet was down.
 */
export interface Commands {
  send(deviceId: string, input: { kind: CommandKind; args?: Record<string, unknown>; timeoutMs?: number }): CommandView;
  get(deviceId: string, id: string): CommandView | undefined;
  /** Newest first. */
  list(deviceId: string, limit?: number): CommandView[];
  /** Marks every command past its deadline timed_out; returns how many. */
  sweep(): number;
  start(): void;
  stop(): void;
}

export function createCommands(deps: CommandsDeps): Commands {
  const { db, devices, clock, metrics } = deps;
  const log = deps.log.child({ component: 'commands' });
  const insert = db.prepare("INSERT INTO commands (id, device_id, kind, args, state, created_at, deadline) VALUES (?, ?, ?, ?, 'sent', ?, ?)");
  const selectOne = db.prepare<[string, string], CommandRow>('SELECT * FROM commands WHERE id = ? AND device_id = ?');
  const selectByDevice = db.prepare<[string, number], CommandRow>('SELECT * FROM commands WHERE device_id = ? ORDER BY created_at DESC, id DESC LIMIT ?');
  const selectOpen = db.prepare<[], { id: string; deadline: string }>("SELECT id, deadline FROM commands WHERE state = 'sent'");
  const finish = db.prepare("UPDATE commands SET state = ?, result = ?, finished_at = ? WHERE id = ? AND state = 'sent'");
  const timers = new Map<string, NodeJS.Timeout>();
  let stopped = false;

  function finishUnanswered(id: string, state: 'failed' | 'timed_out', error: { code: string; message: string }): boolean {
    if (stopped) return false;
    timers.delete(id);
    return finish.run(state, JSON.stringify({ result: null, error }), isoAt(clock.now()), id).changes > 0;
  }

  function arm(id: string, delayMs: number): void {
    const timer = setTimeout(() => {
      if (finishUnanswered(id, 'timed_out', { code: 'TIMEOUT', message: 'the device did not answer before the deadline' })) log.info({ id }, 'command timed out');
    }, Math.max(0, delayMs));
    timer.unref();
    timers.set(id, timer);
  }

  return {
    send(deviceId, input) {
      const device = devices.get(deviceId);
      if (!device) throw fail('FLEET_NOT_FOUND', `no device ${deviceId}`);
      if (device.revokedAt !== null) throw fail('FLEET_DEVICE_REVOKED', `device ${deviceId} is revoked`);
      const client = deps.client();
      if (!client || stopped) throw fail('FLEET_UNAVAILABLE', 'the fleet MQTT client is not running');
      const now = clock.now();
      const timeoutMs = input.timeoutMs ?? deps.defaultTimeoutMs;
      const cmd = CmdMessageSchema.parse({ v: PROTOCOL_VERSION, id: `cmd-${randomBytes(8).toString('hex')}`, ts: isoAt(now), kind: input.kind, args: input.args ?? {}, timeoutMs });
      insert.run(cmd.id, deviceId, cmd.kind, JSON.stringify(cmd.args), isoAt(now), isoAt(now + timeoutMs));
      arm(cmd.id, timeoutMs);
      metrics.commandsSent.inc({ kind: cmd.kind });
      client.publish(topicFor(deviceId, 'cmd'), JSON.stringify(cmd), { retain: false }).catch((err: unknown) => {
        log.warn({ id: cmd.id, deviceId, err: (err as Error).message }, 'publishing a command failed');
        clearTimeout(timers.get(cmd.id));
        finishUnanswered(cmd.id, 'failed', { code: 'PUBLISH_FAILED', message: `the command could not be published: ${(err as Error).message}`.slice(0, 2000) });
      });
      return toView(selectOne.get(cmd.id, deviceId)!);
    },
    get(deviceId, id) {
      const row = selectOne.get(id, deviceId);
      return row && toView(row);
    },
    list: (deviceId, limit = 100) => selectByDevice.all(deviceId, limit).map(toView),
    sweep() {
      const now = isoAt(clock.now());
      let n = 0;
      for (const c of selectOpen.all()) {
        if (c.deadline <= now && finishUnanswered(c.id, 'timed_out', { code: 'TIMEOUT', message: 'the device did not answer before the deadline' })) n++;
      }
      return n;
    },
    start() {
      // Commands still open from before a restart: timed out now, or armed for the rest of their time.
      const now = clock.now();
      for (const c of selectOpen.all()) {
        if (!timers.has(c.id)) arm(c.id, Date.parse(c.deadline) - now);
      }
    },
    stop() {
      stopped = true;
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
    },
  };
}
