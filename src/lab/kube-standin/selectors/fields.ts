/**
 * Field selectors in the syntax of k8s.io/apimachinery/pkg/fields: terms `field=value`,
 * `field==value` or `field!=value`, joined by commas; `\`, `,` and `=` in values are escaped
 * with a backslash.
 */

export interface FieldRequirement {
  field: string;
  operator: "=" | "!=";
  value: string;
}

export class FieldSelectorParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FieldSelectorParseError";
  }
}

/** Splits on separators that are not escaped with a backslash. */
function splitUnescaped(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = "";
  for (let i = 0; i < s.length; i++) {
    const ch = s[i] as string;
    if (ch === "\\" && i + 1 < s.length) {
      cur += ch + (s[i + 1] as string);
      i++;
    } else if (ch === sep) {
      out.push(cur);
      cur = "";
    } else {
      cur += ch;
    }
  }
  out.push(cur);
  return out;
}

function unescape(s: string): string {
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const ch = s[i] as string;
    if (ch === "\\") {
      const nxt = s[i + 1];
      if (nxt === "\\" || nxt === "," || nxt === "=") {
        out += nxt;
        i++;
        continue;
      }
      throw new FieldSelectorParseError(`invalid field selector: invalid escape sequence: \\${nxt ?? ""}`);
    }
    out += ch;
  }
  return out;
}

/** Finds the first unescaped operator in a term. */
function findOperator(term: string): { at: number; op: "=" | "==" | "!=" } | undefined {
  for (let i = 0; i < term.length; i++) {
    const ch = term[i];
    if (ch === "\\") {
      i++;
      continue;
    }
    if (ch === "!" && term[i + 1] === "=") return { at: i, op: "!=" };
    if (ch === "=" && term[i + 1] === "=") return { at: i, op: "==" };
    if (ch === "=") return { at: i, op: "=" };
  }
  return undefined;
}

export function parseFieldSelector(input: string): FieldRequirement[] {
  if (input.trim() === "") return [];
  return splitUnescaped(input, ",").map((term) => {
    const found = findOperator(term);
    if (!found) throw new FieldSelectorParseError(`invalid selector: '${input}'; can't understand '${term}'`);
    const field = term.slice(0, found.at).trim();
    const value = unescape(term.slice(found.at + found.op.length));
    if (field === "") throw new FieldSelectorParseError(`invalid selector: '${input}'; can't understand '${term}'`);
    return { field, operator: found.op === "!=" ? "!=" : "=", value };
  });
}

/** `getField` returns the object's value for a selectable field ("" when the field is unset). */
export function matchesFields(reqs: readonly FieldRequirement[], getField: (field: string) => string): boolean {
  for (const r of reqs) {
    const v = getField(r.field);
    if (r.operator === "=" ? v !== r.value : v === r.value) return false;
  }
  return true;
}
