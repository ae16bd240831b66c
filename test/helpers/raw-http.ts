/**
 * A bare node:http client for the abuse and bad-input tests: any method, headers and body bytes (or a
 * stream), a keep-alive agent when asked, and a client-side deadline so a hung request fails the test
 * instead of the run. Unlike fetch it lets a test send what a well-behaved client never would.
 */
import http from 'node:http';
import { expect } from 'vitest';
import { AGENT_ERRORS } from '../../agent/src/errors.js';

export interface RawReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The body parsed as JSON when the response says it is JSON (undefined otherwise or if unparsable). */
  json: unknown;
  /** Milliseconds from sending to the end of the response body. */
  ms: number;
}

export interface RawRequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  /** A keep-alive agent to reuse sockets; a fresh connection per request when omitted. */
  agent?: http.Agent;
  /** Client-side bound: the promise rejects (and the socket is destroyed) after this long. */
  timeoutMs?: number;
}

/** Sends one request and reads the whole response. Rejects on a dropped connection or the client deadline. */
export function rawRequest(url: string, options: RawRequestOptions = {}): Promise<RawReply> {
  const started = performance.now();
  const body = typeof options.body === 'string' ? Buffer.from(options.body) : options.body;
  return new Promise<RawReply>((resolve, reject) => {
    const req = http.request(url, {
      method: options.method ?? (body ? 'POST' : 'GET'),
      headers: { ...(body ? { 'content-length': String(body.length) } : {}), ...options.headers },
      agent: options.agent ?? false,
    });
    const timeoutMs = options.timeoutMs ?? 30_000;
    const timer = setTimeout(() => req.destroy(new Error(`no complete response within ${timeoutMs} ms: ${req.method} ${url}`)), timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      res.on('end', () => {
        clearTimeout(timer);
        const raw = Buffer.concat(chunks);
        let json: unknown;
        if (/json/.test(String(res.headers['content-type'] ?? ''))) {
          try {
            json = JSON.parse(raw.toString('utf8'));
          } catch {
            json = undefined;
          }
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: raw, json, ms: performance.now() - started });
      });
    });
    req.end(body);
  });
}

/** POSTs a JSON value (or already-serialised text) as application/json. */
export function postJsonRaw(url: string, value: unknown, options: Omit<RawRequestOptions, 'body'> = {}): Promise<RawReply> {
  return rawRequest(url, {
    ...options,
    method: 'POST',
    headers: { 'content-type': 'application/json', ...options.headers },
    body: typeof value === 'string' ? value : JSON.stringify(value),
  });
}

/** The {error, code} body of a refusal, or undefined when the reply is not one. */
export function refusalOf(reply: RawReply): { error: string; code: string } | undefined {
  const j = reply.json as { error?: unknown; code?: unknown } | undefined;
  if (!j || typeof j !== 'object' || typeof j.error !== 'string' || typeof j.code !== 'string') return undefined;
  return { error: j.error, code: j.code };
}

/**
 * Asserts the reply is the catalog refusal `code`: its documented status, a JSON {error, code} body with
 * a non-empty message. Returns the message so a test can check it names the problem.
 */
export function expectRefusal(reply: RawReply, code: keyof typeof AGENT_ERRORS, status: number = AGENT_ERRORS[code].httpStatus): string {
  const refusal = refusalOf(reply);
  expect(refusal, `expected a JSON {error, code} refusal ${code}, got ${reply.status} ${reply.body.subarray(0, 300).toString()}`).toBeDefined();
  expect({ status: reply.status, code: refusal!.code }, refusal!.error).toEqual({ status, code });
  expect(AGENT_ERRORS[code].httpStatus).toBe(status);
  expect(refusal!.error.length).toBeGreaterThan(0);
  return refusal!.error;
}
