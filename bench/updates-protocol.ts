/**
 * Messages between the updates section (bench/updates.ts) and its two children: the simulated devices of the
 * rollout part (bench/rollout-devices.ts) and the closed-loop load of the swap part (bench/swap-load.ts).
 * Every time that crosses a process boundary is epoch milliseconds with a fraction
 * (performance.timeOrigin + performance.now(): the same machine clock in every process, sub-ms resolution).
 */

/** Epoch ms with sub-ms resolution, comparable across the bench's processes (and, to the ms, with Date.now()). */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

export interface DeviceCredentials {
  deviceId: string;
  secret: string;
  /** The fleet's ed25519 public key (PEM) as enrollment returned it: desired entries are checked against it. */
  fleetPublicKey: string;
}

// ---- rollout devices

export interface ConnectJob {
  type: 'connect';
  mqttUrl: string;
  /** The REST base URL enrollment returned; artifact URLs in desired entries are relative to it. */
  fleetUrl: string;
  devices: DeviceCredentials[];
  connectRatePerS: number;
  timeoutMs: number;
}

export interface Connected {
  type: 'connected';
  seconds: number;
  p99Ms: number;
}

/** The baseline: every device GETs the artifact at once with its Basic credentials, hashing as it streams. */
export interface BaselineJob {
  type: 'baseline';
  /** Relative artifact URL, as in a desired entry. */
  path: string;
  sha256: string;
  size: number;
}

/** Waits until every device has committed (or failed) `model`@`version`, then reports each device's timings. */
export interface AwaitVersionJob {
  type: 'await-version';
  model: string;
  version: number;
  timeoutMs: number;
}

export interface CloseJob {
  type: 'close';
}

export type DevicesJob = ConnectJob | BaselineJob | AwaitVersionJob | CloseJob;

/** One device's download (baseline) or update (rollout). Absent times: that step did not happen. */
export interface DeviceRun {
  deviceId: string;
  /** Rollout: the desired message arrived. Baseline: the GET was sent. */
  startAt: number;
  /** First artifact byte received. */
  firstByteAt: number | undefined;
  /** Last byte received and hashed. */
  downloadedAt: number | undefined;
  /** Rollout: PUBACK of the `committed` transition. */
  committedAt: number | undefined;
  bytes: number;
  /** Transitions published for this version, in order. */
  transitions: string[];
  error: string | undefined;
}

export interface DownloadsResult {
  type: 'baseline-result' | 'version-result';
  /** Baseline: when the GETs were sent. Rollout: undefined (the parent knows when it created the rollout). */
  startedAt: number | undefined;
  devices: DeviceRun[];
  /** Desired entries whose signature did not verify with the fleet key from enrollment. */
  badSignatures: number;
  /** Downloads whose size or sha256 differed from the signed ones. */
  hashMismatches: number;
  /** MQTT connections lost while the job ran. */
  linkCloses: number;
}

export interface Closed {
  type: 'closed';
}

// ---- swap load

export interface SwapLoadStart {
  type: 'start';
  host: string;
  port: number;
  /** The model every request names, without a version: the active version answers. */
  model: string;
  /** Clients: closed loop (one request in flight each) when ratePerS is 0. */
  concurrency: number;
  /**
   * Open loop: requests per second over all clients, sent on schedule whether or not earlier ones were answered
   * (as cameras send frames); latency counts from the scheduled send time. 0 = closed loop.
   */
  ratePerS: number;
  /** KServe v2 JSON request body. */
  body: string;
  /** OUTPUT0 each served version must return for `body` (version → values). */
  expected: Record<string, number[]>;
}

export interface SwapLoadStop {
  type: 'stop';
}

export interface Started {
  type: 'started';
}

export interface SwapPhaseResult {
  type: 'phase-result';
  startedAt: number;
  stoppedAt: number;
  /** Per completed request, in completion order: latency, and when it was sent (epoch ms). */
  latenciesMs: number[];
  sentAt: number[];
  /** HTTP status → count (0: no response). */
  statusCounts: Record<string, number>;
  /** model_version of 200 answers → count. */
  versions: Record<string, number>;
  /** 200 answers whose OUTPUT0 matched no version's expected values. */
  mismatches: number;
  firstError: string | undefined;
}
