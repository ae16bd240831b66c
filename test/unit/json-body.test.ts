import { describe, expect, it } from 'vitest';
import { isAgentError } from '../../agent/src/errors.js';
import { jsonDepth, parseJsonBody } from '../../agent/src/http/json-body.js';

const bytes = (text: string): Uint8Array => Buffer.from(text, 'utf8');

/** The catalog code parseJsonBody throws; fails the test on anything that is not a catalog error. */
function refusal(text: string, maxDepth = 32): string {
  try {
    parseJsonBody(bytes(text), maxDepth);
  } catch (err) {
    expect(isAgentError(err), `expected a catalog error, got ${String(err)}`).toBe(true);
    return (err as { code: string }).code;
  }
  throw new Error(`expected ${text.slice(0, 40)} to be refused`);
}

describe('parseJsonBody', () => {
  it('parses a KServe request', () => {
    const body = { inputs: [{ name: 'x', shape: [2], datatype: 'FP32', data: [1, 2] }] };
    expect(parseJsonBody(bytes(JSON.stringify(body)), 32)).toEqual(body);
  });

  it('parses UTF-8 strings, escapes included', () => {
    expect(parseJsonBody(bytes('{"label": "caf\\u00e9 \\"ok\\" ☕"}'), 32)).toEqual({ label: 'café "ok" ☕' });
  });

  it('refuses a 100k-deep array with AGENT_JSON_TOO_DEEP, without a RangeError', () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    expect(refusal(deep)).toBe('AGENT_JSON_TOO_DEEP');
    // Unclosed, too: the depth check runs before the parser sees it.
    expect(refusal('{"a":'.repeat(100_000))).toBe('AGENT_JSON_TOO_DEEP');
  });

  it('accepts nesting exactly at the limit and refuses one level more', () => {
    expect(parseJsonBody(bytes('[[[1]]]'), 3)).toEqual([[[1]]]);
    expect(refusal('[[[[1]]]]', 3)).toBe('AGENT_JSON_TOO_DEEP');
    expect(refusal('{"a":{"b":{"c":{}}}}', 3)).toBe('AGENT_JSON_TOO_DEEP');
  });

  it('does not count brackets inside strings, escaped quotes included', () => {
    const text = JSON.stringify({ note: '[[[[[[{{{{{{', quoted: 'say \\"[[[[[[\\" ok' });
    expect(parseJsonBody(bytes(text), 2)).toEqual(JSON.parse(text));
    expect(jsonDepth(bytes('["[[[[", "\\"[[[["]'), 10)).toBe(1);
  });

  it('refuses a __proto__ key with AGENT_FORBIDDEN_KEY, at any depth', () => {
    expect(refusal('{"__proto__": {"polluted": true}}')).toBe('AGENT_FORBIDDEN_KEY');
    expect(refusal('{"inputs": [{"name": "x", "parameters": {"__proto__": {"isAdmin": true}}}]}')).toBe('AGENT_FORBIDDEN_KEY');
    expect(refusal('{"\\u005f_proto__": {}}')).toBe('AGENT_FORBIDDEN_KEY');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('refuses constructor.prototype with AGENT_FORBIDDEN_KEY', () => {
    expect(refusal('{"constructor": {"prototype": {}}}')).toBe('AGENT_FORBIDDEN_KEY');
    expect(refusal('{"a": [{"constructor": {"prototype": {"x": 1}}}]}')).toBe('AGENT_FORBIDDEN_KEY');
  });

  it('allows keys and strings that merely mention constructor or prototype', () => {
    expect(parseJsonBody(bytes('{"constructor": "vision team", "prototype": 1, "text": "__proto__"}'), 32)).toEqual({
      constructor: 'vision team', prototype: 1, text: '__proto__',
    });
  });

  it('refuses invalid JSON with AGENT_MALFORMED_JSON', () => {
    expect(refusal('{"inputs": [')).toBe('AGENT_MALFORMED_JSON');
    expect(refusal('{"a": 1,}')).toBe('AGENT_MALFORMED_JSON');
    expect(refusal("{'a': 1}")).toBe('AGENT_MALFORMED_JSON');
    expect(refusal('{"a": NaN}')).toBe('AGENT_MALFORMED_JSON');
    expect(refusal('inputs=1&x=2')).toBe('AGENT_MALFORMED_JSON');
  });

  it('malformed JSON that mentions prototype or constructor is still malformed, not forbidden', () => {
    expect(refusal('{"constructor": {"prototype": }')).toBe('AGENT_MALFORMED_JSON');
  });

  it('refuses an empty body with AGENT_EMPTY_BODY', () => {
    expect(refusal('')).toBe('AGENT_EMPTY_BODY');
  });

  it('reads only the given view of a larger buffer', () => {
    const whole = bytes('xx{"a":1}yy');
    expect(parseJsonBody(whole.subarray(2, 9), 32)).toEqual({ a: 1 });
  });
});
