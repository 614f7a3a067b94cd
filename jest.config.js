// jest: TypeScript tests of the public API under test/. `npm test` runs them after the native
// tests (scripts/test-all.js); test/reporter.js prints the final "N passed, N failed" line.
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.json' }] },
  moduleFileExtensions: ['ts', 'js', 'json'],
  reporters: ['default', '<rootDir>/test/reporter.js'],
  testTimeout: 30000,
};
