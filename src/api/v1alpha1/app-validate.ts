import type { AppSpec } from "./app.js";
import { SpecValidator, type FieldError } from "./validate.js";

/**
 * Checks of an App that the CRD schema cannot make (CEL cost, or they need the controller's
 * configuration). The same function runs in `apps spec validate`, `apps create/update` (before
 * anything is sent) and in the controller (which sets the Invalid condition).
 */
export interface AppCheckOptions {
  /**
   * Where DOCR images come from, e.g. `registry.digitalocean.com/acme` (the controller's
   * --apps-docr-registry): "" when the controller has none (DOCR components are refused),
   * undefined when not known (offline validation).
   */
  docrRegistry?: string;
}

/**
 * A spec as DigitalOcean's app spec (schema, CEL rules, then the checks below). Fills schema
 * defaults in `spec` in place. Returns the problems, each naming its field; empty when valid.
 */
export function validateAppSpec(
  spec: unknown,
  validator: SpecValidator = new SpecValidator(),
  opts: AppCheckOptions = {},
): FieldError[] {
  const errors = validator.check("App", spec);
  if (errors.length > 0) return errors;
  const s = spec as AppSpec;
  const out: FieldError[] = [];
  for (const [list, components] of [
    ["services", s.services ?? []],
    ["workers", s.workers ?? []],
  ] as const) {
    components.forEach((c, i) => {
      const at = `spec.${list}[${i}]`;
      (c.envs ?? []).forEach((e, j) => {
        // DigitalOcean replaces ${...} with bindable values (other components' URLs, databases);
        // passed on literally, an app would run with a broken setting.
        if (e.value?.includes("${"))
          out.push({
            field: `${at}.envs[${j}].value`,
            message: "bindable variables (${...}) are not resolved by static-egress",
          });
      });
      if (c.image?.registry_type === "DOCR" && opts.docrRegistry === "") {
        out.push({
          field: `${at}.image.registry_type`,
          message: "DOCR images need the controller's --apps-docr-registry (this cluster's registry)",
        });
      }
    });
  }
  return out;
}

/** A whole App object: its spec, and its name, which is the spec's name. */
export function validateApp(
  obj: { metadata?: { name?: string }; spec?: unknown },
  validator?: SpecValidator,
  opts?: AppCheckOptions,
): FieldError[] {
  if (obj.spec === undefined || obj.spec === null) return [{ field: "spec", message: "required field is missing" }];
  const errors = validateAppSpec(obj.spec, validator, opts);
  const name = (obj.spec as { name?: unknown }).name;
  if (obj.metadata?.name !== undefined && typeof name === "string" && obj.metadata.name !== name) {
    errors.push({ field: "metadata.name", message: `metadata.name must equal spec.name ("${name}")` });
  }
  return errors;
}
