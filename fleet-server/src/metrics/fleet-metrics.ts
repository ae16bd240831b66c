import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { BrokerMetrics } from '../broker/types.js';

/** Ingest delay buckets in seconds: from a live link (tens of ms) to an outbox drained after days offline. */
const DELAY_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400];

/** Why an agent message was dropped: the shared decode reasons plus the fleet's own checks. */
export type IngestRejectReason = 'oversized' | 'not-json' | 'invalid' | 'wrong-device' | 'unknown-topic' | 'unknown-device' | 'revoked' | 'store-failed';

/**
 * The fleet server's Prometheus metrics (GET /metrics), one registry per fleet instance (no global state).
 * `connectedDevices` reads the broker when scraped, through the function set by setConnectedSource.
 */
export function createFleetMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Same as the agent: these gauges' _total names fail `promtool check metrics`; nodejs_active_* keep the counts.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  let connectedSource: () => number = () => 0;
  let rolloutSource: () => Record<string, number> = () => ({});
  return {
    registry,
    ingested: new Counter({ name: 'outpost_fleet_ingest_messages_total', help: 'Agent messages accepted and stored, by topic kind (duplicates not included).', labelNames: ['kind'], registers: [registry] }),
    duplicates: new Counter({ name: 'outpost_fleet_duplicate_messages_total', help: 'Agent messages whose (device, seq) was already stored; dropped (QoS 1 redelivery, outbox replay).', labelNames: ['kind'], registers: [registry] }),
    rejected: new Counter({ name: 'outpost_fleet_rejected_messages_total', help: 'Agent messages dropped unstored, by topic kind and reason (oversized, not-json, invalid, wrong-device, unknown-device, revoked, …).', labelNames: ['kind', 'reason'], registers: [registry] }),
    ingestDelay: new Histogram({ name: 'outpost_fleet_ingest_delay_seconds', help: 'Receive time minus the message timestamp of stored agent messages (includes time queued in the outbox while offline).', buckets: DELAY_BUCKETS, registers: [registry] }),
    denied: new Counter({ name: 'outpost_fleet_mqtt_denied_total', help: 'MQTT connects, publishes and subscribes the broker refused, by action and reason.', labelNames: ['action', 'reason'], registers: [registry] }),
    protocolErrors: new Counter({ name: 'outpost_fleet_mqtt_protocol_errors_total', help: 'MQTT connections the embedded broker closed for breaking the protocol (oversized or malformed packets).', labelNames: ['reason'], registers: [registry] }),
    connects: new Counter({ name: 'outpost_fleet_mqtt_connections_total', help: 'Device MQTT connections the embedded broker accepted (churn).', registers: [registry] }),
    connectedDevices: new Gauge({
      name: 'outpost_fleet_connected_devices',
      help: 'MQTT clients connected to the broker now.',
      registers: [registry],
      collect() {
        this.set(connectedSource());
      },
    }),
    enrollments: new Counter({ name: 'outpost_fleet_enrollments_total', help: 'Successful device enrollments, by whether the device was new or re-enrolled.', labelNames: ['kind'], registers: [registry] }),
    httpRefusals: new Counter({ name: 'outpost_fleet_http_refused_requests_total', help: 'REST requests refused with a 4xx/5xx error, by error code.', labelNames: ['code'], registers: [registry] }),
    retentionDeleted: new Counter({ name: 'outpost_fleet_retention_deleted_rows_total', help: 'Rows deleted by the retention job, by table.', labelNames: ['table'], registers: [registry] }),
    desiredPublished: new Counter({ name: 'outpost_fleet_desired_published_total', help: 'Desired-state messages published to devices (retained), by outcome (ok, failed: retried).', labelNames: ['outcome'], registers: [registry] }),
    deployments: new Counter({ name: 'outpost_fleet_deployments_total', help: 'Desired entries signed for a device, by cause (set: a new target, refresh: re-signed before expiry).', labelNames: ['cause'], registers: [registry] }),
    commandsSent: new Counter({ name: 'outpost_fleet_commands_sent_total', help: 'Commands published to devices, by kind.', labelNames: ['kind'], registers: [registry] }),
    rollouts: new Gauge({
      name: 'outpost_fleet_rollouts',
      help: 'Rollouts by state.',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [state, n] of Object.entries(rolloutSource())) this.set({ state }, n);
      },
    }),
    rolloutDeviceTransitions: new Counter({ name: 'outpost_fleet_rollout_device_transitions_total', help: 'Device state changes recorded by the rollout engine, by new state.', labelNames: ['state'], registers: [registry] }),
    setConnectedSource(source: () => number) {
      connectedSource = source;
    },
    /** Where the outpost_fleet_rollouts gauge reads its counts when scraped (the rollout engine). */
    setRolloutSource(source: () => Record<string, number>) {
      rolloutSource = source;
    },
  };
}

export type FleetMetrics = ReturnType<typeof createFleetMetrics>;

/** The broker's metrics hooks (the `metrics` option of startEmbeddedBroker) over this registry. */
export function brokerMetricsOf(m: FleetMetrics): BrokerMetrics {
  return {
    denied: (action, reason) => m.denied.inc({ action, reason }),
    // The gauge reads connectedCount() when scraped; the hook counts connections, i.e. churn.
    connected: (delta) => {
      if (delta > 0) m.connects.inc(delta);
    },
    protocolError: (reason) => m.protocolErrors.inc({ reason }),
  };
}
