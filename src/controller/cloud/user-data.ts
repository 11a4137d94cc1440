import { GatewayFleetSpecError } from "../../cloud/provider.js";

/**
 * Cloud-init user data of gateway droplets. A fleet shares one user data (the provider creates
 * every slot from the same spec), so the names are:
 *
 *   ${GATEWAY}   the EgressGateway's name, substituted here;
 *   ${INSTANCE}  replaced by `$(hostname)`: on DigitalOcean a droplet's hostname is its name,
 *                which is the instance name the controller lists in status.instances. It is a
 *                shell expansion, so use it where a shell runs (runcmd/bootcmd strings, scripts).
 *
 * The other placeholders are UserDataValues. Any other `${...}` is left as it is (it may be the
 * shell's own). User data is readable by anything on the droplet (metadata service): the only
 * credential that belongs in it is the gateway agent's read-only kubeconfig.
 */
/**
 * What a template may need besides the names, each from the controller's own flags. The files are
 * read only when the template uses them, and anew for every rendering (a rotated Secret is used):
 *   ${IMAGE}                the static-egress container image (--gateway-image);
 *   ${AGENT_CONFIG_BASE64}  the agent config the controller itself runs with (--config), base64;
 *   ${KUBECONFIG_BASE64}    a kubeconfig of the gateway agent's read-only ServiceAccount
 *                           (--gateway-kubeconfig-file, from a Secret), base64; never logged.
 */
export interface UserDataValues {
  image?: string;
  agentConfig?: () => string;
  kubeconfig?: () => string;
}

/**
 * The default: prepares a Debian/Ubuntu droplet to forward and SNAT, and records which gateway
 * it belongs to. It installs no agent and holds no credential; the template that does is
 * deploy/digitalocean/gateway-user-data.yaml.
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
      # Off at boot: the gateway agent turns forwarding on once its filter (policy drop) is loaded.
      net.ipv4.ip_forward = 0
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
  const base64 = (read: (() => string) | undefined) => read && (() => Buffer.from(read()).toString("base64"));
  const fill: [string, (() => string) | undefined, string][] = [
    ["${IMAGE}", values.image === undefined ? undefined : () => values.image!, "--gateway-image"],
    ["${AGENT_CONFIG_BASE64}", base64(values.agentConfig), "--config"],
    ["${KUBECONFIG_BASE64}", base64(values.kubeconfig), "--gateway-kubeconfig-file"],
  ];
  let out = template.split("${GATEWAY}").join(gatewayName).split("${INSTANCE}").join("$(hostname)");
  for (const [placeholder, value, flag] of fill) {
    if (!out.includes(placeholder)) continue;
    if (value === undefined)
      throw new GatewayFleetSpecError(
        "userData",
        `the user data template uses ${placeholder}, which needs the controller flag ${flag}`,
      );
    out = out.split(placeholder).join(value());
  }
  return out;
}
