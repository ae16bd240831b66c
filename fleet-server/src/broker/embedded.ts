import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import tls from 'node:tls';
import { Aedes, type Client } from 'aedes';
import type { Logger } from 'pino';
import { createAccessControl } from './aedes-hooks.js';
import { MqttFrameGuard } from './frame-guard.js';
import { FLEET_USERNAME, type BrokerMetrics, type DeviceAuthority, type DeviceMessageSink, type FleetBroker } from './types.js';

export interface EmbeddedBrokerOptions {
  host: string;
  /** 0 picks a free port (tests); the chosen one is returned as `port`. */
  port: number;
  tls?: { port: number; certFile: string; keyFile: string };
  /** Whole-packet limit in bytes (fixed header included); larger packets close that connection only. */
  maxPacketBytes: number;
  authority: DeviceAuthority;
  /**
   * The fleet's ingest. Every publish a device may make is stored through it before aedes sends the PUBACK
   * (aedes-hooks.ts accept), so a PUBACK means "stored". Absent: device messages are only routed to subscribers
   * (tests of the broker alone); then a PUBACK means nothing more than "queued in this process".
   */
  onDeviceMessage?: DeviceMessageSink;
  metrics?: BrokerMetrics;
  log: Logger;
}

export type EmbeddedBroker = FleetBroker & { port: number; tlsPort?: number; closeDevices(): Promise<void> };

/**
 * The default broker: aedes in this process (DESIGN §4), MQTT 3.1.1, plain TCP plus TLS when configured.
 *
 * Persistence is aedes' in-memory default: retained messages (devices' `state`), QoS 1 sessions and messages
 * queued for subscribers live only as long as the process. No device data depends on them: with onDeviceMessage
 * a device message is stored inside authorizePublish, before its PUBACK, and the agent deletes an outbox row
 * only on PUBACK and resends the rest after any restart or crash. What a restart does lose: retained `state`
 * (each agent publishes it again when it connects), `cmd` messages queued for offline devices (the fleet
 * publishes no `desired` yet, so none is restored on boot), and sessions (agents resubscribe on every connect).
 */
export async function startEmbeddedBroker(opts: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
  const log = opts.log.child({ component: 'broker' });
  const metrics = opts.metrics;
  // Per boot, in memory only: the fleet's own client is the one user that may do everything.
  const fleetPassword = randomBytes(32).toString('base64url');
  const access = createAccessControl({ authority: opts.authority, fleetPassword, onDeviceMessage: opts.onDeviceMessage, metrics, log });
  const broker = await Aedes.createBroker({ ...access.hooks });

  // Keyed by device id. INVARIANT: holds exactly the registered device clients, so size = connected devices.
  const devices = new Map<string, Client>();
  let devicesClosed = false; // set by closeDevices(): a device that completes its CONNECT after that is closed at once
  broker.on('client', (client) => {
    const identity = access.identityOf(client);
    if (identity?.kind !== 'device') return;
    if (devicesClosed) {
      setImmediate(() => client.close()); // after aedes finished registering it (registerClient emits mid-way)
      return;
    }
    devices.set(identity.deviceId, client);
    metrics?.connected(1);
  });
  broker.on('clientDisconnect', (client) => {
    const identity = access.identityOf(client);
    if (identity?.kind !== 'device' || devices.get(identity.deviceId) !== client) return;
    devices.delete(identity.deviceId);
    metrics?.connected(-1);
  });
  broker.on('clientError', (client, err) => log.info({ clientId: client.id, err: err.message }, 'mqtt client error, connection closed'));
  broker.on('connectionError', (_client, err) => log.info({ err: err.message }, 'mqtt connection error before CONNECT, connection closed'));

  // Sockets that never send CONNECT are unknown to aedes; close() must end them too.
  const sockets = new Set<Socket>();
  const accept = (socket: Socket): void => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    const guarded = new MqttFrameGuard(socket, opts.maxPacketBytes, (reason) => {
      metrics?.protocolError?.('oversized');
      log.warn({ remote: socket.remoteAddress, reason }, 'mqtt packet too large, connection closed');
    });
    broker.handle(guarded);
  };

  const servers: Server[] = [];
  // server.close() stops accepting at once and calls back when its last connection ended; ask once only.
  let listenersClosed: Promise<void>[] | undefined;
  const closeListeners = (): Promise<void>[] =>
    (listenersClosed ??= servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  const closeAll = async (): Promise<void> => {
    const closed = closeListeners();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await Promise.all(closed);
  };

  let port: number;
  let tlsPort: number | undefined;
  try {
    const plain = net.createServer(accept);
    servers.push(plain);
    port = await listen(plain, opts.port, opts.host);
    if (opts.tls) {
      const secure = tls.createServer({ cert: readFileSync(opts.tls.certFile), key: readFileSync(opts.tls.keyFile) }, accept);
      secure.on('tlsClientError', (err) => log.info({ err: err.message }, 'mqtt TLS handshake failed'));
      servers.push(secure);
      tlsPort = await listen(secure, opts.tls.port, opts.host);
    }
  } catch (err) {
    await closeAll();
    throw err;
  }
  for (const server of servers) server.on('error', (err) => log.error({ err }, 'mqtt listener error'));

  const internalUrl = `mqtt://${loopbackFor(opts.host)}:${port}`;
  log.info({ port, tlsPort, maxPacketBytes: opts.maxPacketBytes }, 'embedded MQTT broker listening');

  let closing: Promise<void> | undefined;
  return {
    internalUrl,
    internalCredentials: { username: FLEET_USERNAME, password: fleetPassword },
    port,
    tlsPort,
    async disconnect(deviceId) {
      const client = devices.get(deviceId);
      if (client === undefined) return;
      log.info({ deviceId }, 'disconnecting device');
      // Not a DISCONNECT from the device, so aedes publishes its last will: the fleet sees it go offline.
      await new Promise<void>((resolve) => client.close(() => resolve()));
    },
    async closeDevices() {
      devicesClosed = true;
      void closeListeners(); // awaited by close(): the fleet's own client still holds a connection
      const open = [...devices.values()];
      log.info({ devices: open.length }, 'closing device connections');
      // Not a DISCONNECT from the device, so aedes publishes each last will, which is ingested (device offline).
      await Promise.all(open.map((client) => new Promise<void>((resolve) => client.close(() => resolve()))));
    },
    connectedCount: () => devices.size,
    close() {
      closing ??= closeAll();
      return closing;
    },
  };
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** The address the fleet's own client dials: a wildcard bind is reached over loopback. */
function loopbackFor(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}
