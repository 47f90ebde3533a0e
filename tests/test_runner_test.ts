/**
 * The test runner's (tools/test.ts) duration format, which its summary table prints.
 */

import assert from "node:assert/strict";
import { formatSeconds } from "../tools/test.ts";

Deno.test("formatSeconds: tenths under a minute, then whole seconds that never read 60", () => {
  assert.equal(formatSeconds(0), "0.0 s");
  assert.equal(formatSeconds(42.04), "42.0 s");
  assert.equal(formatSeconds(59.94), "59.9 s");
  assert.equal(formatSeconds(59.96), "1m 00s");
  assert.equal(formatSeconds(65.2), "1m 05s");
  assert.equal(formatSeconds(479.6), "8m 00s");
  assert.equal(formatSeconds(479.4), "7m 59s");
  assert.equal(formatSeconds(3600), "60m 00s");
});
