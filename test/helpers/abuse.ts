/**
 * Shared by the HTTP abuse tests (slowloris, load shedding, fuzz): the check, after an attack, that the
 * agent still gives `simple`'s right answer and reports itself live.
 */
import { expect } from 'vitest';
import { postJsonRaw, rawRequest } from './raw-http.js';
import { isSimpleAnswer, simpleRequest } from './simple-model.js';

export async function expectStillServes(baseUrl: string): Promise<void> {
  const r = await postJsonRaw(`${baseUrl}/v2/models/simple/infer`, simpleRequest(5));
  expect(isSimpleAnswer(r, 5), `${r.status} ${r.body.toString().slice(0, 300)}`).toBe(true);
  const live = await rawRequest(`${baseUrl}/v2/health/live`);
  expect(live.status).toBe(200);
}
