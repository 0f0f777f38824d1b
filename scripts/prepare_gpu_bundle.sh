#!/usr/bin/env bash
# Everything the GPU machine needs beside the working tree, in one ignored folder to carry:
#   scripts/prepare_gpu_bundle.sh [SHARED_DIR]      (default ../shared)  ->  .gpu/  (about 30 MB)
# .gpu/wheels: Hydra (from SHARED_DIR/wheels) and the pure-Python packages the image lacks;
# .gpu/data: MNIST's gzipped IDX files and the JPEG-derived CIFAR-10 npz with its converter
# (unpacked on the GPU machine: unpacked they exceed the 64 MiB that a call may carry).
# On the GPU machine, one call per part (each at most 5 minutes):
#   bash .gpu/run.sh checks      (then: bench, sweep; or all, at most 8 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${1:-../shared}"
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/data/MNIST/raw
cp "$shared"/wheels/*.whl .gpu/wheels/
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/wheels \
    "hydra-joblib-launcher>=1.2,<1.3" joblib tabulate filelock
cp "$shared"/data/MNIST/raw/*.gz .gpu/data/MNIST/raw/
cp "$shared"/data/cifar10-jpeg.npz "$shared"/data/cifar10_jpeg_to_batches.py .gpu/data/
cat > .gpu/run.sh <<'RUN'
#!/usr/bin/env bash
# On the GPU machine, from the checkout: bash .gpu/run.sh checks|bench|sweep|all
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -f data/MNIST/raw/train-images-idx3-ubyte ]; then
    mkdir -p data/MNIST/raw && cp .gpu/data/MNIST/raw/*.gz data/MNIST/raw/ && gunzip -f data/MNIST/raw/*.gz
fi
[ -d data/cifar-10-batches-py ] || python3 .gpu/data/cifar10_jpeg_to_batches.py data
mkdir -p "${OUT:-outputs}"
python3 scripts/gpu_acceptance.py --part "${1:-all}" --data-dir data --out "${OUT:-outputs}/acceptance_${1:-all}" --doc "${OUT:-outputs}/benchmarks_${1:-all}.md"
RUN
du -sh .gpu
echo "carry [\".gpu\"] and run: bash .gpu/run.sh checks   (then bench, sweep)"
