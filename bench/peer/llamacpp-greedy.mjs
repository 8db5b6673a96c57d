#!/usr/bin/env node
// Greedy continuation of given token ids with llama.cpp, through
// node-llama-cpp's prebuilt CPU binary (see setup.sh): the oracle of the
// convert test (llama.cpp loads strata's GGUF and continues a prompt exactly
// as strata does). Prints {"ids": [...]} on stdout.
//
// Usage: node llamacpp-greedy.mjs -m MODEL.gguf --ids 8185,650,1131 -n 24 [-t N]

process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = "true";
process.env.NODE_LLAMA_CPP_GPU = "false";

function die(msg, code = 2) {
    process.stderr.write(`llamacpp-greedy: ${msg}\n`);
    process.exit(code);
}

const o = { model: null, ids: null, n: 16, threads: 1 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
    const a = argv[i], v = argv[i + 1];
    if (a === "-m") { o.model = v; i++; }
    else if (a === "--ids") { o.ids = v.split(",").map(Number); i++; }
    else if (a === "-n") { o.n = Number(v); i++; }
    else if (a === "-t") { o.threads = Number(v); i++; }
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
const context = await model.createContext({
    contextSize: o.ids.length + o.n + 8, batchSize: o.ids.length, sequences: 1,
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
