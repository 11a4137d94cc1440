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
export const USER_DATA_PLACEHOLDERS = ["${GATEWAY}", "${INSTANCE}"] as const;

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

/** Fills the placeholders of a user data template for one gateway. */
export function renderUserData(template: string, gatewayName: string): string {
  return template.split("${GATEWAY}").join(gatewayName).split("${INSTANCE}").join("$(hostname)");
}
