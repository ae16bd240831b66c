import { z } from 'zod';
import { fail } from '../errors.js';

/**
 * Validates one part of a request with its zod schema; FLEET_BAD_REQUEST naming the first problems otherwise.
 * A missing body counts as `{}`, so routes whose fields are all optional accept a bodiless POST.
 */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, where: 'body' | 'query' | 'params'): z.output<S> {
  const parsed = schema.safeParse(value ?? {});
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.slice(0, 3).map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.message}`);
  throw fail('FLEET_BAD_REQUEST', `invalid ${where}: ${problems.join('; ')}`);
}

/** ISO-8601 date-time with Z or an offset, as query and body fields. */
export const isoDateTime = z.iso.datetime({ offset: true });
