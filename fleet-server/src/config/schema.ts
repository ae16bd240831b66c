import { z } from 'zod';
import { MAX_PAYLOAD_BYTES } from '../../../shared/src/mqtt/messages.js';

/**
 * The fleet server's whole configuration: one schema, defaults here, documented in docs/fleet-api.md
 * ("Configuration"). Layers (lowest first): these defaults → YAML file (--config) → OUTPOST_* env → flags.
 * Objects are strict so a misspelt key is an error, not a silently ignored setting.
 */
const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);
const port = int(0, 65535);
const httpUrl = z.url({ protocol: /^https?$/ });
const mqttUrl = z.url({ protocol: /^(mqtt|mqtts|tcp|tls|ws|wss)$/ });
/** What devices are told: the agent speaks mqtt:// and mqtts:// (and ws:// / wss://), not mqtt.js' tcp:// / tls:// aliases. */
const deviceMqttUrl = z.url({ protocol: /^(mqtt|mqtts|ws|wss)$/ });

/** A broker packet carries the payload plus topic and headers; below this a valid maximum-size message is cut. */
export const MIN_PACKET_BYTES = MAX_PAYLOAD_BYTES + 4096;

export const FleetConfigSchema = z.strictObject({
  /** Directory for fleet.db, the admin token, the signing key and the model artifacts. */
  dataDir: z.string().min(1).default('./data'),
  http: z
    .strictObject({
      host: z.string().min(1).default('0.0.0.0'),
      port: port.default(8080),
      /** Base URL devices are told for REST and artifact downloads; default http://127.0.0.1:<port> (or the host). */
      publicUrl: httpUrl.optional(),
    })
    .prefault({}),
  broker: z
    .strictObject({
      /** An external broker (Mosquitto, EMQX) to use instead of the embedded one, e.g. mqtt://127.0.0.1:1883. */
      url: mqttUrl.optional(),
      /** The fleet server's own login at the external broker (it must be allowed to read every device's topics). */
      username: z.string().min(1).optional(),
      password: z.string().min(1).optional(),
      /** External Mosquitto: password_file the fleet rewrites with every device's secret hash. */
      passwordFile: z.string().min(1).optional(),
      /** External Mosquitto: its pid file, to send SIGHUP after passwordFile changes. */
      pidFile: z.string().min(1).optional(),
      /** Shared-subscription group ($share/<group>/…) so several fleet servers split the ingest. */
      sharedGroup: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and - only (1–64)').optional(),
      /** Embedded broker: address and plain-MQTT port. */
      host: z.string().min(1).default('0.0.0.0'),
      port: port.default(1883),
      /** Embedded broker: MQTT over TLS port, used when certFile and keyFile are set. */
      tlsPort: port.default(8883),
      certFile: z.string().min(1).optional(),
      keyFile: z.string().min(1).optional(),
      /** Largest MQTT packet the embedded broker accepts, in bytes; bigger ones close the connection. */
      maxPacketBytes: int(MIN_PACKET_BYTES, 256 * 1024 * 1024).default(1024 * 1024),
      /** MQTT URL devices are told at enrollment; required with broker.url. Default (embedded): mqtt://<host the device enrolled through>:<port>. */
      publicUrl: deviceMqttUrl.optional(),
    })
    .refine((b) => (b.certFile === undefined) === (b.keyFile === undefined), { message: 'certFile and keyFile go together: set both or neither', path: ['certFile'] })
    .refine((b) => b.url === undefined || (b.username !== undefined && b.password !== undefined), {
      message: 'an external broker (broker.url) needs broker.username and broker.password for the fleet server',
      path: ['url'],
    })
    // Devices usually reach an external broker on another listener than the fleet's own (fleet-server/mosquitto/).
    .refine((b) => b.url === undefined || b.publicUrl !== undefined, {
      message: 'an external broker (broker.url) needs broker.publicUrl: the MQTT URL devices connect to (e.g. its device listener)',
      path: ['publicUrl'],
    })
    .prefault({}),
  enrollment: z
    .strictObject({
      /** Lifetime of an enrollment token when the request does not say, in seconds. */
      defaultTtlSeconds: int(1).default(3600),
      /** Longest lifetime a request may ask for, in seconds (default 30 days). */
      maxTtlSeconds: int(1).default(30 * 86_400),
    })
    .refine((e) => e.defaultTtlSeconds <= e.maxTtlSeconds, { message: 'defaultTtlSeconds must not exceed maxTtlSeconds', path: ['defaultTtlSeconds'] })
    .prefault({}),
  telemetry: z
    .strictObject({
      /** Days metric points, events and dedup records are kept; pruned hourly. */
      retentionDays: int(1, 3650).default(30),
    })
    .prefault({}),
  registry: z
    .strictObject({
      /** Largest model artifact accepted by an upload, in bytes. */
      maxArtifactBytes: int(1024).default(2 * 1024 * 1024 * 1024),
    })
    .prefault({}),
  deploy: z
    .strictObject({
      /** Lifetime of a signed desired-state entry, in hours (default 7 days); a device installs nothing from an expired one. */
      signatureTtlHours: int(1, 24 * 365).default(168),
      /** How often entries within half their lifetime of expiry are re-signed, in minutes. */
      refreshMinutes: int(1, 24 * 60).default(60),
      /** Default time a device has to answer a command before it is marked timed_out, in ms. */
      commandTimeoutMs: int(1, 3_600_000).default(60_000),
    })
    // A refresh must come round before the entries it should have re-signed expire.
    .refine((d) => d.refreshMinutes * 60 < (d.signatureTtlHours * 3600) / 2, {
      message: 'refreshMinutes must be shorter than half of signatureTtlHours',
      path: ['refreshMinutes'],
    })
    .prefault({}),
  rollouts: z
    .strictObject({
      /** How often running and scheduled rollouts are re-evaluated, in ms (also right after each device transition). */
      tickMs: int(10, 600_000).default(1000),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .prefault({}),
});

export type FleetConfigInput = z.input<typeof FleetConfigSchema>;
/** The validated, defaulted, frozen configuration with paths resolved to absolute ones. */
export type FleetConfig = Readonly<z.output<typeof FleetConfigSchema>>;
