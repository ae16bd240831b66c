/**
 * The CLI's exit statuses: scripts branch on them, so they are stable and documented (main.ts --help and
 * docs/cli.md). They follow the HTTP status the fleet server answered, or what failed before a request.
 */
export const EXIT = {
  OK: 0,
  /**
   * The server failed (5xx) or could not be reached; or the CLI stopped waiting without an outcome:
   * `rollouts watch --timeout` passed, a device command timed out (`devices cmd --wait`).
   */
  FAILURE: 1,
  /** Wrong command line: unknown command or option, missing or malformed argument, unreadable local file. */
  USAGE: 2,
  /** 401/403: no, unknown or revoked token, or a token that may not do this. */
  AUTH: 3,
  /** 404: no such device, model or version. */
  NOT_FOUND: 4,
  /**
   * 409: already exists, in use, revoked, not allowed in the rollout's state. Also what a wait ends with when the
   * outcome is a refusal: the watched rollout ended halted, rolled_back or aborted; the device command failed.
   */
  CONFLICT: 5,
  /** 400/413/415/416: the server refused the input (invalid manifest, not ONNX, too large …). */
  INVALID: 6,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export function exitCodeForStatus(status: number): ExitCode {
  if (status === 401 || status === 403) return EXIT.AUTH;
  if (status === 404) return EXIT.NOT_FOUND;
  if (status === 409) return EXIT.CONFLICT;
  if (status === 400 || status === 413 || status === 415 || status === 416 || status === 422) return EXIT.INVALID;
  return EXIT.FAILURE;
}

/** A failure the CLI reports as one line on stderr (`outpost: <message>`) and an exit status. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export function usageError(message: string): CliError {
  return new CliError(message, EXIT.USAGE);
}
