import { EnrollmentSchema, type Enrollment } from './credentials.js';

/**
 * Enrollment over HTTP: POST <fleet>/api/v1/enroll {token} → 201 {deviceId, secret, mqttUrl, …}.
 * Every failure is an EnrollError whose `kind` says what the operator should do; the CLI maps kinds to
 * exit codes (network/server → 1, bad URL → 2, token refused → 3).
 */
export type EnrollErrorKind =
  /** The URL is not an http(s) URL. */
  | 'usage'
  /** No answer: DNS, refused connection, TLS failure, timeout. */
  | 'unreachable'
  /** The fleet refused the token (unknown, expired, already used) or the device is revoked. */
  | 'token-refused'
  /** The fleet answered with a server error, or with something that is not an enrollment. */
  | 'server';

export class EnrollError extends Error {
  override readonly name = 'EnrollError';
  constructor(
    readonly kind: EnrollErrorKind,
    message: string,
    readonly httpStatus?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface EnrollOptions {
  fleetUrl: string;
  token: string;
  /** Whole request, connect to last byte. */
  timeoutMs?: number;
  /** Seam for tests; the real one is the global fetch (undici). */
  fetch?: typeof fetch;
}

/** The enroll endpoint for a fleet base URL (a trailing slash or an existing path prefix is kept). */
export function enrollUrl(fleetUrl: string): URL {
  let base: URL;
  try {
    base = new URL(fleetUrl);
  } catch {
    throw new EnrollError('usage', `--fleet ${JSON.stringify(fleetUrl)} is not a URL (expected e.g. http://fleet.example:8080)`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new EnrollError('usage', `--fleet must be an http:// or https:// URL, not ${base.protocol}`);
  return new URL(`${base.pathname.replace(/\/+$/, '')}/api/v1/enroll`, base);
}

export async function enroll(options: EnrollOptions): Promise<Enrollment> {
  const url = enrollUrl(options.fleetUrl);
  const doFetch = options.fetch ?? fetch;
  let response: Response;
  try {
    response = await doFetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ token: options.token }),
      signal: AbortSignal.timeout(options.timeoutMs ?? 15_000),
    });
  } catch (err) {
    throw new EnrollError('unreachable', `cannot reach the fleet server at ${url.origin}: ${describeFetchError(err)}`, undefined, { cause: err });
  }
  const text = await response.text().catch(() => '');
  const body = parseJson(text);
  if (response.status !== 200 && response.status !== 201) {
    const said = serverMessage(body) ?? (text.slice(0, 200) || response.statusText);
    const code = typeof (body as { code?: unknown } | undefined)?.code === 'string' ? ` [${(body as { code: string }).code}]` : '';
    if (response.status === 404) {
      throw new EnrollError('server', `${url.href} answered 404: is ${url.origin} an Outpost fleet server?${code}`, 404);
    }
    if ([400, 401, 403, 409, 410].includes(response.status)) {
      throw new EnrollError('token-refused', `the fleet refused the enrollment token (HTTP ${response.status}${code}): ${said}`, response.status);
    }
    throw new EnrollError('server', `the fleet server answered HTTP ${response.status}${code}: ${said}`, response.status);
  }
  const parsed = EnrollmentSchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new EnrollError('server', `the fleet server's enrollment answer is invalid at ${issue.path.join('.') || '(root)'}: ${issue.message}`, response.status);
  }
  return parsed.data;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Outpost servers answer errors as {error, code}; fastify's own errors as {message}. */
function serverMessage(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as { error?: unknown; message?: unknown };
  if (typeof b.error === 'string' && b.error.length > 0) return b.error.slice(0, 500);
  if (typeof b.message === 'string' && b.message.length > 0) return b.message.slice(0, 500);
  return undefined;
}

/** undici wraps the real cause (ECONNREFUSED, ENOTFOUND, certificate errors) in a generic "fetch failed". */
function describeFetchError(err: unknown): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'timed out';
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  if (cause?.code) return `${cause.code}${cause.message ? ` (${cause.message})` : ''}`;
  return cause?.message ?? (err as Error).message ?? String(err);
}
