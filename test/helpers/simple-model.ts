/**
 * The `simple` model's contract, shared by the abuse and bad-input tests: OUTPUT0 = INPUT0 + INPUT1,
 * OUTPUT1 = INPUT0 − INPUT1, INT32 [-1,16]; version 2 (the one served under the default 'latest' policy)
 * adds SIMPLE_V2_OFFSET to OUTPUT0. Valid requests to build bad ones from, and a check of its answer.
 */
import { SIMPLE_V2_OFFSET } from '../../models/simple.js';
import type { RawReply } from './raw-http.js';

export const A = Array.from({ length: 16 }, (_, i) => i);
export const B = Array.from({ length: 16 }, () => 1);
export const simpleInput = (name: string, extra: Record<string, unknown> = {}) => ({ name, shape: [1, 16], datatype: 'INT32', data: name === 'INPUT0' ? A : B, ...extra });
export const VALID_SIMPLE = { inputs: [simpleInput('INPUT0'), simpleInput('INPUT1')] };

/** A valid request whose INPUT0 is shifted by `offset`, so concurrent answers can be told apart. */
export const simpleRequest = (offset = 0) => ({
  inputs: [
    { name: 'INPUT0', shape: [1, 16], datatype: 'INT32', data: A.map((v) => v + offset) },
    { name: 'INPUT1', shape: [1, 16], datatype: 'INT32', data: A.map(() => 1) },
  ],
});

/**
 * True when `reply` is the `simple` model's right answer to simpleRequest(offset): OUTPUT0 = INPUT0 + INPUT1
 * (+ SIMPLE_V2_OFFSET from version 2, the one served under the default 'latest' policy), OUTPUT1 = INPUT0 − INPUT1.
 */
export function isSimpleAnswer(reply: RawReply, offset: number): boolean {
  const json = reply.json as { model_version?: string; outputs?: { name: string; data: number[] }[] } | undefined;
  const o0 = json?.outputs?.find((o) => o.name === 'OUTPUT0')?.data;
  const o1 = json?.outputs?.find((o) => o.name === 'OUTPUT1')?.data;
  const v2 = json?.model_version === '2' ? SIMPLE_V2_OFFSET : 0;
  return reply.status === 200 && JSON.stringify(o0) === JSON.stringify(A.map((v) => v + offset + 1 + v2)) && JSON.stringify(o1) === JSON.stringify(A.map((v) => v + offset - 1));
}
