import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { AGENT_TOPIC_KINDS, allDevices } from '../../../shared/src/mqtt/topics.js';
import { FLEET_USERNAME, type FleetClient } from './types.js';

export interface FleetClientOptions {
  url: string;
  username: string;
  password: string;
  /** Default 'outpost-fleet'. On the embedded broker it must equal the username. */
  clientId?: string;
  /**
   * Subscribe as `$share/<group>/…` so several fleet servers split the ingest (Mosquitto 2, EMQX, HiveMQ).
   * External brokers only: aedes 1.2 has no shared subscriptions and would match nothing.
   */
  sharedGroup?: string;
  /** CA for mqtts:// URLs with a private CA. */
  ca?: string | Buffer;
  /** Give up when the first connection (CONNACK + SUBACK) has not succeeded within this time. Default 30 000. */
  firstConnectTimeoutMs?: number;
  log: Logger;
  /**
   * Called for every device message, one at a time, in arrival order. The PUBACK to the broker is sent after it
   * returns (or its promise settles): mqtt.js 5 (lib/handlers/publish.ts) writes a QoS 1 PUBACK only in the
   * callback of `client.handleMessage`, which we override below, and takes the next packet only after that. So
   * with an external broker a message the fleet has not handled stays in its persistent session (clean: false)
   * and is redelivered after a fleet restart or crash, and a slow consumer slows the broker instead of losing
   * messages. It should handle bad payloads itself; if it throws, the error is logged and the message is
   * acknowledged anyway, so one poison message cannot wedge the link. If it returns 'store-failed' (the
   * database, not the message, is at fault) the message is NOT acknowledged: the connection is dropped, and
   * the broker redelivers it from the persistent session when the client reconnects (after about 1 s).
   *
   * Absent: the client only publishes (`desired`, `cmd`) and subscribes to nothing. That is the embedded
   * broker's case, which ingests device messages in its authorizePublish hook (before the device's PUBACK);
   * subscribing as well would ingest everything twice.
   */
  onMessage?(topic: string, payload: Buffer): unknown;
}

/** The subscription filters of the fleet's ingest: every agent → fleet kind of every device, QoS 1. */
export function ingestFilters(sharedGroup?: string): string[] {
  const prefix = sharedGroup ? `$share/${sharedGroup}/` : '';
  return AGENT_TOPIC_KINDS.map((kind) => prefix + allDevices(kind));
}

/**
 * The fleet's OWN mqtt.js client, the same for the embedded and an external broker (DESIGN §4): MQTT 3.1.1,
 * persistent session (clean: false, fixed client id) so QoS 1 device messages published while the fleet is
 * reconnecting wait in the broker for it.
 */
export async function connectFleetClient(opts: FleetClientOptions): Promise<FleetClient> {
  const log = opts.log.child({ component: 'fleet-mqtt' });
  const onMessage = opts.onMessage;
  const filters = onMessage === undefined ? [] : ingestFilters(opts.sharedGroup);
  const options: IClientOptions = {
    protocolVersion: 4,
    clean: false,
    clientId: opts.clientId ?? FLEET_USERNAME,
    username: opts.username,
    password: opts.password,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    // We resubscribe ourselves (below) so a refused filter is noticed and logged.
    resubscribe: false,
    ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
  };
  const client: MqttClient = mqtt.connect(opts.url, options);

  client.handleMessage = (packet: IPublishPacket, callback) => {
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    Promise.resolve()
      .then(() => onMessage?.(packet.topic, payload))
      .catch((err: unknown) => log.error({ err, topic: packet.topic }, 'fleet message handler failed; message acknowledged'))
      .then((outcome) => {
        if (outcome !== 'store-failed') return callback();
        // No PUBACK: mqtt.js handles one packet at a time, so leaving this one unanswered on a dropped
        // connection is how a 3.1.1 client says "not taken". The broker keeps it in our session.
        log.error({ topic: packet.topic }, 'device message not stored; dropping the connection without PUBACK so the broker redelivers it');
        client.stream.destroy();
      });
  };

  const subscribe = async (): Promise<void> => {
    if (filters.length === 0) return;
    try {
      await client.subscribeAsync(filters, { qos: 1 });
    } catch (err) {
      // mqtt.js rejects when any filter got SUBACK 0x80; name them (an ACL without the fleet user, usually).
      const granted = (err as { packet?: { granted?: number[] } }).packet?.granted ?? [];
      const refused = filters.filter((_, i) => granted[i] === 128);
      throw new Error(`broker refused the fleet's subscriptions ${refused.join(', ') || filters.join(', ')}`, { cause: err });
    }
  };

  await new Promise<void>((resolve, reject) => {
    const timeoutMs = opts.firstConnectTimeoutMs ?? 30_000;
    const timer = setTimeout(() => fail(new Error(`no connection to ${opts.url} within ${timeoutMs} ms`)), timeoutMs);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      client.off('error', onError);
      client.end(true);
      reject(err);
    };
    client.once('connect', () => {
      subscribe().then(
        () => {
          clearTimeout(timer);
          client.off('error', onError);
          resolve();
        },
        fail,
      );
    });
    // Before the first connection a CONNACK refusal (numeric code: bad credentials, not authorized) is fatal,
    // retrying cannot fix config; socket errors (string codes, e.g. ECONNREFUSED while Mosquitto starts) retry.
    const onError = (err: Error & { code?: unknown }): void => {
      if (typeof err.code === 'number') fail(err);
      else log.warn({ err: err.message, url: opts.url }, 'fleet MQTT client cannot connect yet, retrying');
    };
    client.on('error', onError);
  });

  client.on('connect', (connack) => {
    log.info({ url: opts.url, sessionPresent: connack.sessionPresent }, 'fleet MQTT client reconnected');
    // A session that survived keeps its subscriptions (and re-subscribing would resend every retained state).
    if (connack.sessionPresent) return;
    subscribe().catch((err: unknown) => log.error({ err }, 'resubscribe failed'));
  });
  client.on('offline', () => log.warn({ url: opts.url }, 'fleet MQTT client offline, reconnecting'));
  client.on('error', (err) => log.warn({ err: err.message }, 'fleet MQTT client error'));
  log.info({ url: opts.url, filters }, 'fleet MQTT client connected');

  return {
    async publish(topic, payload, publishOpts) {
      await client.publishAsync(topic, payload, { qos: 1, retain: publishOpts.retain });
    },
    async close() {
      await client.endAsync();
    },
    get connected() {
      return client.connected;
    },
  };
}
