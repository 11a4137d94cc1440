import { StaticEgressError } from "./errors.js";

/**
 * IPv4 arithmetic on 32-bit unsigned numbers, and sets of inclusive ranges. Destinations are
 * planned as ranges (what nftables interval maps hold), so "included minus excluded" is exact.
 */

export interface Range {
  /** First address, inclusive, as an unsigned 32-bit number. */
  from: number;
  /** Last address, inclusive. */
  to: number;
}

export class AddressError extends StaticEgressError {}

export function parseIPv4(text: string): number {
  // Character by character (no split, no regex): agents parse every pod address of a node per
  // reconcile. Four dot-separated decimal octets, 0-255, no leading zeros (the API schema
  // rejects them, and some tools read them as octal).
  let n = 0;
  let octets = 0;
  let i = 0;
  while (octets < 4) {
    const start = i;
    let v = 0;
    while (i < text.length && i - start < 4) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) break;
      v = v * 10 + (c - 48);
      i++;
    }
    const digits = i - start;
    if (digits === 0 || digits > 3 || v > 255 || (digits > 1 && text.charCodeAt(start) === 48))
      throw new AddressError(`not an IPv4 address: ${JSON.stringify(text)}`);
    n = n * 256 + v;
    octets++;
    if (octets < 4) {
      if (text.charCodeAt(i) !== 46) throw new AddressError(`not an IPv4 address: ${JSON.stringify(text)}`);
      i++;
    }
  }
  if (i !== text.length) throw new AddressError(`not an IPv4 address: ${JSON.stringify(text)}`);
  return n;
}

export function formatIPv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/** `198.51.100.7/24` -> 198.51.100.0 .. 198.51.100.255 (host bits are masked off). */
export function parseCidr(text: string): Range {
  const [addr, len, extra] = text.split("/");
  if (
    addr === undefined ||
    len === undefined ||
    extra !== undefined ||
    !/^(0|[1-9]\d?)$/.test(len) ||
    Number(len) > 32
  ) {
    throw new AddressError(`not an IPv4 CIDR: ${JSON.stringify(text)}`);
  }
  const bits = Number(len);
  const size = 2 ** (32 - bits);
  const from = Math.floor(parseIPv4(addr) / size) * size;
  return { from, to: from + size - 1 };
}

export function formatRange(r: Range): string {
  return r.from === r.to ? formatIPv4(r.from) : `${formatIPv4(r.from)}-${formatIPv4(r.to)}`;
}

/** Sorted, non-overlapping, non-adjacent ranges covering the same addresses. */
export function normalize(ranges: readonly Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => a.from - b.from);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.from <= last.to + 1) last.to = Math.max(last.to, r.to);
    else out.push({ ...r });
  }
  return out;
}

/** Addresses in `a` and not in `b`. Both inputs may be unnormalized. */
export function subtract(a: readonly Range[], b: readonly Range[]): Range[] {
  const cut = normalize(b);
  const out: Range[] = [];
  for (const r of normalize(a)) {
    let from = r.from;
    for (const c of cut) {
      if (c.to < from || c.from > r.to) continue;
      if (c.from > from) out.push({ from, to: c.from - 1 });
      from = c.to + 1;
      if (from > r.to) break;
    }
    if (from <= r.to) out.push({ from, to: r.to });
  }
  return out;
}

export function intersect(a: readonly Range[], b: readonly Range[]): Range[] {
  return subtract(a, subtract(a, b));
}

export function contains(ranges: readonly Range[], address: number): boolean {
  return ranges.some((r) => r.from <= address && address <= r.to);
}

/** The fewest CIDRs that cover exactly `r`, in order (`198.51.100.0-198.51.100.199` -> /25, /26, /29). */
export function cidrsOf(r: Range): string[] {
  const out: string[] = [];
  let from = r.from;
  while (from <= r.to) {
    // The largest block aligned at `from` that still ends within the range.
    let size = from === 0 ? 2 ** 32 : 2 ** Math.min(32, countTrailingZeros(from));
    while (from + size - 1 > r.to) size /= 2;
    out.push(`${formatIPv4(from)}/${32 - Math.log2(size)}`);
    from += size;
  }
  return out;
}

function countTrailingZeros(n: number): number {
  let z = 0;
  while (z < 32 && n % 2 ** (z + 1) === 0) z++;
  return z;
}

/** A range as one CIDR when it is one (`198.51.100.0/24`, `192.0.2.1/32`), else `from-to`: how `explain` and its kernel read-back print destinations. */
export function formatCidrOrRange(r: Range): string {
  const cidrs = cidrsOf(r);
  return cidrs.length === 1 ? cidrs[0]! : formatRange(r);
}

/** The inverse of `formatCidrOrRange` (and of `formatRange`): a CIDR, an address or `from-to`. */
export function parseCidrOrRange(text: string): Range {
  const dash = text.indexOf("-");
  if (dash >= 0) {
    const r = { from: parseIPv4(text.slice(0, dash)), to: parseIPv4(text.slice(dash + 1)) };
    if (r.from > r.to) throw new AddressError(`not an address range: ${JSON.stringify(text)}`);
    return r;
  }
  return text.includes("/") ? parseCidr(text) : { from: parseIPv4(text), to: parseIPv4(text) };
}
