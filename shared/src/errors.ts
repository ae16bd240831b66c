/**
 * The error type every Outpost component throws at a boundary. The code is stable and documented;
 * retry, backoff and rollback logic read `retryable`, never the message text.
 */
export interface ErrorSpec {
  /** HTTP status the code maps to. */
  readonly httpStatus: number;
  /** True when the same request may succeed later (overload, not ready, timeout). */
  readonly retryable: boolean;
  /** One line for the docs: when the code is returned. */
  readonly description: string;
}

export class OutpostError<Code extends string = string> extends Error {
  readonly code: Code;
  readonly httpStatus: number;
  readonly retryable: boolean;
  /** Extra headers the HTTP layer sends with the error, e.g. Retry-After. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: Code, spec: ErrorSpec, message: string, options: { cause?: unknown; headers?: Record<string, string> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'OutpostError';
    this.code = code;
    this.httpStatus = spec.httpStatus;
    this.retryable = spec.retryable;
    this.headers = options.headers ?? {};
  }

  toJSON(): { error: string; code: Code } {
    return { error: this.message, code: this.code };
  }
}

/** Builds a typed `fail(code, message)` helper over one catalog. */
export function errorFactory<Catalog extends Record<string, ErrorSpec>>(catalog: Catalog) {
  return function fail(
    code: keyof Catalog & string,
    message: string,
    options: { cause?: unknown; headers?: Record<string, string> } = {},
  ): OutpostError<keyof Catalog & string> {
    return new OutpostError(code, catalog[code] as ErrorSpec, message, options);
  };
}
