import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';

/**
 * A multipart/form-data body streamed from disk: the optional `manifest` field, then the file field `artifact`
 * read chunk by chunk only when the HTTP client pulls for more (so memory stays at a few chunks whatever the
 * file size, and the bytes pulled are the bytes handed to the socket, which drives the progress bar).
 * The exact length is known up front, so the request carries Content-Length and the server can refuse an
 * oversize upload before it is sent.
 */
export interface MultipartUpload {
  body: ReadableStream<Uint8Array>;
  contentType: string;
  /** Bytes of the whole body. */
  length: number;
  /** Bytes of the file alone. */
  fileSize: number;
}

/** Bytes read from the file per pull. */
const CHUNK_BYTES = 256 * 1024;

/** Quotes a file name for Content-Disposition (no quotes, backslashes or line breaks survive). */
function quoted(name: string): string {
  return `"${name.replace(/["\\\r\n]/g, '_')}"`;
}

export async function multipartUpload(options: {
  file: string;
  fileName: string;
  /** Manifest JSON text, sent as is (the server validates it). */
  manifest?: string;
  /** Called with the file bytes handed to the HTTP client so far. */
  onBytes(sent: number): void;
}): Promise<MultipartUpload> {
  const boundary = `outpost-${randomBytes(12).toString('hex')}`;
  const manifestPart = options.manifest === undefined ? '' : `--${boundary}\r\nContent-Disposition: form-data; name="manifest"\r\n\r\n${options.manifest}\r\n`;
  const head = Buffer.from(
    `${manifestPart}--${boundary}\r\nContent-Disposition: form-data; name="artifact"; filename=${quoted(options.fileName)}\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const file = await open(options.file, 'r');
  let fileSize: number;
  try {
    fileSize = (await file.stat()).size;
  } catch (err) {
    await file.close();
    throw err;
  }
  let sent = 0;
  let stage: 'head' | 'file' | 'tail' | 'done' = 'head';
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        if (stage === 'head') {
          stage = 'file';
          controller.enqueue(head);
          return;
        }
        if (stage === 'file') {
          if (sent < fileSize) {
            const chunk = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, fileSize - sent));
            const { bytesRead } = await file.read(chunk, 0, chunk.length, sent);
            if (bytesRead === 0) throw new Error(`${options.file} shrank while it was being uploaded`);
            sent += bytesRead;
            controller.enqueue(chunk.subarray(0, bytesRead));
            options.onBytes(sent);
            return;
          }
          stage = 'tail';
          await file.close();
          controller.enqueue(tail);
          return;
        }
        stage = 'done';
        controller.close();
      } catch (err) {
        stage = 'done';
        await file.close().catch(() => undefined);
        controller.error(err);
      }
    },
    async cancel() {
      stage = 'done';
      await file.close().catch(() => undefined);
    },
  });
  return { body, contentType: `multipart/form-data; boundary=${boundary}`, length: head.length + fileSize + tail.length, fileSize };
}
