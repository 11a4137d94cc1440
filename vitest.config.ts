import { defineConfig } from "vitest/config";

// Unit and integration tier: pure logic and the API stand-ins on loopback. No root needed.
export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/integration/**/*.test.ts"],
    testTimeout: 30_000,
  },
});
