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

/**
 * Why a connection that was up ended. Only 'closed-by-peer' (the broker hung up cleanly: FIN, no error, no
 * local timer involved) can be the broker refusing a message; the drainer's poison rule blames nothing else.
 * - stopped: the agent closed it (stop()).
 * - watchdog: no packet for 1.5 × keepalive (watchdog.ts), the agent dropped it: a half-open link or an MTU black hole.
 * - keepalive-timeout: mqtt.js gave up waiting for PINGRESP.
 * - socket-error: the socket failed (ECONNRESET, EPIPE, ETIMEDOUT, …).
 * - client-error: mqtt.js reported another error (a protocol error) before the close.
 */
export type DisconnectCause = 'stopped' | 'closed-by-peer' | 'watchdog' | 'keepalive-timeout' | 'socket-error' | 'client-error';

export interface DisconnectedInfo {
  reason: string;
  /** False when the agent closed the link itself (stop). */
  involuntary: boolean;
  cause: DisconnectCause;
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
