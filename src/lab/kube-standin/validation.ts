/** Object metadata checks every kind gets on the real server (names, labels, annotations). */

import { fieldInvalid, fieldRequired, type FieldError } from "./errors.js";
import { labelKeyErrors, labelValueErrors } from "./selectors/labels.js";
import type { ObjectMeta } from "./types.js";

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export type NameRule = "subdomain" | "label" | "path-segment";

export function nameErrors(name: string, rule: NameRule): string[] {
  switch (rule) {
    case "subdomain":
      if (name.length > 253) return ["must be no more than 253 characters"];
      return DNS1123_SUBDOMAIN.test(name)
        ? []
        : ["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"];
    case "label":
      if (name.length > 63) return ["must be no more than 63 characters"];
      return DNS1123_LABEL.test(name)
        ? []
        : ["a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"];
    case "path-segment":
      if (name === "." || name === "..") return [`may not be '${name}'`];
      return /[/%]/.test(name) ? ["may not contain '/' or '%'"] : [];
  }
}

export function validateObjectMeta(meta: ObjectMeta, rule: NameRule, namespaced: boolean): FieldError[] {
  const errs: FieldError[] = [];
  if (!meta.name) errs.push(fieldRequired("metadata.name", "name or generateName is required"));
  else for (const why of nameErrors(meta.name, rule)) errs.push(fieldInvalid("metadata.name", meta.name, why));
  if (namespaced && !meta.namespace) errs.push(fieldRequired("metadata.namespace"));
  for (const [k, v] of Object.entries(meta.labels ?? {})) {
    for (const why of labelKeyErrors(k)) errs.push(fieldInvalid("metadata.labels", k, why));
    if (typeof v !== "string") errs.push(fieldInvalid(`metadata.labels`, v, "label values must be strings"));
    else for (const why of labelValueErrors(v)) errs.push(fieldInvalid("metadata.labels", v, why));
  }
  for (const [k, v] of Object.entries(meta.annotations ?? {})) {
    for (const why of labelKeyErrors(k)) errs.push(fieldInvalid("metadata.annotations", k, why));
    if (typeof v !== "string") errs.push(fieldInvalid("metadata.annotations", v, "annotation values must be strings"));
  }
  const finalizers = meta.finalizers ?? [];
  if (!Array.isArray(finalizers)) errs.push(fieldInvalid("metadata.finalizers", finalizers, "must be a list of strings"));
  else
    finalizers.forEach((f, i) => {
      if (typeof f !== "string" || labelKeyErrors(f).length) errs.push(fieldInvalid(`metadata.finalizers[${i}]`, f, "name part must consist of alphanumeric characters, '-', '_' or '.'"));
    });
  return errs;
}
