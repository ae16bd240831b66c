/**
 * MQTT topics of the agent ↔ fleet link (DESIGN §5), defined once for both sides.
 * Root: outpost/v1/{deviceId}/{kind}. A device may publish and subscribe only under its own root.
 */
export const TOPIC_ROOT = 'outpost/v1';

/** Topic kinds, with who publishes them, their QoS and whether the broker retains them. */
export const TOPIC_KINDS = {
  state: { from: 'agent', qos: 1, retain: true },
  telemetry: { from: 'agent', qos: 1, retain: false },
  events: { from: 'agent', qos: 1, retain: false },
  'cmd/result': { from: 'agent', qos: 1, retain: false },
  desired: { from: 'fleet', qos: 1, retain: true },
  cmd: { from: 'fleet', qos: 1, retain: false },
} as const;

export type TopicKind = keyof typeof TOPIC_KINDS;
export type AgentTopicKind = { [K in TopicKind]: (typeof TOPIC_KINDS)[K]['from'] extends 'agent' ? K : never }[TopicKind];
export type FleetTopicKind = Exclude<TopicKind, AgentTopicKind>;

export const AGENT_TOPIC_KINDS = (Object.keys(TOPIC_KINDS) as TopicKind[]).filter((k) => TOPIC_KINDS[k].from === 'agent') as AgentTopicKind[];

/** Device ids are also MQTT client ids and topic levels: no wildcards, no separators, ≤ 64 chars. */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export function isDeviceId(value: string): boolean {
  return DEVICE_ID_PATTERN.test(value);
}

export function topicFor(deviceId: string, kind: TopicKind): string {
  if (!isDeviceId(deviceId)) throw new Error(`not a valid device id: ${JSON.stringify(deviceId)}`);
  return `${TOPIC_ROOT}/${deviceId}/${kind}`;
}

/** Subscription filter for every device's topics of one kind, e.g. outpost/v1/+/telemetry. */
export function allDevices(kind: TopicKind): string {
  return `${TOPIC_ROOT}/+/${kind}`;
}

/** Splits a topic into device id and kind; undefined when it is not an Outpost topic. */
export function parseTopic(topic: string): { deviceId: string; kind: TopicKind } | undefined {
  const prefix = `${TOPIC_ROOT}/`;
  if (!topic.startsWith(prefix)) return undefined;
  const rest = topic.slice(prefix.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return undefined;
  const deviceId = rest.slice(0, slash);
  const kind = rest.slice(slash + 1);
  if (!isDeviceId(deviceId) || !Object.hasOwn(TOPIC_KINDS, kind)) return undefined;
  return { deviceId, kind: kind as TopicKind };
}

/**
 * True when `filter` (a topic or a subscription filter) stays inside the device's own root:
 * outpost/v1/{deviceId}/… with no wildcard in the root levels. `#` or `outpost/v1/+/…` are outside.
 */
export function isInsideDeviceRoot(deviceId: string, filter: string): boolean {
  const root = `${TOPIC_ROOT}/${deviceId}/`;
  return isDeviceId(deviceId) && filter.startsWith(root) && filter.length > root.length;
}
