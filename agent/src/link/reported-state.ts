import os from 'node:os';
import type { ServedVersion } from '../inference/model-manager.js';
import type { ReportedState } from './fleet-link.js';

export interface ReportedStateSources {
  agentVersion: string;
  startedAt: Date;
  models: () => ServedVersion[];
  /** The version of a model unversioned requests go to. */
  activeVersion?: (name: string) => number | undefined;
  /** Providers the inference engine plans to use, best first. */
  providerCandidates: () => readonly string[];
  /** The update machine's summary (a later issue); {} until it exists. */
  update?: () => Record<string, unknown>;
}

/** A short hardware summary for the fleet's device page; cheap, read at each (re)connect. */
export function hardwareSummary(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    platform: os.platform(),
    arch: os.arch(),
    kernel: os.release(),
    cpuModel: cpus[0]?.model ?? null,
    cpuCount: cpus.length,
    memTotalBytes: os.totalmem(),
    node: process.version,
  };
}

/**
 * The reported state (the retained `state` topic): what this box runs and with which provider. The
 * agent-wide provider is the one its ready models got, else the first one it plans to try.
 */
export function buildReportedState(src: ReportedStateSources): ReportedState {
  const versions = src.models();
  const provider = versions.find((v) => v.state === 'ready' && v.provider)?.provider ?? src.providerCandidates()[0] ?? null;
  return {
    agentVersion: src.agentVersion,
    startedAt: src.startedAt.toISOString(),
    provider,
    models: versions.slice(0, 256).map((v) => ({
      name: v.name,
      version: v.version,
      state: v.state,
      ...(src.activeVersion ? { active: src.activeVersion(v.name) === v.version } : {}),
      provider: v.provider ?? null,
      error: v.error?.slice(0, 2000) ?? null,
    })),
    hardware: hardwareSummary(),
    update: src.update?.() ?? {},
  };
}
