// Manual testing entry point: `npx tsx src/lab/kube-standin/bin.ts --port 8080 --kubeconfig-out /tmp/standin.kubeconfig`
import { runKubeStandinMain } from "./main.js";

runKubeStandinMain(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
