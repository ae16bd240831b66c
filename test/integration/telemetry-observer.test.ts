/**
 * The inference service tells telemetry about every finished request: real onnxruntime sessions on the
 * generated demo models, real detect/classify/infer calls, and the aggregator + outbox on a real SQLite file.
 */
import { cpSync, readFileSync } from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../agent/src/config/load.js';
import { InferenceService } from '../../agent/src/inference/inference-service.js';
import { ModelManager } from '../../agent/src/inference/model-manager.js';
import { readRuntimeInfo, realHardwareProbe } from '../../agent/src/inference/providers.js';
import { createAgentMetrics } from '../../agent/src/metrics/agent-metrics.js';
import { AgentStateStore } from '../../agent/src/storage/agent-state.js';
import { createTelemetry, type Telemetry } from '../../agent/src/telemetry/create-telemetry.js';
import type { RequestObservation } from '../../agent/src/telemetry/types.js';
import { TelemetryMessageSchema } from '../../shared/src/mqtt/messages.js';
import { openOutbox, tempDir, type OutboxFixture } from '../helpers/outbox-db.js';
import { GENERATED_REPOSITORY, GENERATED_SAMPLES } from '../helpers/paths.js';

describe('inference requests feed telemetry', () => {
  let tmp: { dir: string; remove(): void };
  let f: OutboxFixture;
  let models: ModelManager;
  let service: InferenceService;
  let telemetry: Telemetry;
  const seen: RequestObservation[] = [];

  beforeAll(async () => {
    tmp = tempDir('outpost-observer-');
    const repository = path.join(tmp.dir, 'models');
    for (const m of ['demo-shapes', 'demo-color', 'simple']) cpSync(path.join(GENERATED_REPOSITORY, m), path.join(repository, m), { recursive: true });
    const config = loadConfig({ env: {}, flags: { dataDir: tmp.dir, modelRepository: repository, telemetry: { system: false } } });
    f = openOutbox(tmp.dir, { groupCommitMs: 20 });
    telemetry = createTelemetry({ db: f.db, outbox: f.outbox, committer: f.committer, config, log: f.log });
    const metrics = createAgentMetrics();
    const state = new AgentStateStore(f.db);
    const log = pino({ level: 'silent' });
    models = new ModelManager({ config, metrics, state, log, runtime: readRuntimeInfo(undefined), hardware: realHardwareProbe });
    await models.loadRepository();
    const observer = (r: RequestObservation) => {
      seen.push(r);
      telemetry.observer(r);
    };
    service = new InferenceService(metrics, state, config.limits, observer);
  });
  afterAll(async () => {
    await models?.close();
    await f?.shutdown();
    tmp?.remove();
  });

  it('reports a detection with its scores, labels, queue time and batch size', async () => {
    const image = readFileSync(path.join(GENERATED_SAMPLES, 'shapes.jpg'));
    const before = seen.length;
    const out = await service.detect(models.resolve('demo-shapes'), image);
    expect(out.detections.length).toBeGreaterThan(0);
    expect(seen.length - before).toBe(1);
    const r = seen.at(-1)!;
    expect(r).toMatchObject({ model: 'demo-shapes', version: 1, ok: true, batchSize: 1 });
    expect(r.scores).toEqual(out.detections.map((d) => d.score));
    expect(r.classes).toEqual(out.detections.map((d) => d.label));
    expect(r.latencyMs).toBeGreaterThan(0);
    expect(r.queueMs).toBeGreaterThanOrEqual(0);
  });

  it('reports the top-1 class of a classification, and a failed request as a failure', async () => {
    const image = readFileSync(path.join(GENERATED_SAMPLES, 'shapes.png'));
    const out = await service.classify(models.resolve('demo-color'), image);
    expect(seen.at(-1)).toMatchObject({ model: 'demo-color', ok: true, classes: [out.classes[0]!.label], scores: [out.classes[0]!.score] });

    // A detector asked to classify: refused, and counted once as a failure.
    const before = seen.length;
    await expect(service.classify(models.resolve('demo-shapes'), image)).rejects.toMatchObject({ code: 'AGENT_TASK_MISMATCH' });
    expect(seen.slice(before)).toEqual([expect.objectContaining({ model: 'demo-shapes', ok: false })]);
  });

  it('reports KServe tensor requests with their batch, and the window the fleet receives adds it all up', async () => {
    const served = models.resolve('simple');
    const ints = (k: number) => ({ kind: 'json' as const, values: Array.from({ length: 16 }, (_, i) => i + k) });
    await Promise.all([1, 2, 3].map((k) => service.infer(served, [{ name: 'INPUT0', datatype: 'INT32', shape: [1, 16], payload: ints(k) }, { name: 'INPUT1', datatype: 'INT32', shape: [1, 16], payload: ints(-k) }])));
    const simple = seen.filter((r) => r.model === 'simple');
    expect(simple).toHaveLength(3);
    expect(simple.every((r) => r.ok && (r.batchSize ?? 0) >= 1 && r.scores === undefined)).toBe(true);

    const { seq } = await telemetry.closeWindow();
    const row = f.outbox.next(0, 100).find((x) => x.seq === seq)!;
    const msg = TelemetryMessageSchema.parse({ v: 1, deviceId: 'box-1', seq, ...(JSON.parse(row.body) as object) });
    const count = (model: string) => msg.models.filter((m) => m.model === model).reduce((a, m) => a + m.requests, 0);
    const failures = (model: string) => msg.models.filter((m) => m.model === model).reduce((a, m) => a + m.failures, 0);
    for (const model of ['demo-shapes', 'demo-color', 'simple']) expect(count(model)).toBe(seen.filter((r) => r.model === model).length);
    expect(failures('demo-shapes')).toBe(1);
    const shapes = msg.models.find((m) => m.model === 'demo-shapes')!;
    expect(shapes.scoreBins.reduce((a, b) => a + b, 0)).toBe(seen.filter((r) => r.model === 'demo-shapes').reduce((a, r) => a + (r.scores?.length ?? 0), 0));
  });
});
