#!/usr/bin/env node
// llama.cpp prefill/decode throughput on a GGUF, through node-llama-cpp's
// prebuilt CPU binaries (see setup.sh). Measures what `strata bench` measures:
//   prefill: one batch of P prompt tokens into an empty context, logits for the
//            last position, one greedy sample      -> P / seconds
//   decode:  G more tokens, one per llama_decode, each sampled greedily from the
//            previous step's logits (after the same P-token prompt) -> G / seconds
// One warm-up run (not counted), then R timed repetitions, each on a cleared
// context. Prints one JSON object on stdout (or a table with --table); all
// diagnostics go to stderr.
//
// Usage: node llamacpp-bench.mjs -m MODEL.gguf [-t N] [--prompt-tokens P]
//          [--gen-tokens G] [--reps R] [--warmup W] [--flash-attention on|off|auto]
//          [--kv-type f32|f16|bf16|q8_0] [--table]
//        node llamacpp-bench.mjs --check    (only load the prebuilt binary; used by setup.sh)

import { performance } from "node:perf_hooks";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

// Never build, never download: only the prebuilt binaries that setup.sh installed.
process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = "true";
process.env.NODE_LLAMA_CPP_GPU = "false";

const USAGE = `usage: node llamacpp-bench.mjs -m MODEL.gguf [-t N] [--prompt-tokens P] [--gen-tokens G]
                              [--reps R] [--warmup W] [--flash-attention on|off|auto] [--kv-type T] [--table]
defaults: -t ${os.availableParallelism?.() ?? os.cpus().length} (all cores), P=512, G=128, R=3, W=1, flash attention: library default,
          KV cache: llama.cpp's default (f16)`;
const KV_TYPES = { f32: "F32", f16: "F16", bf16: "BF16", q8_0: "Q8_0" };

function die(msg, code = 2) {
    process.stderr.write(`llamacpp-bench: ${msg}\n`);
    process.exit(code);
}

function parseArgs(argv) {
    const o = {
        model: null, threads: os.availableParallelism?.() ?? os.cpus().length,
        prompt: 512, gen: 128, reps: 3, warmup: 1, fa: null, table: false, kvType: null,
    };
    const int = (name, v, min) => {
        const n = Number(v);
        if (v === undefined || !Number.isInteger(n) || n < min) die(`${name} needs an integer >= ${min}, got ${v}\n${USAGE}`);
        return n;
    };
    for (let i = 0; i < argv.length; i++) {
        let a = argv[i];
        let v;
        const eq = a.indexOf("=");
        if (a.startsWith("--") && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
        const next = () => (v !== undefined ? v : argv[++i]);
        switch (a) {
            case "-m": case "--model": o.model = next(); break;
            case "-t": case "--threads": o.threads = int("--threads", next(), 1); break;
            case "-p": case "--prompt-tokens": o.prompt = int("--prompt-tokens", next(), 1); break;
            case "-n": case "--gen-tokens": o.gen = int("--gen-tokens", next(), 1); break;
            case "-r": case "--reps": o.reps = int("--reps", next(), 1); break;
            case "--warmup": o.warmup = int("--warmup", next(), 0); break;
            case "--flash-attention": case "-fa": {
                const f = next();
                if (f === "on" || f === "1" || f === "true") o.fa = true;
                else if (f === "off" || f === "0" || f === "false") o.fa = false;
                else if (f === "auto") o.fa = "auto";
                else die(`--flash-attention takes on|off|auto, got ${f}`);
                break;
            }
            case "--kv-type": {
                const k = next();
                if (!KV_TYPES[k]) die(`--kv-type takes f32|f16|bf16|q8_0, got ${k}`);
                o.kvType = k;
                break;
            }
            case "--table": o.table = true; break;
            case "--check": o.check = true; break;
            case "--json": o.table = false; break;
            case "-h": case "--help": process.stdout.write(USAGE + "\n"); process.exit(0);
            default: die(`unknown argument ${a}\n${USAGE}`);
        }
    }
    if (o.check) return o;
    if (!o.model) die(`-m MODEL is required\n${USAGE}`);
    if (!fs.existsSync(o.model)) die(`model file not found: ${o.model}`);
    return o;
}

const stats = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    const median = s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
    const mean = s.reduce((a, b) => a + b, 0) / s.length;
    return { min: s[0], median, max: s[s.length - 1], mean, runs: xs };
};
const round = (x) => Math.round(x * 100) / 100;
const roundStats = (st) => Object.fromEntries(Object.entries(st).map(([k, v]) => [k, Array.isArray(v) ? v.map(round) : round(v)]));

const opts = parseArgs(process.argv.slice(2));

let nlc;
try {
    nlc = await import("node-llama-cpp");
} catch (e) {
    die(`cannot load node-llama-cpp (${e.message}); run bench/peer/setup.sh first`, 3);
}
const { getLlama, LlamaLogLevel } = nlc;
const nlcVersion = (() => {
    try {
        const pj = new URL("./node_modules/node-llama-cpp/package.json", import.meta.url);
        return JSON.parse(fs.readFileSync(pj, "utf8")).version;
    } catch { return "unknown"; }
})();

const llamaLog = [];
let llama;
try {
    llama = await getLlama({
        gpu: false,               // CPU backend only
        build: "never",           // never compile llama.cpp
        skipDownload: true,       // never fetch llama.cpp sources
        usePrebuiltBinaries: true,
        progressLogs: false,
        maxThreads: opts.threads, // cap the pool so the context uses exactly N
        logLevel: LlamaLogLevel.info,     // lowered to error once the context exists
        logger: (level, message) => {
            llamaLog.push(message);
            if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal)
                process.stderr.write(`llama.cpp: ${message}${message.endsWith("\n") ? "" : "\n"}`);
        },
    });
} catch (e) {
    die(`getLlama failed: ${e.message}\n(the prebuilt @node-llama-cpp/linux-x64 binary is missing or does not load; run bench/peer/setup.sh)`, 3);
}
if (llama.gpu !== false) die(`expected a CPU-only llama.cpp, got gpu=${llama.gpu}`, 3);
if (llama.buildType !== "prebuilt") die(`expected node-llama-cpp's prebuilt binary, got a ${llama.buildType}`, 3);
if (opts.check) {
    // setup.sh's smoke test: the prebuilt CPU binary loads.
    const r = llama.llamaCppRelease;
    process.stdout.write(`node-llama-cpp ${nlcVersion}, llama.cpp ${r.repo}@${r.release}, ${llama.buildType} binary, CPU only\n`);
    await llama.dispose();
    process.exit(0);
}

let model;
try {
    model = await llama.loadModel({ modelPath: opts.model, gpuLayers: 0 });
} catch (e) {
    die(`llama.cpp could not load ${opts.model}: ${e.message}`, 4);
}
const P = opts.prompt, G = opts.gen;
const ctxOptions = {
    contextSize: P + G + 8,
    batchSize: P,                                    // the whole prompt is one llama_decode
    sequences: 1,
    threads: { ideal: opts.threads, min: opts.threads },
    ignoreMemorySafetyChecks: true,
};
if (opts.fa !== null) ctxOptions.flashAttention = opts.fa;
if (opts.kvType !== null) {
    ctxOptions.experimentalKvCacheKeyType = KV_TYPES[opts.kvType];
    ctxOptions.experimentalKvCacheValueType = KV_TYPES[opts.kvType];
}
let context;
try {
    context = await model.createContext(ctxOptions);
} catch (e) {
    die(`llama.cpp could not create a ${ctxOptions.contextSize}-token context: ${e.message}`, 4);
}
if (context.batchSize < P) die(`context batch size ${context.batchSize} < prompt tokens ${P}`, 3);
const sequence = context.getSequence();
llama.logLevel = LlamaLogLevel.error;
// What llama.cpp resolved "auto" flash attention to, and which CPU kernel variant it picked.
const faLine = llamaLog.find((m) => /Flash Attention (enabled|disabled)/i.test(m));
const flashAttention = faLine ? /enabled/i.test(faLine) : context.flashAttention;
const cpuVariant = (() => {
    try {
        const m = fs.readFileSync("/proc/self/maps", "utf8").match(/libggml-cpu-([\w.-]+?)\.so/);
        return m ? m[1] : "unknown";
    } catch { return "unknown"; }
})();

// Prompt: P real tokens of ordinary English text (BOS first when the model wants one).
const text = ("The quick brown fox jumps over the lazy dog. Now is the winter of our discontent " +
    "made glorious summer by this sun of York; and all the clouds that lour'd upon our house " +
    "in the deep bosom of the ocean buried. ").repeat(Math.ceil(P / 40) + 2);
let promptTokens = model.tokenize(text, false);
if (model.tokens.bos != null && model.tokens.shouldPrependBosToken) promptTokens = [model.tokens.bos, ...promptTokens];
if (promptTokens.length < P) die(`could only make ${promptTokens.length} prompt tokens, need ${P}`, 3);
promptTokens = promptTokens.slice(0, P);

async function once() {
    await sequence.clearHistory();
    if (sequence.nextTokenIndex !== 0) throw new Error("context not empty after clearHistory");
    const it = sequence.evaluate(promptTokens, { temperature: 0, yieldEogToken: true });
    const t0 = performance.now();
    let r = await it.next();                      // decode P prompt tokens (one batch) + sample token 1
    const t1 = performance.now();
    if (r.done) throw new Error("generation ended after the prompt");
    for (let i = 0; i < G; i++) {                 // G x (decode 1 token + sample)
        r = await it.next();
        if (r.done) throw new Error(`generation ended after ${i} decode steps`);
    }
    const t2 = performance.now();
    await it.return();
    if (sequence.nextTokenIndex !== P + G) throw new Error(`expected ${P + G} tokens in context, have ${sequence.nextTokenIndex}`);
    return { prefill: P / ((t1 - t0) / 1e3), decode: G / ((t2 - t1) / 1e3), prefill_ms: t1 - t0, decode_ms: t2 - t1 };
}

const runs = [];
try {
    for (let i = 0; i < opts.warmup; i++) await once();
    for (let i = 0; i < opts.reps; i++) {
        runs.push(await once());
        process.stderr.write(`llamacpp-bench: rep ${i + 1}/${opts.reps}: prefill ${runs.at(-1).prefill.toFixed(1)} tok/s, decode ${runs.at(-1).decode.toFixed(1)} tok/s\n`);
    }
} catch (e) {
    die(`benchmark run failed: ${e.message}`, 5);
}

const release = llama.llamaCppRelease;
const result = {
    engine: "llama.cpp via node-llama-cpp",
    model: path.resolve(opts.model),
    model_bytes: fs.statSync(opts.model).size,
    prompt_tokens: P,
    gen_tokens: G,
    threads: opts.threads,
    context_threads: context.currentThreads,
    reps: opts.reps,
    warmup: opts.warmup,
    prefill_tok_s: roundStats(stats(runs.map((r) => r.prefill))),
    decode_tok_s: roundStats(stats(runs.map((r) => r.decode))),
    node_llama_cpp_version: nlcVersion,
    llama_cpp_build: `${release.repo}@${release.release}`,
    binary: llama.buildType,
    gpu: llama.gpu,
    flash_attention: flashAttention,
    kv_type: opts.kvType ?? "f16 (default)",
    cpu_backend_variant: cpuVariant,
    batch_size: context.batchSize,
    context_size: context.contextSize,
    system_info: llama.systemInfo,
};

await context.dispose();
await model.dispose();
await llama.dispose();

if (opts.table) {
    const f = (x) => x.toFixed(2).padStart(10);
    const out = [
        `llama.cpp (${result.llama_cpp_build}, node-llama-cpp ${nlcVersion}, ${result.binary}, CPU) on ${path.basename(opts.model)}`,
        `threads ${opts.threads}, P=${P}, G=${G}, reps ${opts.reps} (+${opts.warmup} warm-up), CPU ${cpuVariant}, flash attention ${flashAttention === true ? "on" : flashAttention === false ? "off" : flashAttention}`,
        `${"metric".padEnd(16)}${"min".padStart(10)}${"median".padStart(10)}${"max".padStart(10)}`,
        `${"prefill tok/s".padEnd(16)}${f(result.prefill_tok_s.min)}${f(result.prefill_tok_s.median)}${f(result.prefill_tok_s.max)}`,
        `${"decode tok/s".padEnd(16)}${f(result.decode_tok_s.min)}${f(result.decode_tok_s.median)}${f(result.decode_tok_s.max)}`,
    ];
    process.stdout.write(out.join("\n") + "\n");
} else {
    process.stdout.write(JSON.stringify(result) + "\n");
}
