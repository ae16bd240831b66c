import { EventEmitter } from 'node:events';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import type { DesiredMessage, RejectReason } from '../../../shared/src/mqtt/messages.js';
import { topicFor } from '../../../shared/src/mqtt/topics.js';
import type { AgentConfig } from '../config/schema.js';
import type { Outbox } from '../outbox/types.js';
import { Backoff, sleep } from './backoff.js';
import type { Credentials } from './credentials.js';
import { Drainer } from './drain.js';
import { RecentIds } from './handlers/cmd.js';
import { dispatch, type CommandRunner, type HandlerContext } from './handlers/index.js';
import { mqttClientOptions } from './client-options.js';
import type { ConnectedInfo, DisconnectCause, DisconnectedInfo, LinkEvents, LinkState, LinkStatus, ReportedState } from './types.js';
import { SilenceWatchdog } from './watchdog.js';

export type { ConnectedInfo, DisconnectCause, DisconnectedInfo, LinkEvents, LinkState, LinkStatus, ReportedState };

export interface FleetLinkOptions {
  credentials: Pick<Credentials, 'deviceId' | 'secret' | 'mqttUrl'>;
  fleet: AgentConfig['fleet'];
  /** config.outbox.maxAttempts (dead-lettering bound). */
  maxAttempts: number;
  outbox: Outbox;
  log: Logger;
  reportState: () => ReportedState;
  /** Counted rejections of incoming messages (outpost_link_rejected_messages_total). */
  onRejected?: (kind: string, reason: RejectReason) => void;
  /** Uniform [0, 1) for the backoff jitter. */
  random?: () => number;
  /** Runs rollback / reload / diagnostics commands (the update machine). */
  runCommand?: CommandRunner;
  /** Seam for tests; the real one is mqtt.connect. */
  connect?: (url: string, options: IClientOptions) => MqttClient;
}

/** Longest time stop() spends draining the shutdown state before it closes the connection, ms. */
const SHUTDOWN_DRAIN_MS = 1000;

/**
 * The agent's MQTT link to the fleet (DESIGN §3.5, §5): MQTT 3.1.1, persistent session, QoS 1, last will on
 * its own retained state topic, and its own reconnect loop (mqtt.js' is off, reconnectPeriod 0) with
 * jittered exponential backoff. It publishes only what the outbox holds (see drain.ts) — the will is the
 * one exception — and hands valid incoming messages to the dispatch table in handlers/.
 */
export class FleetLink extends EventEmitter<LinkEvents> {
  private readonly log: Logger;
  private readonly deviceId: string;
  private readonly backoff: Backoff;
  private readonly drainer: Drainer;
  private readonly handlerContext: HandlerContext;
  private readonly abort = new AbortController();
  private state: LinkState = 'disconnected';
  private client: MqttClient | undefined;
  private connectedSince: Date | null = null;
  private lastError: string | null = null;
  private lastLostAt: number | null = null;
  private connections = 0;
  private loop: Promise<void> | undefined;
  private stopping = false;

  constructor(private readonly options: FleetLinkOptions) {
    super();
    this.deviceId = options.credentials.deviceId;
    this.log = options.log.child({ component: 'fleet-link', deviceId: this.deviceId });
    this.backoff = new Backoff({ minMs: options.fleet.reconnectMinMs, maxMs: options.fleet.reconnectMaxMs, random: options.random });
    this.drainer = new Drainer({ outbox: options.outbox, deviceId: this.deviceId, inflightWindow: options.fleet.inflightWindow, maxAttempts: options.maxAttempts, log: this.log });
    this.handlerContext = {
      deviceId: this.deviceId,
      log: this.log,
      enqueue: (message) => options.outbox.enqueue(message),
      desired: undefined,
      onDesired: (message) => {
        this.handlerContext.desired = message;
        this.emit('desired', message);
      },
      recentCmds: new RecentIds(),
      ...(options.runCommand ? { runCommand: options.runCommand } : {}),
    };
  }

  status(): LinkStatus {
    return {
      state: this.state,
      mqttUrl: this.options.credentials.mqttUrl,
      connectedSince: this.connectedSince?.toISOString() ?? null,
      lastError: this.lastError,
      reconnects: Math.max(0, this.connections - 1),
      desiredRevision: this.handlerContext.desired?.revision ?? null,
    };
  }

  /** The latest desired state received (newest revision), if any. */
  get desired(): DesiredMessage | undefined {
    return this.handlerContext.desired;
  }

  get connected(): boolean {
    return this.state === 'connected';
  }

  /** Queues a fresh reported state now (e.g. after the models finished loading); the next connect does it anyway. */
  refreshState(): void {
    if (this.state === 'connected') this.enqueueState();
  }

  /** Starts the connect loop; returns at once (the first attempt runs in the background). */
  start(): void {
    if (this.loop || this.stopping) return;
    this.loop = this.run().catch((err: unknown) => {
      // The loop handles its own errors; reaching this is a bug, and the agent keeps serving without a link.
      this.lastError = `link loop failed: ${(err as Error).message}`;
      this.log.error({ err: (err as Error).message }, 'fleet link loop stopped unexpectedly');
    });
  }

  /**
   * Graceful stop: queue state {online:false, reason:'shutdown'}, drain for at most 1 s, then close. When
   * everything was acknowledged the client sends DISCONNECT (no will); otherwise the socket is dropped
   * and the broker publishes the will, so the fleet still learns the box went away.
   */
  async stop(): Promise<void> {
    if (this.stopping) return this.loop;
    this.stopping = true;
    const deadline = Date.now() + SHUTDOWN_DRAIN_MS;
    const client = this.client;
    if (client && this.state === 'connected') {
      const queued = this.options.outbox
        .enqueue({ kind: 'state', retain: true, body: { ts: new Date().toISOString(), online: false, reason: 'shutdown' } })
        .then(() => true, (err: unknown) => {
          this.log.warn({ err: (err as Error).message }, 'cannot queue the shutdown state');
          return false;
        });
      const giveUp = new AbortController();
      const committed = await Promise.race([queued, sleep(Math.max(0, deadline - Date.now()), giveUp.signal).then(() => false)]);
      giveUp.abort();
      const drained = committed && (await this.drainer.whenIdle(Math.max(0, deadline - Date.now())));
      this.closeClient(client, drained);
    } else if (client) {
      this.closeClient(client, false);
    }
    this.abort.abort();
    await this.loop;
    this.drainer.dispose();
    this.state = 'stopped';
  }

  private async run(): Promise<void> {
    for (let attempt = 0; !this.stopping; attempt++) {
      if (attempt > 0) {
        const delayMs = this.backoff.next();
        this.log.debug({ delayMs, attempt: this.backoff.attempts }, 'reconnecting after backoff');
        await sleep(delayMs, this.abort.signal);
        if (this.stopping) break;
      }
      await this.connectOnce();
    }
  }

  /** One connection attempt; resolves when it failed or, once up, when it closed. */
  private connectOnce(): Promise<void> {
    const { fleet, credentials } = this.options;
    const connect = this.options.connect ?? mqtt.connect;
    this.state = 'connecting';
    return new Promise((resolve) => {
      let upAt: number | null = null;
      let closed = false;
      /** What ended the connection from this side, if anything did before 'close' (see DisconnectCause). */
      let localCause: DisconnectCause | undefined;
      const url = credentials.mqttUrl;
      let client: MqttClient;
      try {
        client = connect(url, mqttClientOptions(credentials, fleet));
      } catch (err) {
        // A bad URL or an unreadable caFile: counted as a failed attempt, retried with backoff (the file may appear).
        this.lastError = `cannot start a connection to ${url}: ${(err as Error).message}`;
        this.log.error({ err: (err as Error).message }, 'fleet connection attempt failed');
        this.state = 'disconnected';
        return resolve();
      }
      this.client = client;
      const watchdog = new SilenceWatchdog(fleet.keepaliveSeconds * 1500, (silentMs) => {
        this.lastError = `no packet from the broker for ${silentMs} ms (> 1.5 × keepalive): half-open link, reconnecting`;
        this.log.warn({ silentMs }, 'fleet link silent; dropping the connection');
        localCause ??= 'watchdog';
        this.closeClient(client, false);
      });
      client.on('packetreceive', () => watchdog.packet());
      let attemptFailed = false;
      client.on('error', (err) => {
        // mqtt.js emits the cause (refused, TLS, connack timeout, bad credentials); 'close' follows.
        attemptFailed = true;
        this.lastError = err.message;
        // Any error before the close means the broker did not simply hang up (mqtt.js gives the keepalive
        // timeout no code; its text only picks the label, the poison rule treats all of these alike).
        const code = (err as { code?: unknown }).code;
        localCause ??= typeof code === 'string' ? 'socket-error' : err.message === 'Keepalive timeout' ? 'keepalive-timeout' : 'client-error';
        this.log.warn({ err: err.message, code }, upAt === null ? 'fleet connection attempt failed' : 'fleet link error');
      });
      client.on('message', (topic, payload) => {
        if (client !== this.client || this.stopping) return;
        this.onMessage(topic, payload);
      });
      client.on('connect', (connack) => {
        upAt = Date.now();
        watchdog.start();
        this.onUp(client, connack.sessionPresent);
      });
      client.on('close', () => {
        if (closed) return;
        closed = true;
        watchdog.stop();
        if (upAt !== null) {
          // A connection that stayed up a keepalive period proves the broker takes us: start backoff over.
          if (Date.now() - upAt >= fleet.keepaliveSeconds * 1000) this.backoff.reset();
          this.onDown(this.stopping ? 'stopped' : (localCause ?? 'closed-by-peer'));
        } else if (!this.stopping) {
          this.state = 'disconnected';
          // A peer that accepts TCP and hangs up (a proxy, a broker shutting down) gives mqtt.js no error to emit.
          if (!attemptFailed) this.lastError = 'connection closed before CONNACK';
        }
        // Make sure nothing of this client lingers (its own reconnect is off; this frees its timers).
        client.end(true);
        if (this.client === client) this.client = undefined;
        resolve();
      });
    });
  }

  private onUp(client: MqttClient, sessionPresent: boolean): void {
    this.connections++;
    const reconnect = this.connections > 1;
    const outageMs = reconnect && this.lastLostAt !== null ? Date.now() - this.lastLostAt : null;
    this.state = 'connected';
    this.connectedSince = new Date();
    this.lastError = null;
    this.log.info({ sessionPresent, reconnect, outageMs, probing: this.drainer.probing }, 'fleet link connected');
    const topics = [topicFor(this.deviceId, 'desired'), topicFor(this.deviceId, 'cmd')];
    client.subscribe(topics, { qos: 1 }, (err, granted) => {
      const refused = (granted ?? []).filter((g) => g.qos === 128).map((g) => g.topic);
      if (err || refused.length > 0) {
        this.lastError = err ? `subscribe failed: ${err.message}` : `broker refused subscriptions: ${refused.join(', ')}`;
        this.log.error({ err: err?.message, refused }, 'cannot subscribe to desired/cmd');
      }
    });
    // A fresh retained state on every connection; queued like everything else (it reaches the fleet in seq order).
    this.enqueueState();
    this.drainer.attach(client);
    this.emit('connected', { reconnect, outageMs, sessionPresent });
  }

  private onDown(cause: DisconnectCause): void {
    const involuntary = cause !== 'stopped';
    const reason = involuntary ? (this.lastError ?? 'connection closed by the broker') : 'stopped';
    if (involuntary) this.lastError = reason;
    this.drainer.detach(cause, reason);
    this.state = this.stopping ? 'stopped' : 'disconnected';
    this.connectedSince = null;
    this.lastLostAt = Date.now();
    this.log.info({ reason, involuntary, cause }, 'fleet link disconnected');
    this.emit('disconnected', { reason, involuntary, cause });
  }

  private enqueueState(): void {
    let body: Record<string, unknown>;
    try {
      const s = this.options.outbox.stats();
      body = { ts: new Date().toISOString(), online: true, update: {}, ...this.options.reportState(), outbox: { rows: s.rows, bytes: s.bytes, droppedTelemetry: s.droppedTelemetry, deadLettered: s.deadLettered } };
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'cannot build the reported state');
      return;
    }
    this.options.outbox.enqueue({ kind: 'state', retain: true, body }).catch((err: unknown) => {
      this.log.warn({ err: (err as Error).message }, 'cannot queue the reported state');
    });
  }

  private onMessage(topic: string, payload: Buffer): void {
    const r = dispatch(this.handlerContext, topic, payload);
    if (r.ok) return;
    this.options.onRejected?.(r.kind, r.reason);
    this.log.warn({ topic, kind: r.kind, reason: r.reason, detail: r.detail }, 'rejected a message from the fleet');
  }

  /** graceful: send DISCONNECT (the broker discards the will); otherwise drop the socket at once. */
  private closeClient(client: MqttClient, graceful: boolean): void {
    if (graceful && client.connected) {
      client.end(false);
      // end(false) waits for mqtt.js' own unacknowledged packets; never let that hold the stop up.
      setTimeout(() => client.stream?.destroy(), 200).unref();
      return;
    }
    client.end(true);
    client.stream?.destroy();
  }
}
