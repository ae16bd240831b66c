import secureJson from 'secure-json-parse';
import { fail } from '../errors.js';

/**
 * Parses a JSON body after refusing what would hurt: nesting deeper than `maxDepth` (checked by one pass
 * over the bytes before JSON.parse builds anything) and __proto__ / constructor.prototype keys.
 */
export function parseJsonBody(bytes: Uint8Array, maxDepth: number): unknown {
  if (bytes.length === 0) throw fail('AGENT_EMPTY_BODY', 'empty request body; a JSON object is expected');
  const depth = jsonDepth(bytes, maxDepth);
  if (depth > maxDepth) throw fail('AGENT_JSON_TOO_DEEP', `JSON nests deeper than ${maxDepth} levels (limits.maxJsonDepth)`);
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
  try {
    return secureJson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' });
  } catch (err) {
    const message = (err as Error).message;
    if (/prototype|constructor/i.test(message) && !(err instanceof SyntaxError)) {
      throw fail('AGENT_FORBIDDEN_KEY', 'JSON contains a forbidden __proto__ or constructor.prototype key');
    }
    throw fail('AGENT_MALFORMED_JSON', `body is not valid JSON: ${message.slice(0, 200)}`);
  }
}

/** Deepest [ / { nesting, skipping string contents; stops counting once past `limit`. */
export function jsonDepth(bytes: Uint8Array, limit: number): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) {
        max = depth;
        if (max > limit) return max;
      }
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}
