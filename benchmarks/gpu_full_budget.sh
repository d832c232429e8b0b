#!/bin/bash
# Epochs per second of the full-budget grids' cells on a GPU, and each whole run's projected time (issue 26, item 3).
#
# Trains each cell of configs/vampprior-fashion-mnist-full.toml and of configs/burda-fashion-mnist-full.toml (the
# costliest: IWAE K = 50, one and two layers) for EPOCHS epochs through `pyro-vae train`, with the grid's settings
# as --set paths, and prints the median seconds of the epochs after the first, the epochs of the whole run and the
# projected hours of training. Run it after benchmarks/gpu_session.sh has installed the package (same machine).
set -u
export PYTHONUNBUFFERED=1
EPOCHS=${EPOCHS:-4}
OUT=${OUT:-/tmp/gpu-full}
mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}

cell() { # cell NAME TOTAL_EPOCHS SETTINGS...
    local name=$1 total=$2
    shift 2
    local sets=()
    for s in "$@"; do sets+=(--set "$s"); done
    rm -rf "/tmp/full-$name"
    timeout 150 python3 -m pyro_vae.cli train --dataset fashion-mnist --device "$DEVICE" --no-progress \
        --out "/tmp/full-$name" "${sets[@]}" --set "train.epochs=$EPOCHS" >"$OUT/$name.txt" 2>&1
    python3 - "$name" "$total" "/tmp/full-$name/metrics.json" <<'PY'
import json, statistics, sys
name, total, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    epochs = json.load(open(path))
    epochs = epochs["epochs"] if isinstance(epochs, dict) else epochs
except (OSError, ValueError, KeyError) as error:
    print(f"| {name} | failed: {error} | | |")
    sys.exit()
seconds = [e["seconds"] for e in epochs][1:] or [e["seconds"] for e in epochs]
per_epoch = statistics.median(seconds)
print(f"| {name} | {per_epoch:.2f} | {1 / per_epoch:.3f} | {total} | {total * per_epoch / 3600:.1f} |")
PY
}

echo "| cell | s / epoch | epochs / s | epochs of the run | projected hours (one seed, training) |"
echo "|---|---|---|---|---|"
VAMP=(model.latent_dim=40 'model.encoder={"name":"mlp","options":{"hidden_sizes":[300,300],"activation":"tanh"}}'
    'model.decoder={"name":"mlp","options":{"hidden_sizes":[300,300],"activation":"tanh"}}' train.batch_size=100
    train.kl_warmup_epochs=100 'train.optimizer={"name":"adam","options":{"lr":5e-4}}')
cell vamp-normal 2000 "${VAMP[@]}" model.prior=normal
cell vamp-vampprior 2000 "${VAMP[@]}" 'model.prior={"name":"vamp","options":{"num_pseudo_inputs":500}}'
BURDA=(model.latent_dim=50 'model.encoder={"name":"mlp","options":{"hidden_sizes":[200,200],"activation":"tanh"}}'
    'model.decoder={"name":"mlp","options":{"hidden_sizes":[200,200],"activation":"tanh"}}' train.batch_size=20
    'train.optimizer={"name":"adam","options":{"lr":1e-3,"eps":1e-4}}')
cell burda-1layer-elbo1 3280 "${BURDA[@]}" train.estimator=elbo
cell burda-1layer-iwae50 3280 "${BURDA[@]}" 'train.estimator={"name":"iwae","options":{"num_particles":50}}'
cell burda-2layer-iwae50 3280 "${BURDA[@]}" model.latent_dim=100 model.top_latent_dim=50 \
    'train.estimator={"name":"iwae","options":{"num_particles":50}}'
