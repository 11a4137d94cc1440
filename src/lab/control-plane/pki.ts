import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runCommand } from "../../util/exec.js";

/**
 * The certificates and keys a control plane on loopback needs, made with Debian's `openssl`:
 * a CA, the API server's serving certificate (for 127.0.0.1 and any extra address, such as the
 * lab's in-namespace API address), and the service-account signing key pair. Clients
 * authenticate with bearer tokens (an admin token from a token file, service-account tokens
 * from the TokenRequest API), so no client certificates are needed.
 */
export interface ControlPlanePki {
  caCert: string;
  caKey: string;
  servingCert: string;
  servingKey: string;
  saKey: string;
  saPub: string;
  /** The CA certificate (PEM), for kubeconfigs. */
  caPem: string;
}

async function openssl(args: readonly string[]): Promise<void> {
  await runCommand("openssl", args);
}

/** Makes a new PKI in `dir` (files are created there, 0600 for keys). */
export async function makePki(dir: string, extraIPs: readonly string[] = []): Promise<ControlPlanePki> {
  const p = (name: string) => join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await openssl([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.crt"),
    "-days",
    "30",
    "-subj",
    "/CN=static-egress-test-ca",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await openssl(["req", ...ec, "-keyout", p("serving.key"), "-out", p("serving.csr"), "-subj", "/CN=kube-apiserver"]);
  const sans = [
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "IP:127.0.0.1",
    ...extraIPs.map((ip) => `IP:${ip}`),
  ];
  writeFileSync(
    p("serving.ext"),
    `subjectAltName=${sans.join(",")}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n`,
  );
  await openssl([
    "x509",
    "-req",
    "-in",
    p("serving.csr"),
    "-CA",
    p("ca.crt"),
    "-CAkey",
    p("ca.key"),
    "-CAcreateserial",
    "-out",
    p("serving.crt"),
    "-days",
    "30",
    "-extfile",
    p("serving.ext"),
  ]);
  await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p("sa.key")]);
  await openssl(["pkey", "-in", p("sa.key"), "-pubout", "-out", p("sa.pub")]);
  return {
    caCert: p("ca.crt"),
    caKey: p("ca.key"),
    servingCert: p("serving.crt"),
    servingKey: p("serving.key"),
    saKey: p("sa.key"),
    saPub: p("sa.pub"),
    caPem: readFileSync(p("ca.crt"), "utf8"),
  };
}
