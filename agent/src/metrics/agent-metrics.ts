import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { OutboxStats } from '../outbox/types.js';

/** Latency buckets in seconds: 0.5 ms to 10 s, dense where edge inference lives (5–500 ms). */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Where the scrape-time gauges read from. The composition root fills these in once the outbox and the link
 * exist; until then (or when the box is not enrolled) the gauges read 0.
 */
export interface MetricSources {
  outboxStats?: () => OutboxStats;
  linkConnected?: () => boolean;
  /** Lifetime requests whose telemetry counts were dropped undurable (TelemetryAggregator.lostRequests). */
  telemetryLostRequests?: () => number;
}

/** A counter that mirrors a lifetime total kept elsewhere: each scrape adds what grew since the last one. */
function mirroredCounter(registry: Registry, name: string, help: string, read: () => number | undefined): Counter {
  let seen = 0;
  return new Counter({
    name, help, registers: [registry],
    collect() {
      const total = read();
      if (total !== undefined && total > seen) {
        this.inc(total - seen);
        seen = total;
      }
    },
  });
}

/**
 * The agent's Prometheus metrics (DESIGN §3.3), one registry per agent instance (no global state).
 * Names follow Prometheus conventions: base units in the name, counters end in _total.
 */
export function createAgentMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // prom-client also exports these three gauges under a _total name, which `promtool check metrics` rejects
  // ("non-counter metrics should not have _total suffix"); the same counts stay in nodejs_active_{handles,requests,resources}.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  const mv = ['model', 'version'] as const;
  const sources: MetricSources = {};
  const stats = (): OutboxStats | undefined => {
    try {
      return sources.outboxStats?.();
    } catch {
      return undefined; // the outbox is closing; the scrape must not fail for it
    }
  };
  return {
    registry,
    sources,
    requests: new Counter({ name: 'outpost_inference_requests_total', help: 'Inference requests received per model version, answered or not.', labelNames: mv, registers: [registry] }),
    successes: new Counter({ name: 'outpost_inference_success_total', help: 'Inference requests answered with a result.', labelNames: mv, registers: [registry] }),
    failures: new Counter({ name: 'outpost_inference_failures_total', help: 'Inference requests that ended in an error, by error code.', labelNames: [...mv, 'code'], registers: [registry] }),
    requestDuration: new Histogram({ name: 'outpost_inference_request_duration_seconds', help: 'Time to serve an inference request once its body has arrived: decode, queue, compute and postprocessing.', labelNames: mv, buckets: LATENCY_BUCKETS, registers: [registry] }),
    queueDuration: new Histogram({ name: 'outpost_inference_queue_duration_seconds', help: 'Time a request waited in the model queue before its batch started.', labelNames: mv, buckets: LATENCY_BUCKETS, registers: [registry] }),
    computeDuration: new Histogram({ name: 'outpost_inference_compute_duration_seconds', help: 'onnxruntime session.run time of the batch a request ran in.', labelNames: mv, buckets: LATENCY_BUCKETS, registers: [registry] }),
    preprocessDuration: new Histogram({ name: 'outpost_inference_preprocess_duration_seconds', help: 'Image decode and preprocessing time.', labelNames: mv, buckets: LATENCY_BUCKETS, registers: [registry] }),
    batchSize: new Histogram({ name: 'outpost_inference_batch_size', help: 'Rows per session.run call (dynamic batching).', labelNames: mv, buckets: [1, 2, 3, 4, 6, 8, 12, 16, 32, 64], registers: [registry] }),
    pending: new Gauge({ name: 'outpost_inference_pending_requests', help: 'Requests queued or running per model version.', labelNames: mv, registers: [registry] }),
    modelLoadSeconds: new Gauge({ name: 'outpost_model_load_duration_seconds', help: 'Time the last load of a model version took (session creation and warm-up).', labelNames: mv, registers: [registry] }),
    modelReady: new Gauge({ name: 'outpost_model_ready', help: '1 when the model version is loaded and serving, 0 when it failed to load.', labelNames: mv, registers: [registry] }),
    modelLoadFailures: new Counter({ name: 'outpost_model_load_failures_total', help: 'Model version loads that failed (corrupt file, bad manifest, unsupported operators).', labelNames: mv, registers: [registry] }),
    refusals: new Counter({ name: 'outpost_http_refused_requests_total', help: 'HTTP requests refused with a 4xx/5xx error, by error code.', labelNames: ['code'], registers: [registry] }),
    linkConnected: new Gauge({ name: 'outpost_link_connected', help: '1 while the MQTT link to the fleet is connected, else 0 (also 0 when not enrolled).', registers: [registry], collect() { this.set(sources.linkConnected?.() ? 1 : 0); } }),
    linkReconnects: new Counter({ name: 'outpost_link_reconnects_total', help: 'Successful fleet connections after the first one (each follows a lost link).', registers: [registry] }),
    linkRejected: new Counter({ name: 'outpost_link_rejected_messages_total', help: 'Messages from the fleet refused and ignored, by topic kind and reason (oversized, not-json, invalid, wrong-device, unknown-topic).', labelNames: ['kind', 'reason'], registers: [registry] }),
    updateTransitions: new Counter({ name: 'outpost_update_transitions_total', help: 'Update machine transitions per model and new state (committed, rolled_back, failed …), with the reason code when there is one.', labelNames: ['model', 'state', 'reason'], registers: [registry] }),
    updateDownloadedBytes: new Counter({ name: 'outpost_update_downloaded_bytes_total', help: 'Model artifact bytes downloaded from the fleet (resumed downloads count only the new bytes).', registers: [registry] }),
    outboxRows: new Gauge({ name: 'outpost_outbox_rows', help: 'Messages waiting in the outbox for the fleet.', registers: [registry], collect() { this.set(stats()?.rows ?? 0); } }),
    outboxBytes: new Gauge({ name: 'outpost_outbox_bytes', help: 'Payload bytes waiting in the outbox.', registers: [registry], collect() { this.set(stats()?.bytes ?? 0); } }),
    outboxDropped: mirroredCounter(registry, 'outpost_outbox_dropped_total', 'Telemetry messages dropped (oldest first) because the outbox was full.', () => stats()?.droppedTelemetry),
    outboxDeadLetter: mirroredCounter(registry, 'outpost_outbox_dead_letter_total', 'Outbox messages moved to the dead-letter table (never accepted by the broker, or too large to send).', () => stats()?.deadLettered),
    outboxAlarm: new Gauge({ name: 'outpost_outbox_alarm', help: '1 while outbox commits fail and the outbox refuses new messages (disk full or busy: until a retried commit succeeds; I/O error: until restart).', registers: [registry], collect() { this.set(stats()?.alarm ? 1 : 0); } }),
    telemetryLost: mirroredCounter(registry, 'outpost_telemetry_lost_requests_total', 'Requests whose telemetry counts were dropped without reaching the outbox (a commit whose durability is unknown after an I/O error, or counts still pending at stop while the outbox was in alarm).', () => sources.telemetryLostRequests?.()),
  };
}

export type AgentMetrics = ReturnType<typeof createAgentMetrics>;
