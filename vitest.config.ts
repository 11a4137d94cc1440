import { defineConfig } from "vitest/config";

// Unit and integration tier: pure logic; a real kube-apiserver and etcd (src/lab/control-plane) and
// the DigitalOcean API stand-in, on loopback. No root needed.
export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/integration/**/*.test.ts", "bench/**/*.test.ts"],
    testTimeout: 30_000,
  },
});
