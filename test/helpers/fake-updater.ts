import { openAsBlob, readFileSync } from 'node:fs';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import { DesiredMessageSchema, type DesiredMessage, type DesiredModel, type UpdateState } from '../../shared/src/mqtt/messages.js';
import { topicFor } from '../../shared/src/mqtt/topics.js';
import { deploymentStatement, manifestDigest, verifyStatement } from '../../shared/src/signing.js';
import { connectDevice, type EnrolledDevice, type RunningFleet } from './fleet.js';
import { GENERATED_REPOSITORY } from './paths.js';

/**
 * A device that plays the agent's update side over raw mqtt.js, for fleet tests: it subscribes to its
 * retained desired state, verifies every entry's signature with the fleet key it got at enrollment (as the
 * agent does: deploymentStatement for its own id), and answers with `update.transition` events carrying
 * increasing seqs. `auto` walks each new entry to committed (or, `fail`, to failed before activation) by
 * itself; `manual` only records, and the test drives it with step().
 */
export type Behavior = 'commit' | 'fail' | 'manual';

const PATH_TO_COMMIT: UpdateState[] = ['downloading', 'verifying', 'staging', 'activating', 'probation', 'committed'];
const PATH_TO_FAIL: UpdateState[] = ['downloading', 'verifying', 'failed'];

export class FakeUpdater {
  readonly received: DesiredMessage[] = [];
  /** Entries whose signature did not verify (the fleet signed for another device, or a field changed). */
  readonly badSignatures: DesiredModel[] = [];
  /** model → version it serves (reported as active in its state). */
  readonly running = new Map<string, number>();
  /** model → its last update state, per version being installed. */
  private readonly updateState = new Map<string, UpdateState>();
  private seq = 0;
  private chain: Promise<void> = Promise.resolve();
  client: MqttClient | undefined;

  constructor(
    readonly mqttUrl: string,
    readonly device: EnrolledDevice,
    public behavior: Behavior = 'manual',
    running: Record<string, number> = {},
  ) {
    for (const [m, v] of Object.entries(running)) this.running.set(m, v);
  }

  get id(): string {
    return this.device.deviceId;
  }

  /** Connects, reports its state, then subscribes to desired (the retained message arrives right away if any). */
  async connect(mqttUrl = this.mqttUrl): Promise<void> {
    this.client = await connectDevice(mqttUrl, this.device);
    this.client.on('message', (topic, payload) => {
      if (topic === topicFor(this.id, 'desired')) this.enqueue(() => this.onDesired(payload));
    });
    await this.publishState();
    await this.client.subscribeAsync(topicFor(this.id, 'desired'), { qos: 1 });
  }

  async close(): Promise<void> {
    await this.chain.catch(() => undefined);
    this.client?.end(true);
    this.client = undefined;
  }

  last(): DesiredMessage | undefined {
    return this.received.at(-1);
  }

  entry(model: string): DesiredModel | undefined {
    return this.last()?.models.find((m) => m.name === model);
  }

  /** Waits for all queued reactions (desired handling, auto transitions) to finish. */
  settled(): Promise<void> {
    return this.chain;
  }

  /** Walks `model` to the version its desired entry names, to `outcome` (manual devices: the test calls this). */
  walk(model: string, outcome: 'commit' | 'fail' = 'commit'): Promise<void> {
    return this.enqueue(async () => {
      const e = this.entry(model);
      if (!e) throw new Error(`${this.id} has no desired entry for ${model}`);
      for (const to of outcome === 'commit' ? PATH_TO_COMMIT : PATH_TO_FAIL) await this.transition(e, to);
    });
  }

  /** Publishes one transition of the entry's version from the model's current update state to `to`. */
  async transition(e: DesiredModel, to: UpdateState): Promise<void> {
    const from = this.updateState.get(e.name) ?? 'idle';
    const previousVersion = this.running.get(e.name) ?? null;
    const failed = to === 'failed' || to === 'rolled_back';
    await this.publish('events', {
      kind: 'update.transition', severity: failed ? 'warn' : 'info', message: `${e.name}@${e.version}: ${from} -> ${to}`,
      data: {
        model: e.name, version: e.version, previousVersion: previousVersion === e.version ? null : previousVersion, from, to, deployment: e.deployment,
        rollout: e.rollout, reason: failed ? 'SHA256_MISMATCH' : null, detail: failed ? 'artifact hash differs from the signed one' : null,
      },
    });
    this.updateState.set(e.name, to === 'committed' || failed ? 'idle' : to);
    if (to === 'committed') {
      this.running.set(e.name, e.version);
      await this.publishState();
    }
  }

  async publishState(): Promise<void> {
    await this.publish('state', {
      online: true, agentVersion: 'fake-1', startedAt: new Date().toISOString(), provider: 'cpu',
      models: [...this.running].map(([name, version]) => ({ name, version, state: 'active', provider: 'cpu', error: null })),
      outbox: { rows: 0, bytes: 0, droppedTelemetry: 0, deadLettered: 0 }, hardware: {}, update: {},
    });
  }

  /** Publishes an agent message with the next seq (the envelope v/deviceId/seq/ts is added). */
  async publish(kind: 'state' | 'events' | 'cmd/result', body: Record<string, unknown>): Promise<void> {
    if (!this.client) throw new Error(`${this.id} is not connected`);
    const message = { v: 1, deviceId: this.id, seq: ++this.seq, ts: new Date().toISOString(), ...body };
    await this.client.publishAsync(topicFor(this.id, kind), JSON.stringify(message), { qos: 1, retain: kind === 'state' });
  }

  private enqueue(task: () => Promise<void>): Promise<void> {
    const next = this.chain.then(task);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async onDesired(payload: Buffer): Promise<void> {
    const msg = DesiredMessageSchema.parse(JSON.parse(payload.toString('utf8')));
    for (const e of msg.models) {
      const stmt = deploymentStatement({
        device: this.id, name: e.name, version: e.version, sha256: e.sha256, size: e.size, manifestSha256: manifestDigest(e.manifest),
        deployment: e.deployment, expires: e.expires, remove: e.remove,
      });
      if (!verifyStatement(this.device.fleetPublicKey, stmt, e.signature)) this.badSignatures.push(e);
    }
    this.received.push(msg);
    if (this.behavior === 'manual') return;
    for (const e of msg.models) {
      if (e.remove) {
        // A signed removal, as the agent handles it: the model goes, and the new state says so.
        if (this.running.delete(e.name)) await this.publishState();
        continue;
      }
      if (this.running.get(e.name) === e.version) continue;
      for (const to of this.behavior === 'commit' ? PATH_TO_COMMIT : PATH_TO_FAIL) await this.transition(e, to);
    }
  }
}

/** Pushes a generated model version (test/.generated/repository/<name>/<version>) with its manifest into the fleet's registry. */
export async function pushModel(f: RunningFleet, name: string, version: number): Promise<void> {
  const dir = path.join(GENERATED_REPOSITORY, name, String(version));
  const form = new FormData();
  form.append('manifest', readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  form.append('artifact', await openAsBlob(path.join(dir, 'model.onnx')), 'model.onnx');
  const res = await fetch(`${f.httpUrl}/api/v1/models/${name}/versions/${version}`, { method: 'POST', body: form, headers: { authorization: `Bearer ${f.adminToken}` } });
  if (res.status !== 201) throw new Error(`pushing ${name}@${version} answered ${res.status}: ${await res.text()}`);
}
