import type { Db } from '../../../shared/src/sqlite.js';
import type { DeviceRecord, DeviceStore, EnrollOutcome } from './fleet-store.js';

interface DeviceRow {
  id: string;
  secret_hash: string;
  tags: string;
  enrolled_at: string;
  revoked_at: string | null;
  online: number;
  last_seen: string | null;
  reported: string | null;
  last_seq: number;
}

interface EnrollmentTokenRow {
  tags: string;
  expires_at: string;
  used_at: string | null;
  device_id: string | null;
}

function toRecord(r: DeviceRow): DeviceRecord {
  return {
    id: r.id,
    secretHash: r.secret_hash,
    tags: JSON.parse(r.tags) as Record<string, string>,
    enrolledAt: r.enrolled_at,
    revokedAt: r.revoked_at,
    online: r.online === 1,
    lastSeen: r.last_seen,
    reported: r.reported === null ? null : (JSON.parse(r.reported) as Record<string, unknown>),
    lastSeq: r.last_seq,
  };
}

const COLUMNS = 'id, secret_hash, tags, enrolled_at, revoked_at, online, last_seen, reported, last_seq';

/** Devices and their enrollment in SQLite (tables `devices`, `enrollment_tokens`). */
export class SqliteDeviceStore implements DeviceStore {
  private readonly selectOne;
  private readonly selectAll;
  private readonly selectStanding;
  private readonly selectToken;
  private readonly useToken;
  private readonly insertDevice;
  private readonly reenrollDevice;
  private readonly revokeDevice;
  private readonly selectCredentials;
  private readonly allOffline;
  readonly enroll: DeviceStore['enroll'];

  constructor(db: Db) {
    this.selectOne = db.prepare<[string], DeviceRow>(`SELECT ${COLUMNS} FROM devices WHERE id = ?`);
    this.selectStanding = db.prepare<[string], { revoked: number }>('SELECT revoked_at IS NOT NULL AS revoked FROM devices WHERE id = ?');
    this.selectAll = db.prepare<[], DeviceRow>(`SELECT ${COLUMNS} FROM devices ORDER BY id`);
    this.selectToken = db.prepare<[string], EnrollmentTokenRow>('SELECT tags, expires_at, used_at, device_id FROM enrollment_tokens WHERE token_hash = ?');
    // `used_at IS NULL` in the WHERE makes the use itself the one-time check, whatever ran before it.
    this.useToken = db.prepare('UPDATE enrollment_tokens SET used_at = ?, device_id = ? WHERE token_hash = ? AND used_at IS NULL');
    this.insertDevice = db.prepare('INSERT INTO devices (id, secret_hash, tags, enrolled_at) VALUES (?, ?, ?, ?)');
    this.reenrollDevice = db.prepare('UPDATE devices SET secret_hash = ?, tags = ?, enrolled_at = ?, revoked_at = NULL WHERE id = ?');
    this.revokeDevice = db.prepare('UPDATE devices SET revoked_at = COALESCE(revoked_at, ?), online = 0 WHERE id = ?');
    this.selectCredentials = db.prepare<[], { id: string; secret_hash: string }>('SELECT id, secret_hash FROM devices WHERE revoked_at IS NULL ORDER BY id');
    this.allOffline = db.prepare('UPDATE devices SET online = 0 WHERE online = 1');
    this.enroll = db.transaction((input: Parameters<DeviceStore['enroll']>[0]): EnrollOutcome => {
      const token = this.selectToken.get(input.tokenHash);
      if (!token) return { ok: false, reason: 'unknown' };
      if (token.used_at !== null) return { ok: false, reason: 'used' };
      if (token.expires_at <= input.now) return { ok: false, reason: 'expired' };
      const tokenTags = JSON.parse(token.tags) as Record<string, string>;
      let id = token.device_id;
      const existing = id === null ? undefined : this.selectOne.get(id);
      if (id === null) {
        // 48 random bits per id; a collision is astronomically rare, but never overwrite a device because of one.
        for (let tries = 0; id === null || this.selectOne.get(id); tries++) {
          if (tries >= 8) throw new Error('cannot generate an unused device id');
          id = input.newId();
        }
      }
      if (this.useToken.run(input.now, id, input.tokenHash).changes !== 1) return { ok: false, reason: 'used' };
      if (existing) {
        // Re-enrollment keeps the device's tags unless the token names new ones.
        const tags = Object.keys(tokenTags).length > 0 ? JSON.stringify(tokenTags) : existing.tags;
        this.reenrollDevice.run(input.secretHash, tags, input.now, id);
      } else {
        this.insertDevice.run(id, input.secretHash, JSON.stringify(tokenTags), input.now);
      }
      return { ok: true, device: toRecord(this.selectOne.get(id)!), reenrolled: existing !== undefined };
    });
  }

  get(id: string): DeviceRecord | undefined {
    const row = this.selectOne.get(id);
    return row && toRecord(row);
  }

  standing(id: string): 'active' | 'revoked' | undefined {
    const row = this.selectStanding.get(id);
    return row === undefined ? undefined : row.revoked ? 'revoked' : 'active';
  }

  list(): DeviceRecord[] {
    return this.selectAll.all().map(toRecord);
  }

  revoke(id: string, now: string): { id: string; revokedAt: string } | undefined {
    if (this.revokeDevice.run(now, id).changes === 0) return undefined;
    return { id, revokedAt: this.selectOne.get(id)!.revoked_at! };
  }

  credentials(): { deviceId: string; secretHash: string }[] {
    return this.selectCredentials.all().map((r) => ({ deviceId: r.id, secretHash: r.secret_hash }));
  }

  markAllOffline(): number {
    return this.allOffline.run().changes;
  }
}
