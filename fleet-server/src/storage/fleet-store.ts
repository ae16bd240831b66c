import path from 'node:path';
import { openDatabase, type Db } from '../../../shared/src/sqlite.js';
import { SqliteDeviceStore } from './devices-store.js';
import { SqliteIngestStore } from './ingest-store.js';
import { FLEET_MIGRATIONS } from './migrations.js';
import { SqliteTokenStore } from './token-store.js';

/**
 * The fleet server's data layer behind one small interface (DESIGN §4 "Storage"): SQLite here, so a
 * PostgreSQL implementation can replace it for a fleet that outgrows one box. Every method is synchronous
 * and each write is one transaction; times are canonical ISO-8601 UTC text (`…Z`), JSON columns are parsed
 * at this boundary. The registry works on `db` directly (its own module, same file).
 */
export interface FleetStore {
  readonly devices: DeviceStore;
  readonly ingest: IngestStore;
  readonly tokens: TokenStore;
  /** The SQLite handle, for the registry. */
  readonly db: Db;
  close(): void;
}

export interface DeviceRecord {
  id: string;
  secretHash: string;
  tags: Record<string, string>;
  enrolledAt: string;
  revokedAt: string | null;
  online: boolean;
  lastSeen: string | null;
  /** The last full state message (online: true) the device sent, or null. */
  reported: Record<string, unknown> | null;
  /** Highest seq stored from this device. */
  lastSeq: number;
}

export type EnrollOutcome =
  | { ok: true; device: DeviceRecord; reenrolled: boolean }
  | { ok: false; reason: 'unknown' | 'used' | 'expired' };

export interface DeviceStore {
  get(id: string): DeviceRecord | undefined;
  /** The cheap check ingest makes per message: enrolled and active, revoked, or unknown. */
  standing(id: string): 'active' | 'revoked' | undefined;
  list(): DeviceRecord[];
  /**
   * Uses an enrollment token and creates (or, for a token carrying a device id that exists, re-enrolls) the
   * device, atomically: two concurrent uses of one token cannot both succeed.
   */
  enroll(input: { tokenHash: string; now: string; secretHash: string; newId: () => string }): EnrollOutcome;
  /** Marks the device revoked (keeps the first revocation time); undefined for an unknown device. */
  revoke(id: string, now: string): { id: string; revokedAt: string } | undefined;
  /** Every device that may connect, for an external broker's password file. */
  credentials(): { deviceId: string; secretHash: string }[];
  /** On start with the embedded broker nobody is connected yet; returns how many rows changed. */
  markAllOffline(): number;
}

export interface TokenStore {
  countOperatorTokens(): number;
  createOperatorToken(row: { id: string; tokenHash: string; name: string; createdAt: string }): void;
  /** The active (not revoked) operator token with this sha256, or undefined. */
  findOperatorToken(tokenHash: string): { id: string; name: string } | undefined;
  createEnrollmentToken(row: { tokenHash: string; tags: Record<string, string>; createdAt: string; expiresAt: string; deviceId: string | null }): void;
}

/** What one accepted agent message writes, besides its dedup record. Built by telemetry/handlers. */
export type IngestRows =
  | { kind: 'telemetry'; points: ModelPointRow[]; system: { windowEnd: string; data: unknown } | null }
  | { kind: 'events'; event: { ts: string; kind: string; severity: string; message: string; data: unknown } }
  | { kind: 'cmd/result'; result: { id: string; ok: boolean; body: unknown } }
  | { kind: 'state'; online: boolean; reported: Record<string, unknown> | null };

export interface ModelPointRow {
  model: string;
  version: number;
  windowStart: string;
  windowEnd: string;
  requests: number;
  failures: number;
  p50: number;
  p95: number;
  p99: number;
  latencyHist: Record<string, number>;
  detail: unknown;
}

export type StoredModelPoint = Omit<ModelPointRow, 'model' | 'detail'> & { seq: number };

export interface StoredEvent {
  seq: number;
  ts: string;
  kind: string;
  severity: string;
  message: string;
  data: unknown;
}

export interface PruneCounts {
  modelPoints: number;
  systemPoints: number;
  events: number;
  cmdResults: number;
  received: number;
}

export interface IngestStore {
  /**
   * Stores one agent message exactly once: in one transaction, records (deviceId, seq) and writes `rows` only
   * when that pair is new (and above the device's pruned watermark). last_seen is updated either way.
   */
  accept(envelope: { deviceId: string; seq: number; receivedAt: string }, rows: IngestRows): 'stored' | 'duplicate';
  /** The broker's last will (no seq): the device is offline. Not a message, never deduplicated. */
  markOffline(deviceId: string): void;
  /** Model points with windowEnd in (since, until], ordered by windowEnd then seq. */
  modelPoints(q: { deviceId: string; model: string; since: string; until: string }): IterableIterator<StoredModelPoint>;
  /** Events with ts in (since, until] (until null = no bound) and seq > afterSeq, ordered by seq. */
  events(q: { deviceId: string; since: string; until: string | null; afterSeq: number; limit: number }): StoredEvent[];
  /** Deletes data older than `cutoff`; see SqliteIngestStore.prune for why dedup still holds afterwards. */
  prune(cutoff: string): PruneCounts;
}

/** Opens (creating and migrating) <dataDir>/fleet.db. */
export function openFleetStore(dataDir: string): FleetStore {
  const db = openDatabase(path.join(dataDir, 'fleet.db'), FLEET_MIGRATIONS, 'fleet server');
  return {
    db,
    devices: new SqliteDeviceStore(db),
    ingest: new SqliteIngestStore(db),
    tokens: new SqliteTokenStore(db),
    close: () => db.close(),
  };
}
