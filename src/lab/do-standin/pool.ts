/** A pool of IPv4 addresses handed out in order and returned on release (reused last). */
export class AddressPool {
  private readonly addresses: string[];
  private readonly used = new Set<string>();
  private cursor = 0;

  constructor(addresses: string[]) {
    this.addresses = addresses;
  }

  /** Every host address of `cidr` except the network, the first host (gateway) and broadcast. */
  static fromCidr(cidr: string): AddressPool {
    const [base, bitsText] = cidr.split("/");
    const bits = Number(bitsText);
    if (!base || !Number.isInteger(bits) || bits < 8 || bits > 30) throw new Error(`bad CIDR ${cidr}`);
    const start = ipToInt(base) & (bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0);
    const size = 2 ** (32 - bits);
    const out: string[] = [];
    for (let i = 2; i < size - 1; i++) out.push(intToIp((start + i) >>> 0));
    return new AddressPool(out);
  }

  static union(...pools: AddressPool[]): AddressPool {
    return new AddressPool(pools.flatMap((p) => p.addresses));
  }

  take(): string | undefined {
    for (let n = 0; n < this.addresses.length; n++) {
      const idx = (this.cursor + n) % this.addresses.length;
      const addr = this.addresses[idx];
      if (addr !== undefined && !this.used.has(addr)) {
        this.used.add(addr);
        this.cursor = (idx + 1) % this.addresses.length;
        return addr;
      }
    }
    return undefined;
  }

  release(addr: string): void {
    this.used.delete(addr);
  }

  reset(): void {
    this.used.clear();
    this.cursor = 0;
  }
}

export function ipToInt(ip: string): number {
  const parts = ip.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`bad IPv4 address ${ip}`);
  }
  return (((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!) >>> 0;
}

function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}
