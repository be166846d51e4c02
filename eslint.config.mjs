// Lint rules that keep two promises the code makes (README, "Architecture"):
// workflow code stays deterministic and bundles without Node, and no promise
// is dropped by accident. Type-aware: typescript-eslint reads tsconfig.json.
import { builtinModules } from 'node:module';
import tseslint from 'typescript-eslint';

// What the workflow bundle must never reach: Node's built-ins, the SDK's
// non-workflow packages, the activities' implementations, and the YAML parser.
const NODE = builtinModules; // and node:* below
const notInWorkflowCode = (extraYamlHint) => ({
  paths: [
    ...NODE.map((name) => ({ name, message: 'workflow code runs in a deterministic sandbox: do I/O in an activity' })),
    { name: 'yaml', message: `the YAML parser stays out of the workflow bundle${extraYamlHint}` },
    ...['@temporalio/activity', '@temporalio/client', '@temporalio/worker'].map((name) => ({
      name,
      message: 'workflow code imports only @temporalio/workflow',
    })),
  ],
  patterns: [
    { group: ['node:*'], message: 'workflow code runs in a deterministic sandbox: do I/O in an activity' },
    {
      group: ['**/activities', '**/activities/*', '**/keymanager/*', '**/store/*', '**/platform/*'],
      allowTypeImports: true,
      message: 'workflow code calls activities through proxies (workflows/steps.ts); import their types only',
    },
  ],
});

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.tools/**', 'bin/**', 'eslint.config.mjs'] },
  // typescript-eslint's type-checked recommended rules everywhere, with two on top.
  ...tseslint.configs.recommendedTypeChecked.map((c) => ({ ...c, files: ['**/*.ts'] })),
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      eqeqeq: 'error',
      '@typescript-eslint/no-unused-vars': 'error',
      // Messages list servers as `${names}`: an array's comma-joined text is what they mean.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowArray: true, allowNumber: true }],
    },
  },
  {
    // Test doubles implement async interfaces with values they already have.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/require-await': 'off' },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', notInWorkflowCode('')] },
  },
  {
    // Workflows import domain/: it is held to the same rules, except the one
    // module that parses inventory files (never imported by workflow code).
    files: ['domain/**/*.ts'],
    ignores: ['domain/inventory-file.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        notInWorkflowCode(': parse files in domain/inventory-file.ts'),
      ],
    },
  },
);
