import js from "@eslint/js";
import stylistic from "@stylistic/eslint-plugin";
import tseslint from "typescript-eslint";

/** Prettier formats to 120 columns; what it cannot break (long strings, comments) may reach this, never more. */
const MAX_LINE = 160;

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", "src/cloud/digitalocean/generated/**", "deploy/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    plugins: { "@stylistic": stylistic },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-console": "off",
      "@stylistic/max-len": ["error", { code: MAX_LINE, tabWidth: 2 }],
    },
  },
);
