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
    // secure-json-parse throws a SyntaxError for malformed JSON and for a forbidden key alike; the text
    // parses as plain JSON only in the second case. (Re-parsing costs only on this refusal path.)
    if (isValidJson(text)) throw fail('AGENT_FORBIDDEN_KEY', 'JSON contains a forbidden __proto__ or constructor.prototype key');
    throw fail('AGENT_MALFORMED_JSON', `body is not valid JSON: ${(err as Error).message.slice(0, 200)}`);
  }
}

function isValidJson(text: string): boolean {
  try {
    JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
    return true;
  } catch {
    return false;
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
