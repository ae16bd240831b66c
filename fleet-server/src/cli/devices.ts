import type { Command } from 'commander';
import type { DeviceView } from '../devices/device-view.js';
import { parseDurationSeconds, parseTags } from './args.js';
import { action, addGlobalOptions, type CliIo } from './context.js';
import { details, formatAge, formatBytes, formatTags, table } from './output.js';

/** A device as GET /api/v1/devices lists it: the server's own view type, so the two cannot drift apart. */
export type DeviceSummary = DeviceView;

interface DeviceDetail extends DeviceSummary {
  reported: { models?: Array<{ name: string; version: number; state: string; provider?: string | null; error?: string | null }> } | null;
}

interface CreatedToken {
  token: string;
  expiresAt: string;
  tags: Record<string, string>;
  deviceId: string | null;
}

const status = (d: DeviceSummary) => (d.revoked ? 'revoked' : d.online ? 'yes' : 'no');
const modelsCell = (d: DeviceSummary) => (d.models.length === 0 ? '-' : d.models.map((m) => `${m.name}@${m.version}:${m.state}`).join(','));

function outboxCell(o: DeviceSummary['outbox']): string {
  if (!o) return '-';
  let text = `${o.rows} rows ${formatBytes(o.bytes)}`;
  if (o.droppedTelemetry > 0) text += `, ${o.droppedTelemetry} dropped`;
  if (o.deadLettered > 0) text += `, ${o.deadLettered} dead-lettered`;
  return text;
}

const devicePath = (id: string) => `/api/v1/devices/${encodeURIComponent(id)}`;

/** Adds `outpost devices …`; returns the group so other files can add commands to it (commands.ts). */
export function registerDeviceCommands(program: Command, io: CliIo): Command {
  const devices = program.command('devices').description('enroll, list, inspect and revoke edge devices');

  addGlobalOptions(
    devices
      .command('token')
      .description('create a one-time enrollment token (printed alone on stdout: T=$(outpost devices token))')
      .option('--tags <pairs>', 'tags the device gets, e.g. line=3,site=a')
      .option('--ttl <duration>', 'how long the token is valid: 3600, 30m, 1h, 7d (default: the server\'s, 1h unless configured)')
      .option('--device <id>', 're-enroll this device id (or name the new device); default: the agent picks its id'),
  ).action(
    action(io, async ({ api, out, opts }) => {
      const body = {
        tags: typeof opts.tags === 'string' ? parseTags(opts.tags) : {},
        ...(typeof opts.ttl === 'string' ? { ttlSeconds: parseDurationSeconds(opts.ttl, '--ttl') } : {}),
        ...(typeof opts.device === 'string' ? { deviceId: opts.device } : {}),
      };
      const created = await api.request<CreatedToken>('POST', '/api/v1/enrollment-tokens', { json: body });
      out.result(created, () => created.token);
      if (!out.json) {
        out.note(`expires ${created.expiresAt}; tags ${formatTags(created.tags)}; ${created.deviceId ? `enrolls device ${created.deviceId}` : 'the agent picks its device id'}`);
      }
    }),
  );

  addGlobalOptions(devices.command('ls').description('list devices: tags, online, execution provider, models, last seen, outbox')).action(
    action(io, async ({ api, out, now }) => {
      const answer = await api.request<{ devices: DeviceSummary[] }>('GET', '/api/v1/devices');
      out.result(answer, () =>
        table(
          ['ID', 'TAGS', 'ONLINE', 'PROVIDER', 'MODELS', 'LAST SEEN', 'OUTBOX'],
          answer.devices.map((d) => [d.id, formatTags(d.tags), status(d), d.provider ?? '-', modelsCell(d), formatAge(d.lastSeen, now()), outboxCell(d.outbox)]),
        ),
      );
      if (!out.json && answer.devices.length === 0) out.note('no devices enrolled yet; create a token with: outpost devices token');
    }),
  );

  addGlobalOptions(devices.command('show').description('one device in detail, with the state it last reported').argument('<id>', 'device id')).action(
    action(io, async ({ api, out, now }, [id]) => {
      const d = await api.request<DeviceDetail>('GET', devicePath(id!));
      out.result(d, () => {
        const head = details([
          ['id', d.id],
          ['tags', formatTags(d.tags)],
          ['online', status(d)],
          ['enrolled', d.enrolledAt],
          ['last seen', `${d.lastSeen ?? 'never'}${d.lastSeen ? ` (${formatAge(d.lastSeen, now())})` : ''}`],
          ['agent', d.agentVersion ?? '-'],
          ['provider', d.provider ?? '-'],
          ['outbox', outboxCell(d.outbox)],
        ]);
        const reported = d.reported?.models ?? d.models;
        if (reported.length === 0) return `${head}\nmodels    none reported`;
        const rows = reported.map((m) => {
          const r = m as { provider?: string | null; error?: string | null };
          return [m.name, String(m.version), m.state, r.provider ?? '-', r.error ?? ''];
        });
        return `${head}\n\n${table(['MODEL', 'VERSION', 'STATE', 'PROVIDER', 'ERROR'], rows)}`;
      });
    }),
  );

  addGlobalOptions(devices.command('revoke').description('revoke a device: its credentials stop working and it is disconnected').argument('<id>', 'device id')).action(
    action(io, async ({ api, out }, [id]) => {
      const revoked = await api.request<{ id: string; revokedAt: string }>('POST', `${devicePath(id!)}/revoke`);
      out.result(revoked, () => `revoked ${revoked.id} at ${revoked.revokedAt}`);
    }),
  );
  return devices;
}
