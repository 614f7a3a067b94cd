// jest reporter: one summary line the test runner (scripts/test-all.js) parses.
//   [N skipped]        only when some tests were skipped or todo
//   N passed, N failed  suites that failed to run count as failures
'use strict';

class SummaryReporter {
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests + results.numTodoTests;
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    const lines = [];
    if (skipped > 0) lines.push(`${skipped} skipped`);
    lines.push(`${results.numPassedTests} passed, ${failed} failed`);
    process.stdout.write(`${lines.join('\n')}\n`);
  }
}

module.exports = SummaryReporter;
