import { formatBytes, type OutputStream } from './output.js';

/**
 * Upload progress on stderr. On a terminal: one line redrawn in place (bar, percent, bytes, rate), at most
 * every `redrawMs`. Elsewhere (CI logs, pipes): nothing while running and one summary line at the end, so logs
 * are not flooded with carriage returns.
 */
export interface Progress {
  /** `done` bytes of the total are sent. */
  update(done: number): void;
  /** Ends the line (terminal) or prints the summary (otherwise). */
  finish(): void;
  /** Clears the bar after a failure, so the error message starts on a clean line. */
  abort(): void;
}

const BAR_WIDTH = 30;

export function createProgress(stream: OutputStream, options: { label: string; total: number; now?: () => number; redrawMs?: number }): Progress {
  const now = options.now ?? (() => performance.now());
  const redrawMs = options.redrawMs ?? 100;
  const started = now();
  let lastDraw = -Infinity;
  let done = 0;
  let drawn = false;
  const tty = stream.isTTY === true;

  const rate = () => {
    const seconds = Math.max((now() - started) / 1000, 0.001);
    return `${formatBytes(Math.round(done / seconds))}/s`;
  };
  const draw = () => {
    const fraction = options.total === 0 ? 1 : Math.min(done / options.total, 1);
    const filled = Math.round(fraction * BAR_WIDTH);
    const line = `${options.label} [${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${String(Math.floor(fraction * 100)).padStart(3)}%  ${formatBytes(done)} / ${formatBytes(options.total)}  ${rate()}`;
    stream.write(`\r${line}\x1b[K`);
    drawn = true;
    lastDraw = now();
  };

  return {
    update(bytes) {
      done = bytes;
      if (tty && (now() - lastDraw >= redrawMs || done >= options.total)) draw();
    },
    finish() {
      if (tty) {
        draw();
        stream.write('\n');
        return;
      }
      const seconds = (now() - started) / 1000;
      stream.write(`${options.label}: sent ${formatBytes(done)} in ${seconds.toFixed(1)} s (${rate()})\n`);
    },
    abort() {
      if (tty && drawn) stream.write('\r\x1b[K');
    },
  };
}
