export function requireRoot(): void {
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    throw new Error("benchmarks need root (network namespaces, nftables): run as root");
  }
}
