import { isDeviceId, topicFor, type TopicKind } from '../../../shared/src/mqtt/topics.js';

/**
 * What a device identity may do on the broker (DESIGN §4 "Auth", research §5.5 M1–M2). Pure functions, so the
 * embedded broker's hooks and the shipped Mosquitto ACL file (fleet-server/mosquitto/acl) can be read side by
 * side: every `pattern write` there is a PUBLISH_KINDS entry here, every `pattern read` a SUBSCRIBE_KINDS one.
 */
export const PUBLISH_KINDS: readonly TopicKind[] = ['state', 'telemetry', 'events', 'cmd/result'];
export const SUBSCRIBE_KINDS: readonly TopicKind[] = ['desired', 'cmd'];

/** Exact topic match only: a device never publishes outside outpost/v1/{its id}/{agent kind}. */
export function devicePublishAllowed(deviceId: string, topic: string): boolean {
  return isDeviceId(deviceId) && PUBLISH_KINDS.some((kind) => topic === topicFor(deviceId, kind));
}

/**
 * Exact filter match only: no wildcards at all, so `#`, `outpost/v1/+/desired` and even `outpost/v1/{id}/#`
 * are refused. The agent subscribes to exactly these two filters, so nothing legitimate is lost.
 */
export function deviceSubscribeAllowed(deviceId: string, filter: string): boolean {
  return isDeviceId(deviceId) && SUBSCRIBE_KINDS.some((kind) => filter === topicFor(deviceId, kind));
}

/** A device's last will may only mark its own state (DESIGN §5: retained `{online:false}`). */
export function deviceWillAllowed(deviceId: string, willTopic: string): boolean {
  return isDeviceId(deviceId) && willTopic === topicFor(deviceId, 'state');
}

/**
 * mqtt-packet decodes topic bytes leniently, turning ill-formed UTF-8 into U+FFFD. [MQTT-1.5.3-1] says the
 * server MUST close the connection on ill-formed UTF-8; no Outpost topic contains U+FFFD, so its presence is
 * the signal.
 */
export function hasIllFormedUtf8(topic: string): boolean {
  return topic.includes('\uFFFD');
}
