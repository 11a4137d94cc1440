import { defineConfig } from "vitest/config";

// Lab tier: real kernel networking in network namespaces (root). Files run one at a time:
// two cores, and each file builds its own namespace cluster.
export default defineConfig({
  test: {
    include: ["test/lab/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
