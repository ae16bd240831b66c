import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { AedesOptions, AuthenticateError, Client, ConnectPacket, PublishPacket } from 'aedes';
import type { Logger } from 'pino';
import { isDeviceId } from '../../../shared/src/mqtt/topics.js';
import { devicePublishAllowed, deviceSubscribeAllowed, deviceWillAllowed, hasIllFormedUtf8 } from './acl.js';
import { FLEET_USERNAME, type BrokerMetrics, type DeviceAuthority, type DeviceMessageSink } from './types.js';

export type Identity = { kind: 'fleet' } | { kind: 'device'; deviceId: string };

type Verdict = { ok: true; identity: Identity } | { ok: false; returnCode: 4 | 5; reason: string };

// CONNACK return codes, MQTT 3.1.1 §3.2.2.3.
const BAD_CREDENTIALS = 4;
const NOT_AUTHORIZED = 5;

export interface AccessControl {
  hooks: Pick<AedesOptions, 'preConnect' | 'authenticate' | 'authorizePublish' | 'authorizeSubscribe'>;
  /** The identity a connected (authenticated) client holds; undefined for refused or pending ones. */
  identityOf(client: Client): Identity | undefined;
}

/**
 * aedes hooks for Outpost's security model: identity comes from the credential, never from the client id.
 *
 * Ordering (aedes 1.2 lib/handlers/connect.js): preConnect → [client.id := packet.clientId] → authenticate →
 * … → registerClient, which is where an existing client with the same id is closed ([MQTT-3.1.4-2]). A
 * refused CONNECT therefore never kicks the device it claims to be. One more hazard remains: aedes closes a
 * refused clean-session client under its claimed id and wipes that id's inbound QoS 2 store. So the whole
 * check runs in preConnect and a refused packet's client id is replaced by a throwaway one there; refused
 * connections never touch a real device's session. authenticate then only sends the CONNACK code.
 */
export function createAccessControl(opts: {
  authority: DeviceAuthority;
  fleetPassword: string;
  /** Stores each allowed device publish before aedes acks it (see accept below). Absent: publishes are only routed. */
  onDeviceMessage?: DeviceMessageSink;
  metrics?: BrokerMetrics;
  log: Logger;
}): AccessControl {
  const { authority, metrics, log, onDeviceMessage } = opts;
  const fleetDigest = sha256(Buffer.from(opts.fleetPassword, 'utf8'));
  const verdicts = new WeakMap<Client, Verdict>();

  function check(packet: ConnectPacket): Verdict {
    const username = packet.username;
    const password = packet.password;
    if (username === undefined || password === undefined) return refuse(BAD_CREDENTIALS, 'no credentials');
    // Identity is the username; the client id must repeat it, so one device can never present (and take
    // over) another device's client id and session.
    if (packet.clientId !== username) return refuse(NOT_AUTHORIZED, 'client id differs from username');
    if (username === FLEET_USERNAME) {
      // Compare digests so neither the length nor the content of the password leaks through timing.
      return timingSafeEqual(sha256(password), fleetDigest) ? { ok: true, identity: { kind: 'fleet' } } : refuse(BAD_CREDENTIALS, 'bad fleet password');
    }
    if (!isDeviceId(username)) return refuse(BAD_CREDENTIALS, 'username is not a device id');
    if (!authority.verify(username, password.toString('utf8'))) return refuse(BAD_CREDENTIALS, 'unknown device, revoked or wrong secret');
    if (packet.will && !deviceWillAllowed(username, packet.will.topic)) return refuse(NOT_AUTHORIZED, 'last will outside own state topic');
    return { ok: true, identity: { kind: 'device', deviceId: username } };
  }

  const hooks: AccessControl['hooks'] = {
    preConnect(client, packet, callback) {
      const verdict = check(packet);
      if (!verdict.ok) {
        const claimed = packet.clientId;
        packet.clientId = `refused-${randomBytes(6).toString('hex')}`; // ≤ 23 chars, valid even for MQTT 3.1
        metrics?.denied('connect', verdict.reason);
        log.warn({ clientId: claimed, username: packet.username, remote: remoteOf(client), reason: verdict.reason }, 'mqtt connect refused');
      }
      verdicts.set(client, verdict);
      callback(null, true);
    },

    authenticate(client, _username, _password, callback) {
      const verdict = verdicts.get(client);
      if (verdict?.ok) return callback(null, true);
      const err = new Error(verdict?.reason ?? 'not checked') as AuthenticateError;
      err.returnCode = verdict?.returnCode ?? NOT_AUTHORIZED;
      callback(err, null);
    },

    authorizePublish(client, packet, callback) {
      // client is null only when aedes replays a stored will of a vanished client; wills were checked at connect.
      if (client === null) return accept(null, packet, callback);
      const identity = identityOf(client);
      let reason: string | undefined;
      if (hasIllFormedUtf8(packet.topic)) reason = 'ill-formed UTF-8 topic';
      else if (packet.topic.startsWith('$SYS')) reason = '$SYS is reserved';
      else if (identity === undefined) reason = 'not authenticated';
      else if (identity.kind === 'device' && !devicePublishAllowed(identity.deviceId, packet.topic)) reason = 'topic outside own root';
      if (reason === undefined) return identity?.kind === 'device' ? accept(client, packet, callback) : callback(null);
      metrics?.denied('publish', reason);
      log.warn({ clientId: client.id, topic: packet.topic, reason }, 'mqtt publish denied, closing the connection');
      // MQTT 3.1.1 cannot NACK a PUBLISH: the server either acks it or closes the connection [MQTT-3.3.5-2].
      // We close (aedes does so on an error here). Acking and dropping would hide a misbehaving or
      // compromised device; a closed connection shows up in the device's link state and in our logs. The
      // agent cannot loop on it: its outbox dead-letters a row after N failed delivery attempts.
      callback(new Error(`publish to ${packet.topic} denied: ${reason}`));
    },

    authorizeSubscribe(client, sub, callback) {
      const identity = identityOf(client);
      const allowed = identity?.kind === 'fleet' || (identity?.kind === 'device' && deviceSubscribeAllowed(identity.deviceId, sub.topic));
      if (allowed) return callback(null, sub);
      metrics?.denied('subscribe', 'filter outside own root');
      log.warn({ clientId: client.id, filter: sub.topic }, 'mqtt subscribe denied');
      // A null subscription makes aedes answer SUBACK 0x80 for this filter and keep the connection
      // (lib/handlers/subscribe.js storeSubscriptions); an error would close it instead.
      callback(null, null);
    },
  };

  /**
   * A device's allowed publish (or a last will). aedes 1.2 writes a QoS 1 PUBACK right after this hook calls
   * back (lib/handlers/publish.js enqueuePublish), before routing the message to any subscriber, so the PUBACK
   * only means "stored" if the message is stored here, synchronously, first. On a storage failure the error
   * makes aedes close the connection without a PUBACK: the agent's outbox still holds the row and resends it
   * after reconnecting, by which time the database may have recovered.
   */
  function accept(client: Client | null, packet: PublishPacket, callback: (error?: Error | null) => void): void {
    if (onDeviceMessage === undefined) return callback(null);
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload, 'utf8') : packet.payload;
    onDeviceMessage(packet.topic, payload, (stored) => {
      if (stored) return callback(null);
      log.warn({ clientId: client?.id, topic: packet.topic }, 'device message not stored, closing the connection without PUBACK so the device resends it');
      callback(new Error(`message on ${packet.topic} not stored`));
    });
  }

  function identityOf(client: Client): Identity | undefined {
    const verdict = verdicts.get(client);
    return verdict?.ok ? verdict.identity : undefined;
  }

  function refuse(returnCode: 4 | 5, reason: string): Verdict {
    return { ok: false, returnCode, reason };
  }

  return { hooks, identityOf };
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

function remoteOf(client: Client): string | undefined {
  return (client.conn as { remoteAddress?: string }).remoteAddress;
}
