import { GatewayFleetSpecError } from "../../cloud/provider.js";

/**
 * Cloud-init user data of gateway droplets. A fleet shares one user data (the provider creates
 * every slot from the same spec), so the placeholders are:
 *
 *   ${GATEWAY}   the EgressGateway's name, substituted here;
 *   ${INSTANCE}  replaced by `$(hostname)`: on DigitalOcean a droplet's hostname is its name,
 *                which is the instance name the controller lists in status.instances. It is a
 *                shell expansion, so use it where a shell runs (runcmd/bootcmd strings, scripts).
 *
 * Any other `${...}` is left as it is (it may be the shell's own). User data is readable by
 * anything on the droplet (metadata service) and through the DigitalOcean API: never put a
 * credential in it.
 */
export const USER_DATA_PLACEHOLDERS = ["${GATEWAY}", "${INSTANCE}", "${IMAGE}", "${AGENT_CONFIG_BASE64}", "${KUBECONFIG_BASE64}"] as const;

/**
 * What a template may need besides the names, each from the controller's own flags:
 *   ${IMAGE}                the static-egress container image (--gateway-image);
 *   ${AGENT_CONFIG_BASE64}  the agent config the controller itself runs with (--config), base64;
 *   ${KUBECONFIG_BASE64}    a kubeconfig of the gateway agent's read-only ServiceAccount
 *                           (--gateway-kubeconfig-file, from a Secret), base64. User data is
 *                           readable on the droplet (metadata service), nowhere else in the cluster;
 *                           the controller never logs it.
 */
export interface UserDataValues {
  image?: string;
  agentConfig?: string;
  kubeconfig?: string;
}

/**
 * The default: prepares a Debian/Ubuntu droplet to forward and SNAT, and records which gateway
 * it belongs to. It installs nothing secret and no agent: the gateway agent needs API
 * credentials, which have to come from the operator's own image or configuration management.
 */
export const DEFAULT_USER_DATA = `#cloud-config
# static-egress gateway instance (default user data; see docs/digitalocean.md)
package_update: true
packages:
  - nftables
  - conntrack
write_files:
  - path: /etc/sysctl.d/90-static-egress.conf
    content: |
      net.ipv4.ip_forward = 1
      net.ipv4.conf.all.rp_filter = 0
      net.ipv4.conf.default.rp_filter = 0
  - path: /etc/static-egress/gateway
    content: |
      GATEWAY=\${GATEWAY}
runcmd:
  - sysctl --system
  - echo "INSTANCE=\${INSTANCE}" >> /etc/static-egress/gateway
`;

/**
 * Fills the placeholders of a user data template for one gateway. A placeholder the template uses
 * without a value is an error naming the controller flag that gives it.
 */
export function renderUserData(template: string, gatewayName: string, values: UserDataValues = {}): string {
  const fill: [string, string | undefined, string][] = [
    ["${IMAGE}", values.image, "--gateway-image"],
    ["${AGENT_CONFIG_BASE64}", values.agentConfig === undefined ? undefined : Buffer.from(values.agentConfig).toString("base64"), "--config"],
    ["${KUBECONFIG_BASE64}", values.kubeconfig === undefined ? undefined : Buffer.from(values.kubeconfig).toString("base64"), "--gateway-kubeconfig-file"],
  ];
  let out = template.split("${GATEWAY}").join(gatewayName).split("${INSTANCE}").join("$(hostname)");
  for (const [placeholder, value, flag] of fill) {
    if (!out.includes(placeholder)) continue;
    if (value === undefined) throw new GatewayFleetSpecError("userData", `the user data template uses ${placeholder}, which needs the controller flag ${flag}`);
    out = out.split(placeholder).join(value);
  }
  return out;
}
