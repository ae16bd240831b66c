/**
 * A child process for the crash and fsync-failure tests (transpiled by ts-child.ts, run with plain node).
 * It opens the agent database, then keeps queueing events and observing bursts of requests, closing a
 * telemetry window every `windowEveryMs`, and prints one JSON line per fact the parent checks afterwards:
 *   {"t":"ack","seq":S,"n":N}        event N was acknowledged durable under seq S
 *   {"t":"observed","burst":K}       burst K (requests labelled r<round>b<K>) was observed
 *   {"t":"durable","bursts":K}       a commit made every burst < K durable
 *   {"t":"window","seq":S}           a telemetry window was queued under seq S
 *   {"t":"rejected","n":N,"code":C}  event N was refused
 *   {"t":"alarm","message":M}        a commit failed
 * Lines are written with writeSync so that a line is in the pipe before anything that depends on it happens.
 */
import { writeSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { AgentConfigSchema } from '../../agent/src/config/schema.js';
import { createOutbox } from '../../agent/src/outbox/create-outbox.js';
import { createTelemetry } from '../../agent/src/telemetry/create-telemetry.js';
import { openDatabase } from '../../agent/src/storage/database.js';

export interface ChildConfig {
  dbFile: string;
  /** Labels and event bodies carry it, so the parent can tell runs on the same file apart. */
  round: number;
  eventsPerTick: number;
  /** Requests observed per burst; every request of burst K carries the class label r<round>b<K>. */
  burst: number;
  tickMs: number;
  windowEveryMs: number;
  /** Exit on its own after this many ticks (the parent normally kills it long before). */
  maxTicks: number;
  /** After an alarm: try a few more events (they must be refused), then exit 0. */
  exitAfterAlarm?: boolean;
}

function emit(fact: Record<string, unknown>): void {
  writeSync(1, `${JSON.stringify(fact)}\n`);
}

function main(cfg: ChildConfig): void {
  const db = openDatabase(cfg.dbFile);
  const write = (level: string) => (obj: unknown, msg?: string) => writeSync(2, `${JSON.stringify({ level, obj, msg })}\n`);
  const log = { error: write('error'), warn: write('warn'), info: () => undefined, debug: () => undefined } as unknown as Logger;
  const config = AgentConfigSchema.parse({ telemetry: { system: false } });
  const { outbox, committer } = createOutbox({ db, config: config.outbox, log });
  const telemetry = createTelemetry({ db, outbox, committer, config: { dataDir: path.dirname(cfg.dbFile), telemetry: config.telemetry }, log });

  let n = 0;
  let burst = 0;
  let ticks = 0;
  let alarm = false;
  // Observations are synchronous and a commit takes every pending delta, so after any commit all bursts so far are durable.
  committer.onCommit(() => emit({ t: 'durable', bursts: burst }));
  committer.onAlarm((message) => {
    alarm = true;
    emit({ t: 'alarm', message });
  });

  const enqueue = () => {
    const k = n++;
    outbox.enqueue({ kind: 'events', body: { ts: new Date().toISOString(), kind: 'test.tick', severity: 'info', message: `tick ${k}`, data: { round: cfg.round, n: k } } }).then(
      (r) => emit({ t: 'ack', seq: r.seq, n: k }),
      (e: { code?: string }) => emit({ t: 'rejected', n: k, code: e.code ?? String(e) }),
    );
  };

  const windows = setInterval(() => {
    telemetry.closeWindow().then(
      (r) => emit({ t: 'window', seq: r.seq }),
      (e: { code?: string }) => emit({ t: 'window-failed', code: e.code ?? String(e) }),
    );
  }, cfg.windowEveryMs);

  const tick = () => {
    if (alarm && cfg.exitAfterAlarm) {
      for (let i = 0; i < 3; i++) enqueue();
      clearInterval(windows);
      // Let the refusals print, then leave without another commit attempt.
      setImmediate(() => {
        db.close();
        process.exit(0);
      });
      return;
    }
    for (let i = 0; i < cfg.eventsPerTick; i++) enqueue();
    for (let j = 0; j < cfg.burst; j++) {
      telemetry.observer({ model: 'crash-model', version: 1, ok: j % 5 !== 4, latencyMs: 1 + j, queueMs: 0.5, batchSize: 1, scores: [0.55], classes: [`r${cfg.round}b${burst}`] });
    }
    if (cfg.burst > 0) emit({ t: 'observed', burst: burst++ });
    if (++ticks < cfg.maxTicks) setTimeout(tick, cfg.tickMs);
    else {
      clearInterval(windows);
      void outbox.close().then(() => {
        committer.close();
        db.close();
      });
    }
  };
  tick();
}

main(JSON.parse(process.argv[2] ?? '{}') as ChildConfig);
