#!/usr/bin/env bash
# The GPU suite: every benchmark on one CUDA device, each against its reference in the same run,
# then one summary table. Fits one 10-minute command on one GPU; needs no network: weights are
# random (speed does not depend on them) and packages come from the environment or ./wheels.
#
#   bash benchmarks/gpu_suite.sh            # the full suite (issue 17's targets)
#   bash benchmarks/gpu_suite.sh --quick    # smaller counts, to check the suite itself
#
# Install: if `import zsclip, open_clip, transformers` fails, the suite installs zsclip from this
# checkout, taking dependencies from ./wheels (pip download -d wheels -e ".[dev]" on a networked
# machine) when that folder exists. Logs and the table go to ${OUT:-gpu-results}/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1

if ! python -c "import zsclip, open_clip, transformers" 2>/dev/null; then
    if [[ -d wheels ]]; then
        pip install -q --no-index --find-links wheels -e ".[dev]"
    else
        pip install -q -e ".[dev]"
    fi
fi
python - <<'EOF' || { echo "gpu_suite: no CUDA device visible to torch"; exit 2; }
import torch
assert torch.cuda.is_available()
print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
EOF

if [[ $QUICK == 1 ]]; then IMAGES=200; CLASSES=100; PER_CLASS=10; else IMAGES=2000; CLASSES=1000; PER_CLASS=100; fi

run() {  # name, time limit (s), command...
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | grep -v "No pretrained weights loaded" | tee "$OUT/$name.log"
    echo "   (exit ${PIPESTATUS[0]})" | tee -a "$OUT/$name.log"
}

run tests 150 python -m pytest -q tests/test_cuda.py tests/test_device_decode.py
run build 150 python benchmarks/build_speed.py --device cuda --classes "$CLASSES" --precisions fp32,auto
run classify 240 python benchmarks/classify_speed.py --device cuda --images "$IMAGES" --batch-size 256 \
    --precisions auto,fp32 --decode auto
run classify-cpu-decode 200 python benchmarks/classify_speed.py --device cuda --images "$((IMAGES / 4))" \
    --batch-size 256 --precisions auto --decode cpu
run eval 120 python benchmarks/eval_speed.py --device cuda --per-class "$PER_CLASS" --batch-size 256 --workers 8
run vs-transformers 90 python benchmarks/vs_transformers_pipeline.py --device cuda --images 256 --labels 10,1000
for extra in benchmarks/store_speed.py benchmarks/serve_batching.py; do  # when those issues have landed
    [[ -f $extra ]] && run "$(basename "$extra" .py)" 90 python "$extra" --device cuda
done

python - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import pathlib, re, sys
out = pathlib.Path(sys.argv[1])
print("| benchmark | result |\n|---|---|")
for log in sorted(out.glob("*.log")):
    for line in log.read_text().splitlines():
        if re.search(r"ratio|passed|failed|x\)|agreement|exit [1-9]", line):
            print(f"| {log.stem} | {' '.join(line.split())} |")
EOF
