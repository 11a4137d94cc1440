import { defineConfig } from "vitest/config";

// Image tier: builds the OCI image (scripts/build-image.sh: debootstrap, Node.js from the npm
// registry, buildah) and runs it with podman in a loopback-only network namespace (root).
export default defineConfig({
  test: {
    include: ["test/image/**/*.test.ts"],
    testTimeout: 180_000,
    hookTimeout: 25 * 60_000,
    fileParallelism: false,
  },
});
