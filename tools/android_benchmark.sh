#!/usr/bin/env bash
# Benchmark gram_tf artifacts on an Android phone with TFLite's official benchmark_model, pull the
# logs and import them as result rows of that device (documented in docs/benchmark-and-report.md;
# not run by the tests: it needs a phone on adb).
#
#   tools/android_benchmark.sh MODELS_DIR BENCHMARK_MODEL_BINARY "Galaxy S10" [THREADS...]
#
# BENCHMARK_MODEL_BINARY: the prebuilt android_aarch64 benchmark_model from the TensorFlow Lite
# performance tools page (or bazel build --config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model).
set -euo pipefail
models=${1:?models folder (with manifest.json)}; binary=${2:?benchmark_model binary}; device=${3:?device label}
shift 3
if [ $# -gt 0 ]; then threads=("$@"); else threads=(1 4); fi
remote=/data/local/tmp/gram_tf
logs=$(mktemp -d)
adb shell mkdir -p "$remote"
adb push "$binary" "$remote/benchmark_model" >/dev/null
adb shell chmod +x "$remote/benchmark_model"
for model in "$models"/*.tflite; do
  name=$(basename "$model")
  adb push "$model" "$remote/$name" >/dev/null
  for t in "${threads[@]}"; do
    # the log names its model (Graph: [...]) and threads (Num threads: [...]); both are matched on import
    adb shell "$remote/benchmark_model --graph=$remote/$name --num_threads=$t --use_xnnpack=true \
               --warmup_runs=10 --num_runs=100" > "$logs/${name%.tflite}.t$t.log" 2>&1
    echo "benchmarked $name with $t thread(s)"
  done
done
gram-tf bench import "$logs"/*.log --device "$device" --models "$models" --out "device_${device// /_}.csv"
echo "logs kept in $logs; compare with this machine: gram-tf report results.csv device_${device// /_}.csv --out report/"
