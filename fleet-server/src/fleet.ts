import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { createDeviceAuthority } from './auth/device-authority.js';
import { ensureAdminToken } from './auth/operator-tokens.js';
import { createAuth } from './auth/principal.js';
import { loadOrCreateSigningKey, type SigningKey } from './auth/signing-key.js';
import { startEmbeddedBroker } from './broker/embedded.js';
import { externalBroker } from './broker/external.js';
import { connectFleetClient } from './broker/fleet-client.js';
import { FLEET_USERNAME, type FleetBroker, type FleetClient } from './broker/types.js';
import type { FleetConfig } from './config/schema.js';
import { createCommands, type Commands } from './deploy/commands.js';
import { createDeployer, type Deployer } from './deploy/deployer.js';
import { createMaintenanceWindows, type MaintenanceWindows } from './deploy/maintenance.js';
import { registerDeployRoutes } from './deploy/routes.js';
import { brokerConnections } from './devices/connections.js';
import { Enrollment } from './devices/enrollment.js';
import { fail } from './errors.js';
import { buildHttpServer } from './http/server.js';
import { brokerMetricsOf, createFleetMetrics, type FleetMetrics } from './metrics/fleet-metrics.js';
import { registerRegistryRoutes } from './registry/routes.js';
import { createRolloutEngine, type RolloutEngine } from './rollouts/engine.js';
import { registerRolloutRoutes } from './rollouts/routes.js';
import { systemClock, type Clock } from './storage/clock.js';
import { openFleetStore, type FleetStore } from './storage/fleet-store.js';
import { batchedIngest } from './telemetry/batched-ingest.js';
import { createIngest, type IngestHandler } from './telemetry/ingest.js';
import { createRetention, type Retention } from './telemetry/retention.js';
import { FLEET_VERSION } from './version.js';

/** Seams a test or an embedding may replace; each has a real default. */
export interface FleetDeps {
  log?: Logger;
  /** Time for token expiry, ingest stamps and retention (default: the system clock). */
  clock?: Clock;
}

export interface FleetUrls {
  /** REST base URL devices and operators are told (http.publicUrl or derived from the listening port). */
  httpUrl: string;
  /** MQTT URL devices are told (broker.publicUrl or derived from the listening port). */
  mqttUrl: string;
}

export interface Fleet {
  readonly config: FleetConfig;
  readonly store: FleetStore;
  readonly metrics: FleetMetrics;
  readonly http: FastifyInstance;
  readonly signingKey: SigningKey;
  readonly retention: Retention;
  /** Where the first operator token was written (it may since have been moved or deleted by the operator). */
  readonly adminTokenFile: string;
  /** True when this start created the first operator token (main prints where it is). */
  readonly adminTokenCreated: boolean;
  /** The ingest entry point (embedded broker: its authorizePublish hook; external: the fleet's MQTT client); exposed for tests and tools. */
  readonly ingest: IngestHandler;
  /** Desired state per device: signs, stores and publishes (retained) what each device should run. */
  readonly deployer: Deployer;
  /** The rollout engine (staged rollouts, halts and rollbacks). */
  readonly rollouts: RolloutEngine;
  /** Commands to devices over their cmd topic. */
  readonly commands: Commands;
  readonly maintenance: MaintenanceWindows;
  /** The broker, once started. */
  broker(): FleetBroker | undefined;
  /** Starts the broker, the fleet's MQTT client and HTTP, in that order; resolves with the URLs. */
  start(): Promise<FleetUrls>;
  /**
   * Stops HTTP (in-flight requests get HTTP_CLOSE_DEADLINE_MS), then the device connections, the fleet's own
   * client, the broker and the store; safe to call twice or after a failed start.
   */
  stop(): Promise<void>;
}

/**
 * The composition root of the fleet server: storage, keys and tokens, metrics, ingest, enrollment, REST
 * (with the registry) and, at start(), the broker and the fleet's own MQTT client. Only start() opens ports.
 */
export async function createFleet(config: FleetConfig, deps: FleetDeps = {}): Promise<Fleet> {
  const log = deps.log ?? pino({ level: config.log.level, base: { service: 'outpost-fleet' } });
  const clock = deps.clock ?? systemClock;
  // Owner-only when we create it: it holds the signing key, the admin token and hashed device secrets.
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const store = openFleetStore(config.dataDir);
  try {
    const signingKey = loadOrCreateSigningKey(config.dataDir, log);
    const admin = ensureAdminToken({ tokens: store.tokens, dataDir: config.dataDir, clock, log });
    const metrics = createFleetMetrics();
    const authority = createDeviceAuthority(store.devices);
    const auth = createAuth({ tokens: store.tokens, authority });
    let broker: FleetBroker | undefined;
    let client: FleetClient | undefined;
    let urls: FleetUrls | undefined;
    metrics.setConnectedSource(() => broker?.connectedCount() ?? 0);
    const connections = brokerConnections(() => broker, store.devices, log);
    const enrollment = new Enrollment({ devices: store.devices, tokens: store.tokens, connections, config: config.enrollment, clock, metrics, log });
    // Safe updates (issue 5). The fleet's MQTT client exists only after start(): the publishers get a getter.
    const maintenance = createMaintenanceWindows(store.db);
    const deployer = createDeployer({
      db: store.db, devices: store.devices, maintenance, signingKey: signingKey.privateKey, client: () => client, clock, metrics, log, config: config.deploy,
    });
    const commands = createCommands({ db: store.db, devices: store.devices, client: () => client, clock, metrics, log, defaultTimeoutMs: config.deploy.commandTimeoutMs });
    const rollouts = createRolloutEngine({ db: store.db, devices: store.devices, deployer, clock, metrics, log, tickMs: config.rollouts.tickMs });
    const ingest = createIngest({ devices: store.devices, ingest: store.ingest, metrics, clock, log, onStored: rollouts.onStored });
    // Embedded broker: messages arriving together share one fsync'd commit before their PUBACKs.
    const batched = batchedIngest(store.db, ingest);
    const retention = createRetention({ ingest: store.ingest, retentionDays: config.telemetry.retentionDays, clock, metrics, log });

    const http = await buildHttpServer({
      config, store, enrollment, metrics, log, clock, version: FLEET_VERSION, publicKeyPem: signingKey.publicKeyPem,
      requirePrincipal: auth.requirePrincipal,
      requireOperator: auth.requireOperator,
      urls() {
        if (!urls) throw fail('FLEET_UNAVAILABLE', 'the fleet server is starting');
        return { mqttUrl: urls.mqttUrl, fleetUrl: urls.httpUrl };
      },
      apiRoutes: [
        (api) => registerRegistryRoutes(api, {
          db: store.db, dataDir: config.dataDir, maxArtifactBytes: config.registry.maxArtifactBytes, signingKey: signingKey.privateKey, log,
          requireOperator: auth.requireOperator, requirePrincipal: auth.requirePrincipal,
        }),
        (api) => registerRolloutRoutes(api, { engine: rollouts, requireOperator: auth.requireOperator }),
        (api) => registerDeployRoutes(api, {
          db: store.db, devices: store.devices, deployer, commands, maintenance, clock, requireOperator: auth.requireOperator,
          previousVersionOf: (id, model) => rollouts.previousVersionOf(id, model),
        }),
      ],
    });

    let stopping: Promise<void> | undefined;
    const stop = async (): Promise<void> => {
      rollouts.stop();
      commands.stop();
      await retention.stop();
      await closeHttp(http, log);
      // Devices first, so no device message arrives while the parts below go away. (Durability does not depend
      // on this order: the embedded broker acks a device message only once it is stored, and the store closes last.)
      await deployer.stop(); // publishes in flight get a short deadline before the client goes
      await broker?.closeDevices?.().catch((err: unknown) => log.warn({ err: (err as Error).message }, 'error closing device connections'));
      await client?.close().catch((err: unknown) => log.warn({ err: (err as Error).message }, 'error closing the fleet MQTT client'));
      await broker?.close().catch((err: unknown) => log.warn({ err: (err as Error).message }, 'error closing the broker'));
      batched.flush(); // a batch waiting for its turn of the event loop commits before the database closes
      store.close();
      log.info('fleet server stopped');
    };

    return {
      config, store, metrics, http, signingKey, retention, ingest, deployer, rollouts, commands, maintenance,
      adminTokenFile: admin.file,
      adminTokenCreated: admin.created,
      broker: () => broker,
      async start() {
        const b = config.broker;
        if (b.url === undefined) {
          // Nobody can be connected to a broker that is only starting now; reported state says otherwise.
          store.devices.markAllOffline();
          const embedded = await startEmbeddedBroker({
            host: b.host, port: b.port, maxPacketBytes: b.maxPacketBytes, authority, metrics: brokerMetricsOf(metrics), log,
            // Device messages are stored before their PUBACK; only a storage failure withholds it.
            onDeviceMessage: (topic, payload, done) => batched.submit(topic, payload, done),
            ...(b.certFile && b.keyFile ? { tls: { port: b.tlsPort, certFile: b.certFile, keyFile: b.keyFile } } : {}),
          });
          broker = embedded;
          urls = { mqttUrl: b.publicUrl ?? `mqtt://${reachableHost(b.host)}:${embedded.port}`, httpUrl: '' };
        } else {
          // The fleet's own user stays out of the devices' password file: it may do everything under outpost/v1/#,
          // so it belongs only in the fleet listener's file (mosquitto/README.md).
          broker = externalBroker({ url: b.url, username: b.username!, password: b.password!, passwordFile: b.passwordFile, pidFile: b.pidFile, log });
          await connections.sync();
          urls = { mqttUrl: b.publicUrl ?? b.url, httpUrl: '' };
        }
        // Embedded: the broker already ingests (above), so the client only publishes; subscribing too would store
        // every message twice. External: the client is the ingest, acking Mosquitto only after ingest returned.
        client = await connectFleetClient({
          url: broker.internalUrl, ...broker.internalCredentials, log, ...(b.url === undefined ? {} : { onMessage: ingest }),
          ...(b.sharedGroup ? { sharedGroup: b.sharedGroup, clientId: fleetClientId(config.dataDir) } : {}),
        });
        const listening = await http.listen({ host: config.http.host, port: config.http.port });
        const port = new URL(listening).port;
        urls = { mqttUrl: urls.mqttUrl, httpUrl: stripSlash(config.http.publicUrl ?? `http://${reachableHost(config.http.host)}:${port}`) };
        try {
          retention.runOnce();
        } catch (err) {
          log.error({ err: (err as Error).message }, 'retention failed at start; the hourly job retries');
        }
        retention.start();
        deployer.start({ republishAll: b.url === undefined });
        commands.start();
        rollouts.start();
        log.info({ httpUrl: urls.httpUrl, mqttUrl: urls.mqttUrl, adminTokenFile: admin.file }, 'fleet server started');
        return urls;
      },
      stop() {
        stopping ??= stop();
        return stopping;
      },
    };
  } catch (err) {
    store.close();
    throw err;
  }
}

/** How long shutdown lets in-flight HTTP requests (a slow artifact download or upload) finish before cutting them. */
const HTTP_CLOSE_DEADLINE_MS = 5_000;

/**
 * fastify's close() closes idle connections (forceCloseConnections: 'idle') and then waits for every request in
 * flight, without limit (requestTimeout is 0): a stalled download would hold shutdown forever. After the
 * deadline the remaining connections are destroyed.
 */
async function closeHttp(http: FastifyInstance, log: Logger): Promise<void> {
  const closed = http.close().catch((err: unknown) => log.warn({ err: (err as Error).message }, 'error closing HTTP'));
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'deadline'>((resolve) => {
    timer = setTimeout(() => resolve('deadline'), HTTP_CLOSE_DEADLINE_MS);
  });
  if ((await Promise.race([closed, deadline])) === 'deadline') {
    log.warn({ deadlineMs: HTTP_CLOSE_DEADLINE_MS }, 'HTTP requests still running at shutdown; closing their connections');
    http.server.closeAllConnections();
    await closed;
  }
  clearTimeout(timer);
}

/** The address devices on this machine reach a wildcard bind at; a specific host is used as it is. */
function reachableHost(host: string): string {
  if (host === '0.0.0.0' || host === '' || host === '::') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}

function stripSlash(url: string): string {
  return url.endsWith('/') ? url.slice(0, -1) : url;
}

/** With shared subscriptions several fleet servers connect at once, so each needs its own stable client id. */
function fleetClientId(dataDir: string): string {
  return `${FLEET_USERNAME}-${createHash('sha256').update(`${os.hostname()}\n${dataDir}`).digest('hex').slice(0, 12)}`;
}
