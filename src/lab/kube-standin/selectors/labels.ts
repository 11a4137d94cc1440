/**
 * Label selectors in the string syntax of k8s.io/apimachinery/pkg/labels:
 * `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`, joined by commas.
 */

export type LabelOperator = "=" | "!=" | "in" | "notin" | "exists" | "!" | "gt" | "lt";

export interface LabelRequirement {
  key: string;
  operator: LabelOperator;
  values: string[];
}

export class SelectorParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SelectorParseError";
  }
}

type Token =
  | { kind: "id"; text: string }
  | { kind: "op"; text: "=" | "==" | "!=" | "!" | "(" | ")" | "," | ">" | "<" }
  | { kind: "end" };

const SPECIAL = new Set(["=", "!", "(", ")", ",", ">", "<"]);

function tokenize(input: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < input.length) {
    const ch = input[i] as string;
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    if (SPECIAL.has(ch)) {
      const two = input.slice(i, i + 2);
      if (two === "==" || two === "!=") {
        out.push({ kind: "op", text: two });
        i += 2;
      } else {
        out.push({ kind: "op", text: ch as "=" });
        i++;
      }
      continue;
    }
    let j = i;
    while (j < input.length && !SPECIAL.has(input[j] as string) && !/\s/.test(input[j] as string)) j++;
    out.push({ kind: "id", text: input.slice(i, j) });
    i = j;
  }
  out.push({ kind: "end" });
  return out;
}

const NAME_PART = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Problems with a label key (qualified name), or [] when it is valid. */
export function labelKeyErrors(key: string): string[] {
  const parts = key.split("/");
  let name = key;
  const errs: string[] = [];
  if (parts.length > 2) return ["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/'"];
  if (parts.length === 2) {
    const prefix = parts[0] as string;
    name = parts[1] as string;
    if (prefix.length === 0) errs.push("prefix part must be non-empty");
    else if (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix)) errs.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character");
  }
  if (name.length === 0) errs.push("name part must be non-empty");
  else if (name.length > 63) errs.push("name part must be no more than 63 characters");
  else if (!NAME_PART.test(name)) errs.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')");
  return errs;
}

/** Problems with a label value, or [] when it is valid (empty is valid). */
export function labelValueErrors(value: string): string[] {
  if (value.length === 0) return [];
  if (value.length > 63) return ["must be no more than 63 characters"];
  if (!NAME_PART.test(value)) return ["a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"];
  return [];
}

/** Parses a selector string. The empty string selects everything ([]). */
export function parseLabelSelector(input: string): LabelRequirement[] {
  const tokens = tokenize(input);
  let pos = 0;
  const peek = (): Token => tokens[pos] as Token;
  const next = (): Token => tokens[pos++] as Token;
  const reqs: LabelRequirement[] = [];
  if (peek().kind === "end") return reqs;

  const fail = (why: string): never => {
    throw new SelectorParseError(`unable to parse requirement: ${why}`);
  };
  const checkKey = (key: string): void => {
    const errs = labelKeyErrors(key);
    if (errs.length) fail(`key: Invalid value: ${JSON.stringify(key)}: ${errs.join("; ")}`);
  };
  const checkValue = (v: string): void => {
    const errs = labelValueErrors(v);
    if (errs.length) fail(`values[0][${v}]: Invalid value: ${JSON.stringify(v)}: ${errs.join("; ")}`);
  };

  for (;;) {
    let t = next();
    if (t.kind === "op" && t.text === "!") {
      const k = next();
      if (k.kind !== "id") fail(`found '${tokenText(k)}', expected: identifier after '!'`);
      const key = (k as { text: string }).text;
      checkKey(key);
      reqs.push({ key, operator: "!", values: [] });
    } else if (t.kind === "id") {
      const key = t.text;
      checkKey(key);
      const op = peek();
      if (op.kind === "end" || (op.kind === "op" && op.text === ",")) {
        reqs.push({ key, operator: "exists", values: [] });
      } else if (op.kind === "op" && (op.text === "=" || op.text === "==" || op.text === "!=")) {
        next();
        const v = peek();
        let value = "";
        if (v.kind === "id") {
          value = v.text;
          next();
        } else if (!(v.kind === "end" || (v.kind === "op" && v.text === ","))) {
          fail(`found '${tokenText(v)}', expected: identifier`);
        }
        checkValue(value);
        reqs.push({ key, operator: op.text === "!=" ? "!=" : "=", values: [value] });
      } else if (op.kind === "op" && (op.text === ">" || op.text === "<")) {
        next();
        const v = next();
        if (v.kind !== "id" || !/^-?\d+$/.test(v.text)) fail(`for 'Gt', 'Lt' operators, the value must be an integer`);
        reqs.push({ key, operator: op.text === ">" ? "gt" : "lt", values: [(v as { text: string }).text] });
      } else if (op.kind === "id" && (op.text === "in" || op.text === "notin")) {
        next();
        const open = next();
        if (!(open.kind === "op" && open.text === "(")) fail(`found '${tokenText(open)}', expected: '('`);
        const values: string[] = [];
        for (;;) {
          const v = peek();
          if (v.kind === "id") {
            values.push(v.text);
            next();
          } else {
            values.push("");
          }
          const sep = next();
          if (sep.kind === "op" && sep.text === ")") break;
          if (!(sep.kind === "op" && sep.text === ",")) fail(`found '${tokenText(sep)}', expected: ',', or ')'`);
        }
        const cleaned = values.length === 1 && values[0] === "" ? [] : values;
        if (cleaned.length === 0) fail(`for 'in', 'notin' operators, values set can't be empty`);
        cleaned.forEach(checkValue);
        reqs.push({ key, operator: op.text, values: cleaned });
      } else {
        fail(`found '${tokenText(op)}', expected: in, notin, =, ==, !=, gt, lt`);
      }
    } else {
      fail(`found '${tokenText(t)}', expected: !, identifier, or 'end of string'`);
    }
    t = next();
    if (t.kind === "end") break;
    if (!(t.kind === "op" && t.text === ",")) fail(`found '${tokenText(t)}', expected: ',' or 'end of string'`);
    if (peek().kind === "end") fail("found 'end of string', expected: !, identifier");
  }
  return reqs;
}

function tokenText(t: Token): string {
  return t.kind === "end" ? "" : t.text;
}

export function matchesLabels(reqs: readonly LabelRequirement[], labels: Readonly<Record<string, string>> | undefined): boolean {
  for (const r of reqs) if (!matchesRequirement(r, labels ?? {})) return false;
  return true;
}

function matchesRequirement(r: LabelRequirement, labels: Readonly<Record<string, string>>): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, r.key);
  const value = has ? labels[r.key] : undefined;
  switch (r.operator) {
    case "=":
    case "in":
      return has && r.values.includes(value as string);
    case "!=":
    case "notin":
      return !has || !r.values.includes(value as string);
    case "exists":
      return has;
    case "!":
      return !has;
    case "gt":
    case "lt": {
      if (!has || !/^-?\d+$/.test(value as string)) return false;
      const lhs = Number(value);
      const rhs = Number(r.values[0]);
      return r.operator === "gt" ? lhs > rhs : lhs < rhs;
    }
  }
}

/** Back to the canonical string form (used to tell watchers apart in logs and tests). */
export function formatLabelSelector(reqs: readonly LabelRequirement[]): string {
  return reqs
    .map((r) => {
      switch (r.operator) {
        case "=":
        case "!=":
          return `${r.key}${r.operator}${r.values[0]}`;
        case "in":
        case "notin":
          return `${r.key} ${r.operator} (${r.values.join(",")})`;
        case "exists":
          return r.key;
        case "!":
          return `!${r.key}`;
        case "gt":
          return `${r.key}>${r.values[0]}`;
        case "lt":
          return `${r.key}<${r.values[0]}`;
      }
    })
    .join(",");
}
