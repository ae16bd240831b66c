import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

/**
 * Enforces a maximum MQTT packet size in front of aedes (research §5.5 M4).
 *
 * Why: aedes 1.2 has no packet-size option and mqtt-packet 9 buffers a whole packet before parsing it, so a
 * client declaring a 256 MB remaining length makes the broker buffer whatever it sends until the connect
 * timeout. The guard reads each fixed header (1 byte + 1–4 byte remaining length, MQTT 3.1.1 §2.2) as bytes
 * arrive and destroys the connection the moment a header declares more than `maxPacketBytes` in total,
 * before any of the body is buffered. The body bytes themselves are passed through untouched.
 */
export class FrameSizeScanner {
  private state: 'header' | 'length' | 'body' = 'header';
  private lengthValue = 0;
  private lengthBytes = 0;
  private multiplier = 1;
  private bodyLeft = 0;

  constructor(private readonly maxPacketBytes: number) {}

  /** Feeds the next chunk of the inbound byte stream; returns a reason when the stream must be closed. */
  scan(chunk: Uint8Array): string | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'body') {
        const take = Math.min(this.bodyLeft, chunk.length - i);
        i += take;
        this.bodyLeft -= take;
        if (this.bodyLeft === 0) this.state = 'header';
        continue;
      }
      if (this.state === 'header') {
        i += 1;
        this.state = 'length';
        this.lengthValue = 0;
        this.lengthBytes = 0;
        this.multiplier = 1;
        continue;
      }
      const byte = chunk[i++]!;
      this.lengthValue += (byte & 0x7f) * this.multiplier;
      this.multiplier *= 128;
      this.lengthBytes += 1;
      if (byte & 0x80) {
        // [MQTT-2.2.3]: at most four remaining-length bytes.
        if (this.lengthBytes === 4) return 'malformed remaining length';
        continue;
      }
      const total = 1 + this.lengthBytes + this.lengthValue;
      if (total > this.maxPacketBytes) return `packet of ${total} bytes exceeds the ${this.maxPacketBytes}-byte limit`;
      this.bodyLeft = this.lengthValue;
      this.state = this.bodyLeft === 0 ? 'header' : 'body';
    }
    return undefined;
  }
}

/**
 * A Duplex that aedes can `handle()` like a socket: writes go straight to the socket, reads pass through a
 * FrameSizeScanner. Backpressure is kept in both directions (socket paused while aedes does not read; writes
 * complete on the socket's drain).
 */
export class MqttFrameGuard extends Duplex {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  private readonly scanner: FrameSizeScanner;

  constructor(private readonly socket: Socket, maxPacketBytes: number, onViolation: (reason: string) => void) {
    super({ allowHalfOpen: false });
    this.remoteAddress = socket.remoteAddress;
    this.remotePort = socket.remotePort;
    this.scanner = new FrameSizeScanner(maxPacketBytes);
    socket.on('data', (chunk: Buffer) => {
      if (this.destroyed) return;
      const violation = this.scanner.scan(chunk);
      if (violation !== undefined) {
        onViolation(violation);
        this.destroy();
        return;
      }
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.socket.write(chunk)) callback();
    else this.socket.once('drain', () => callback());
  }

  // mqtt-packet writes one packet as several small writes inside cork()/uncork(); send them as one.
  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this._write(Buffer.concat(chunks.map((c) => c.chunk)), 'binary', callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    callback(error);
  }
}
