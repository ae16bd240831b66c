import type { DesiredMessage } from '../../../shared/src/mqtt/messages.js';

/** Value types of the fleet link: its status, its events, and the reported state the agent supplies. */
export type LinkState = 'connecting' | 'connected' | 'disconnected' | 'stopped';

export interface LinkStatus {
  state: LinkState;
  mqttUrl: string;
  connectedSince: string | null;
  lastError: string | null;
  /** Successful connections after the first one. */
  reconnects: number;
  desiredRevision: number | null;
}

export interface ConnectedInfo {
  /** True for every connection after the first. */
  reconnect: boolean;
  /** Time since the previous connection was lost (reconnects only), ms. */
  outageMs: number | null;
  /** The broker still had this device's session (clean: false). */
  sessionPresent: boolean;
}

export interface DisconnectedInfo {
  reason: string;
  /** False when the agent closed the link itself (stop). */
  involuntary: boolean;
}

/** Typed events (MQTT.js TypedEmitter style, on Node's generic EventEmitter). */
export interface LinkEvents {
  connected: [ConnectedInfo];
  disconnected: [DisconnectedInfo];
  desired: [DesiredMessage];
}

/** The reported state the agent contributes; the link adds v, deviceId, seq, ts, online and outbox stats. */
export interface ReportedState {
  agentVersion: string;
  startedAt: string;
  provider: string | null;
  models: { name: string; version: number; state: string; provider: string | null; error: string | null }[];
  hardware: Record<string, unknown>;
  update?: Record<string, unknown>;
}
