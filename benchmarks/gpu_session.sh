#!/bin/bash
# The GPU figures of BENCHMARKS.md in one call of a lent GPU machine (about 7 minutes on an H200, start included).
#
# That machine has torch but not Pyro, and no network. Prepare here, in the repository root, once:
#
#   printf '/.whl/\n/.fmnist/\n' >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl pyro-ppl pyro-api 'arviz<1' xarray-einstats h5netcdf platformdirs
#   mkdir -p .fmnist && cp /usr/share/datasets/fashion-mnist/* .fmnist/
#
# then run `bash benchmarks/gpu_session.sh` there with `.whl` and `.fmnist` carried. Each step writes
# $OUT/<step>.txt, and $OUT/main.txt gets one line per step with its exit status and seconds; a step past its own
# limit is stopped and the next one runs.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
LOG=$OUT/main.txt

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >>"$LOG" 2>&1
export PYTHONPATH=/tmp/site:$PWD
python3 -m pip install -q --no-deps --no-index --no-build-isolation -e . >>"$LOG" 2>&1
mkdir -p /usr/share/datasets/fashion-mnist && cp .fmnist/* /usr/share/datasets/fashion-mnist/
python3 -c "import sys, torch, pyro; print(sys.version.split()[0], torch.__version__, pyro.__version__, torch.cuda.get_device_name())" >>"$LOG" 2>&1

step() { # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "## $*" >>"$OUT/$name.txt"
    timeout "$limit" "$@" >>"$OUT/$name.txt" 2>&1
    echo "$name: exit $? after $((SECONDS - start)) s: $*" >>"$LOG"
}

rm -rf /tmp/fm /tmp/digits
step logpx 90 python3 benchmarks/log_px_speed.py --device cuda --chunks
# the 13 cases (the other 12 estimators of continuous latents would double the step's time)
step train 150 python3 benchmarks/train_speed.py --device cuda --steps 60 --estimators elbo:1 elbo-analytic-kl:1 \
    elbo-stl:1 elbo:5 elbo-analytic-kl:5 elbo-stl:5 elbo:50 elbo-analytic-kl:50 elbo-stl:50 iwae:5 iwae-dreg:5 \
    iwae:50 iwae-dreg:50
step variants 60 python3 benchmarks/step_variants.py --device cuda --steps 600 --rounds 20
step fmnist 60 python3 benchmarks/data_parallel.py --dataset fashion-mnist --epochs 2 --nproc 1 --device cuda
step fmnist 40 python3 -m pyro_vae.cli train --dataset fashion-mnist --epochs 1 --out /tmp/fm --device cuda --no-progress
step fmnist 90 python3 -m pyro_vae.cli evaluate /tmp/fm --device cuda --no-progress
step readme 90 bash -c "python3 -m pyro_vae.cli train --dataset digits --out /tmp/digits --no-progress \
    && python3 -m pyro_vae.cli evaluate /tmp/digits --no-progress && python3 -m pyro_vae.cli sample /tmp/digits"
OMP_NUM_THREADS=1 step pytest 200 python3 -m pytest -q -p no:cacheprovider -p no:benchmark -n 14 --timeout 100
cat "$LOG"
