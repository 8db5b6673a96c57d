#!/usr/bin/env node
// Greedy continuation of given token ids with llama.cpp, through
// node-llama-cpp's prebuilt CPU binary (see setup.sh): the oracle of the
// convert test (llama.cpp loads strata's GGUF and continues a prompt exactly
// as strata does). Prints {"ids": [...]} on stdout.
//
// Usage: node llamacpp-greedy.mjs -m MODEL.gguf --ids 8185,650,1131 -n 24 [-t N]
//        [--kv-type f32|f16|bf16|q8_0] [--ctx N]
// --kv-type sets llama.cpp's K and V cache type (its default is f16); --ctx
// the context it is created with (default: the prompt plus -n).

process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = "true";
process.env.NODE_LLAMA_CPP_GPU = "false";

function die(msg, code = 2) {
    process.stderr.write(`llamacpp-greedy: ${msg}\n`);
    process.exit(code);
}

const o = { model: null, ids: null, n: 16, threads: 1, kvType: null, ctx: 0 };
const KV_TYPES = { f32: "F32", f16: "F16", bf16: "BF16", q8_0: "Q8_0" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
    const a = argv[i], v = argv[i + 1];
    if (a === "-m") { o.model = v; i++; }
    else if (a === "--ids") { o.ids = v.split(",").map(Number); i++; }
    else if (a === "-n") { o.n = Number(v); i++; }
    else if (a === "-t") { o.threads = Number(v); i++; }
    else if (a === "--kv-type") { o.kvType = KV_TYPES[v]; if (!o.kvType) die(`--kv-type ${v}: expected f32, f16, bf16 or q8_0`); i++; }
    else if (a === "--ctx") { o.ctx = Number(v); i++; }
    else die(`unknown argument ${a}`);
}
if (!o.model || !o.ids || o.ids.some((x) => !Number.isInteger(x)) || !(o.n >= 1)) die("usage: -m MODEL.gguf --ids A,B,C -n N [-t T]");

let nlc;
try {
    nlc = await import("node-llama-cpp");
} catch (e) {
    die(`cannot load node-llama-cpp (${e.message}); run bench/peer/setup.sh first`, 3);
}
const { getLlama, LlamaLogLevel } = nlc;
const llama = await getLlama({
    gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, progressLogs: false,
    maxThreads: o.threads, logLevel: LlamaLogLevel.error,
});
let model;
try {
    model = await llama.loadModel({ modelPath: o.model, gpuLayers: 0 });
} catch (e) {
    die(`llama.cpp could not load ${o.model}: ${e.message}`, 4);
}
if (o.ctx && o.ctx < o.ids.length + o.n) die(`--ctx ${o.ctx} is shorter than the prompt plus -n`);
const kv = o.kvType ? { experimentalKvCacheKeyType: o.kvType, experimentalKvCacheValueType: o.kvType } : {};
const context = await model.createContext({
    contextSize: o.ctx || o.ids.length + o.n + 8, batchSize: Math.min(o.ids.length, 512), sequences: 1, ...kv,
    threads: { ideal: o.threads, min: o.threads }, ignoreMemorySafetyChecks: true,
});
const sequence = context.getSequence();
const out = [];
const it = sequence.evaluate(o.ids, { temperature: 0, yieldEogToken: true });
for (let i = 0; i < o.n; i++) {
    const r = await it.next();
    if (r.done) break;
    out.push(r.value);
}
await it.return();
process.stdout.write(JSON.stringify({ ids: out }) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
