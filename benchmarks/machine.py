"""The machine a benchmark ran on and what it can do: every speed figure goes with this.

    python benchmarks/machine.py            # the machine line and its matmul limits (~15 s)
    python benchmarks/machine.py --smoke    # seconds: 256 x 256 matmuls

`describe()` names the CPU (model, family/model numbers, cores, threads per core, the bf16/AMX
flags) and the software (Python, TensorFlow, Keras, oneDNN, JAX). `limits()` measures, each in a
fresh process so that the thread count applies, TensorFlow's N x N matmul rate in bfloat16 and
float32 on one thread and on all threads, and names the oneDNN kernel that ran the bf16 matmul
(`brg:avx512_core_amx` means the AMX tiles). A benchmark divides its FLOP rate by these.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLAGS = ("avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")

_MATMUL = r"""
import os, sys, time, json
import tensorflow as tf
threads, n, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
rates = {}
for dtype in ("bfloat16", "float32"):
    a = tf.cast(tf.random.stateless_uniform((n, n), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_uniform((n, n), seed=(3, 4)), dtype)
    for _ in range(2):
        tf.linalg.matmul(a, b).numpy()
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        seconds.append(time.perf_counter() - t)
    rates[dtype] = 2.0 * n ** 3 / sorted(seconds)[len(seconds) // 2] / 1e9
print("RESULT " + json.dumps(rates), flush=True)
"""


def cpu() -> dict:
    """The CPU as /proc/cpuinfo and lscpu name it (on other systems, what `platform` knows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "cores": os.cpu_count(), "flags": []}
    first = dict(re.findall(r"^([^\t:]+?)\s*:\s*(.*)$", text.split("\n\n")[0], re.M))
    flags = set(first.get("flags", "").split())
    siblings, cores = int(first.get("siblings", 1) or 1), int(first.get("cpu cores", 1) or 1)
    return {"model": first.get("model name", platform.processor()), "family": first.get("cpu family"),
            "model_number": first.get("model"), "cores": os.cpu_count(),
            "threads_per_core": max(1, siblings // cores), "flags": [f for f in FLAGS if f in flags]}


def software() -> dict:
    """Versions of what the figures depend on (oneDNN's comes from limits(): TensorFlow links it)."""
    import importlib.metadata as md

    found = {"python": platform.python_version()}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "jax", "numpy"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def limits(n: int = 2048, repeats: int = 7, all_threads: bool = True) -> dict:
    """TensorFlow's matmul GFLOP/s (median of `repeats`) per dtype, on one thread and (unless not
    `all_threads`) on all, and the oneDNN version and bf16 kernel seen on one thread."""
    out: dict = {"n": n}
    for threads in sorted({1, os.cpu_count() or 1} if all_threads else {1}):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "ONEDNN_VERBOSE": "1" if threads == 1 else "0"}
        proc = subprocess.run([sys.executable, "-c", _MATMUL, str(threads), str(n), str(repeats)], env=env,
                              capture_output=True, text=True, timeout=600)
        result = next((line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
        if result is None:
            raise RuntimeError(f"the matmul probe failed: {proc.stderr[-1000:]}")
        out[f"{threads}_thread" + ("s" if threads > 1 else "")] = {k: round(v, 1) for k, v in json.loads(result).items()}
        if threads == 1:
            version = re.search(r"oneDNN v(\d+\.\d+[.\d]*)", proc.stdout)
            kernel = re.findall(r"onednn_verbose,.*?exec,cpu,(?:matmul|inner_product),([^,]+),.*?bf16", proc.stdout)
            out["onednn"] = version.group(1) if version else None
            out["bf16_matmul_kernel"] = kernel[-1] if kernel else None
    return out


def describe(found: dict) -> str:
    """One line: the CPU, its flags, the software, and the limits when measured."""
    c, s = found["cpu"], found["software"]
    line = (f"{c['model']} (family {c.get('family')} model {c.get('model_number')}), {c['cores']} cores, "
            f"{c.get('threads_per_core', 1)} thread(s)/core, {', '.join(c['flags']) or 'no AVX-512'}; "
            + ", ".join(f"{k} {v}" for k, v in s.items()))
    lim = found.get("limits")
    if lim:
        rates = "; ".join(f"{k.replace('_', ' ')}: bf16 {v['bfloat16']:,.0f}, f32 {v['float32']:,.0f}"
                          for k, v in lim.items() if isinstance(v, dict))
        line += f"; oneDNN {lim.get('onednn')}; matmul {lim['n']} GFLOP/s {rates} (bf16 kernel {lim.get('bf16_matmul_kernel')})"
    return line


def machine(measure: bool = True, n: int = 2048, repeats: int = 7, all_threads: bool = True) -> dict:
    """The machine's record: cpu, software and, when `measure`, limits."""
    found = {"cpu": cpu(), "software": software()}
    if measure:
        found["limits"] = limits(n, repeats, all_threads)
    return found


def smoke_or_full(smoke: bool) -> dict:
    """The record a benchmark prints first: 2048 x 2048 matmuls on one thread and all, or for a
    smoke run 256 x 256 on one thread (one process to start, not two)."""
    return machine(n=256, repeats=3, all_threads=False) if smoke else machine()


def run_dtype(found: dict) -> str:
    """The matmul dtype a run's training uses here: bfloat16 where the CPU has bf16 units (what
    precision=auto picks), else float32."""
    return "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(found["cpu"]["flags"]) else "float32"


def matmul_limit(found: dict, threads: int, dtype: str | None = None) -> float | None:
    """The measured matmul GFLOP/s in `dtype` (default: the run's, `run_dtype`) for `threads`
    (one, or all of the machine's)."""
    lim = found.get("limits") or {}
    key = "1_thread" if threads == 1 else next((k for k in lim if k.endswith("_threads")), "1_thread")
    return lim.get(key, {}).get(dtype or run_dtype(found))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="256 x 256 matmuls, 3 repeats: seconds")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    found = machine(n=256 if args.smoke else 2048, repeats=3 if args.smoke else 7)  # both thread counts, always
    print(describe(found))
    if args.json:
        args.json.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
