/**
 * The bench's client of the fleet server's real REST API (docs/fleet-api.md): enrollment as an operator and a
 * device would do it, and the Prometheus /metrics text the bench reads counters from.
 */

export interface Enrolled {
  deviceId: string;
  secret: string;
  /** The MQTT URL the fleet tells devices (the device listener when the broker is external). */
  mqttUrl: string;
}

export interface FleetApi {
  readonly httpUrl: string;
  /** POST /api/v1/enrollment-tokens (operator), then POST /api/v1/enroll with that token (public). */
  enroll(): Promise<Enrolled>;
  metrics(): Promise<MetricsSnapshot>;
}

export function fleetApi(httpUrl: string, adminToken: string, timeoutMs = 30_000): FleetApi {
  const call = async (method: string, route: string, body: unknown, auth: boolean): Promise<unknown> => {
    const res = await fetch(`${httpUrl}${route}`, {
      method,
      headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${adminToken}` } : {}) },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    if (res.status !== 201) throw new Error(`${method} ${route} answered ${res.status}: ${text.slice(0, 300)}`);
    return JSON.parse(text) as unknown;
  };
  return {
    httpUrl,
    async enroll() {
      const { token } = (await call('POST', '/api/v1/enrollment-tokens', { tags: { bench: 'fleet' } }, true)) as { token: string };
      const enrolled = (await call('POST', '/api/v1/enroll', { token }, false)) as Enrolled;
      return { deviceId: enrolled.deviceId, secret: enrolled.secret, mqttUrl: enrolled.mqttUrl };
    },
    async metrics() {
      const res = await fetch(`${httpUrl}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
      if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
      return parseMetrics(await res.text());
    },
  };
}

/** One scrape: every sample as (name, labels, value). */
export interface MetricsSnapshot {
  /** Sum of every sample of `name` whose labels include all of `labels`; 0 when there is none. */
  sum(name: string, labels?: Record<string, string>): number;
}

/** Prometheus text format, sample lines only (`name{a="x",b="y"} value`); comments and HELP/TYPE are skipped. */
export function parseMetrics(text: string): MetricsSnapshot {
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const pair of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[4]) });
  }
  return {
    sum(name, want = {}) {
      let total = 0;
      for (const s of samples) {
        if (s.name !== name) continue;
        if (Object.entries(want).every(([k, v]) => s.labels[k] === v)) total += s.value;
      }
      return total;
    },
  };
}
