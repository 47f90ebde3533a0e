/**
 * Worker body of {@linkcode QuantPool} (quant_pool.ts): quantises the fp32 values it is sent
 * to one ggml block type and sends the blocks back (both buffers transferred, not copied).
 * @module
 */

import { quantizeBlocks } from "./quant_pool.ts";

interface Job {
  id: number;
  type: number;
  values: Float32Array;
}

// deno-lint-ignore no-explicit-any
const scope = self as any;
scope.onmessage = (e: MessageEvent<Job>) => {
  const { id, type, values } = e.data;
  try {
    const bytes = quantizeBlocks(type, values);
    scope.postMessage({ id, bytes }, [bytes.buffer]);
  } catch (err) {
    scope.postMessage({ id, error: (err as Error).message });
  }
};
