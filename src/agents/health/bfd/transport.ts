import { createSocket, type Socket } from "node:dgram";
import { isIPv6 } from "node:net";
import { BFD_CONTROL_PORT } from "../../../api/datapath.js";
import { BFD_SOURCE_PORT_MAX, BFD_SOURCE_PORT_MIN, BFD_TTL } from "./packet.js";
import { StaticEgressError } from "../../../util/errors.js";

/**
 * UDP framing of single-hop BFD (RFC 5881) over node's `dgram`:
 * - one receive socket on port 3784 bound to the local address;
 * - per session, one send socket bound to (local address, a source port in 49152–65535),
 *   the same port for the session's whole life (§4), TTL 255 on every packet (§5).
 *
 * What node cannot do: read the TTL of a received datagram (no IP_RECVTTL / recvmsg
 * ancillary data in `dgram`), so the GTSM check of RFC 5881 §5 (discard unless TTL is 255)
 * is NOT enforced here. What compensates: the gateway firewall admits UDP 3784 only from
 * cluster nodes, the node agent only talks to gateway addresses it was given, and a packet
 * must still carry the right discriminators and come from the configured peer address to
 * touch a session. A host firewall rule such as `udp dport 3784 ip ttl != 255 drop` would
 * restore the exact GTSM check where the dataplane owner wants it.
 */

export interface BfdDatagram {
  data: Buffer;
  address: string;
  port: number;
}

export interface BfdSessionSocket {
  readonly localAddress: string;
  readonly localPort: number;
  send(data: Uint8Array, peer: string): Promise<void>;
  close(): Promise<void>;
}

export interface BfdTransport {
  /** Starts delivering received control packets to `onDatagram`. */
  listen(onDatagram: (d: BfdDatagram) => void): Promise<void>;
  /** Opens the send socket of one session. */
  openSessionSocket(localAddress: string): Promise<BfdSessionSocket>;
  close(): Promise<void>;
}

class BfdTransportError extends StaticEgressError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BfdTransportError";
  }
}

export interface UdpBfdTransportOptions {
  /** Address the receive socket binds to (a specific local address, or 0.0.0.0 / ::). */
  listenAddress: string;
  /** Receive port and the peers' destination port. Default 3784. */
  port?: number;
  /** Picks where the search for a free source port starts; default random. */
  random?: () => number;
  /** Reports socket errors that are not tied to a call (e.g. asynchronous ICMP errors). */
  onError?: (err: Error) => void;
}

function bindSocket(socket: Socket, address: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      socket.off("listening", onListening);
      reject(err);
    };
    const onListening = (): void => {
      socket.off("error", onError);
      resolve();
    };
    socket.once("error", onError);
    socket.once("listening", onListening);
    socket.bind({ address, port, exclusive: true });
  });
}

function closeSocket(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}

const SOURCE_PORT_COUNT = BFD_SOURCE_PORT_MAX - BFD_SOURCE_PORT_MIN + 1;

export class UdpBfdTransport implements BfdTransport {
  private readonly port: number;
  private readonly random: () => number;
  private receiver: Socket | undefined;
  private readonly sessionSockets = new Set<Socket>();

  constructor(private readonly opts: UdpBfdTransportOptions) {
    this.port = opts.port ?? BFD_CONTROL_PORT;
    this.random = opts.random ?? Math.random;
  }

  async listen(onDatagram: (d: BfdDatagram) => void): Promise<void> {
    if (this.receiver) throw new BfdTransportError("BFD transport is already listening");
    const socket = createSocket({ type: isIPv6(this.opts.listenAddress) ? "udp6" : "udp4" });
    try {
      await bindSocket(socket, this.opts.listenAddress, this.port);
    } catch (err) {
      await closeSocket(socket);
      throw new BfdTransportError(`cannot bind BFD receive socket to ${this.opts.listenAddress}:${this.port}`, {
        cause: err,
      });
    }
    socket.on("message", (data, rinfo) => onDatagram({ data, address: rinfo.address, port: rinfo.port }));
    socket.on("error", (err) => this.opts.onError?.(err));
    this.receiver = socket;
  }

  async openSessionSocket(localAddress: string): Promise<BfdSessionSocket> {
    const start = Math.floor(this.random() * SOURCE_PORT_COUNT) % SOURCE_PORT_COUNT;
    let lastError: unknown;
    for (let i = 0; i < SOURCE_PORT_COUNT; i++) {
      const port = BFD_SOURCE_PORT_MIN + ((start + i) % SOURCE_PORT_COUNT);
      const socket = createSocket({ type: isIPv6(localAddress) ? "udp6" : "udp4" });
      try {
        await bindSocket(socket, localAddress, port);
      } catch (err) {
        await closeSocket(socket);
        lastError = err;
        if ((err as NodeJS.ErrnoException).code === "EADDRINUSE") continue;
        break; // e.g. EADDRNOTAVAIL: no other port will do better
      }
      socket.setTTL(BFD_TTL);
      // Nothing is expected on a send socket; drain it so stray datagrams do not pile up.
      socket.on("message", () => undefined);
      socket.on("error", (err) => this.opts.onError?.(err));
      this.sessionSockets.add(socket);
      return this.wrap(socket, localAddress, port);
    }
    throw new BfdTransportError(
      `cannot bind a BFD source port on ${localAddress} in ${BFD_SOURCE_PORT_MIN}-${BFD_SOURCE_PORT_MAX}`,
      {
        cause: lastError,
      },
    );
  }

  private wrap(socket: Socket, localAddress: string, localPort: number): BfdSessionSocket {
    const destinationPort = this.port;
    return {
      localAddress,
      localPort,
      send: (data, peer) =>
        new Promise((resolve, reject) => {
          socket.send(data, destinationPort, peer, (err) => (err ? reject(err) : resolve()));
        }),
      close: async () => {
        this.sessionSockets.delete(socket);
        await closeSocket(socket);
      },
    };
  }

  async close(): Promise<void> {
    const sockets = [...this.sessionSockets];
    this.sessionSockets.clear();
    if (this.receiver) sockets.push(this.receiver);
    this.receiver = undefined;
    await Promise.all(sockets.map(closeSocket));
  }
}
