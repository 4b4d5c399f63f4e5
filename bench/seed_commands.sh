#!/usr/bin/env bash
# The seed's whole pipeline, as written: its seven training commands, its seven inference
# commands and its averaging step, on a synthetic dataset in the real format.
#
# Changed from the seed, and only this: `path_to_features` points at the synthetic data and
# every `--max_step=N` becomes `--max_step=2` (full-size models on a CPU). The published
# pipeline does not chain as written (fidelity.md §6): two inference commands name a
# train_dir that training did not write and the averaging script names two files that
# inference did not write. The script shows each of those failing with an error that names
# the close match, then bridges the names with symbolic links and goes on.
#
# Usage: bench/seed_commands.sh [WORK_DIR]    (needs `make test` or `make demo` run once;
#        full-size models: about 20 GB of disk for checkpoints, 10-20 minutes on 2 cores)
# Environment: SEED_COMMANDS (default tests/data/seed_commands.txt, the repository's copy of
#              the seed's command lines), KEEP=1 keeps WORK_DIR afterwards.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SEED_COMMANDS=${SEED_COMMANDS:-$REPO/tests/data/seed_commands.txt}
WORK=${1:-$(mktemp -d /tmp/yt8m-seed-XXXX)}
export PATH="$REPO/.venv/bin:$PATH"

[ -f "$SEED_COMMANDS" ] || { echo "seed commands not found: $SEED_COMMANDS (set SEED_COMMANDS)" >&2; exit 2; }
mkdir -p "$WORK"
cd "$WORK"
# The seed runs `python train.py ...` from the original repository's root.
for script in train.py eval.py inference.py file_averaging.py; do
    ln -sf "$REPO/$script" "$script"
done
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$WORK"' EXIT; fi

step() { printf '\n=== %s\n' "$*"; }
expect_failure() {  # expect_failure NEEDLE COMMAND...: the command fails and says NEEDLE
    local needle=$1; shift
    if "$@" >out.log 2>&1; then echo "expected a failure: $*" >&2; exit 1; fi
    grep -F -- "$needle" out.log || { cat out.log; echo "the error does not name $needle" >&2; exit 1; }
}

step "synthetic dataset (4716 classes, frame- and video-level) in $WORK/data"
yt8m synth --output data --train_videos 200 --validate_videos 60 --test_videos 100 --shards 2
path_to_features=$WORK/data/frame

step "the seed's seven training commands (--max_step=2)"
grep '^python train.py' "$SEED_COMMANDS" |
    sed -e "s#path_to_features/#$path_to_features/#" -e 's/--max_step=[0-9]*/--max_step=2/' \
        >training-commands.sh
while read -r line; do
    echo "+ $line"
    start=$SECONDS
    eval "$line"
    echo "  took $((SECONDS - start)) s"
done <training-commands.sh
ls -d */model.ckpt-* >/dev/null

step "inference as written fails where the seed names a train_dir training did not write"
grep '^python inference.py' "$SEED_COMMANDS" >inference-commands.sh
lstm_line=$(grep -- '--train_dir=lstm-0002-val-150-random ' inference-commands.sh)
expect_failure "lstm-0002-val-150-random-2" eval "$lstm_line"
dbof_line=$(grep -- '--train_dir=gateddboflf-4096-1024-80-0002-300iter-gatedmoe ' inference-commands.sh)
expect_failure "gateddboflf-4096-1024-80-0002-300iter" eval "$dbof_line"
ln -sfn lstm-0002-val-150-random-2 lstm-0002-val-150-random
ln -sfn gateddboflf-4096-1024-80-0002-300iter gateddboflf-4096-1024-80-0002-300iter-gatedmoe

step "the seed's seven inference commands"
while read -r line; do
    echo "+ $line"
    start=$SECONDS
    eval "$line"
    echo "  took $((SECONDS - start)) s"
done <inference-commands.sh
python - <<'EOF'
import glob
from yt8m.submission import read_submission
files = sorted(glob.glob("test-*.csv"))
assert len(files) == 7, files
for name in files:
    rows = list(read_submission(name))
    assert len(rows) == 100 and all(len(labels) == 50 for _, labels, _ in rows), name
    print(f"  {name}: {len(rows)} videos x 50 pairs")
EOF

step "averaging as written fails where the seed names files inference did not write"
expect_failure "test-GRU-0002-1200" python file_averaging.py
ln -sf test-GRU-0002-1200.csv test-GRU-0002-1200-2.csv
ln -sf test-gateddboflf-4096-1024-80-0002-300iter-gatedmoe.csv test-gateddboflf-4096-1024-80-0002-300iter.csv
step "averaging (python file_averaging.py)"
python file_averaging.py
python - <<'EOF'
from yt8m.submission import read_submission
rows = list(read_submission("WILLOW_submission.csv"))
assert len(rows) == 100 and all(len(labels) == 20 for _, labels, _ in rows)
print(f"  WILLOW_submission.csv: {len(rows)} videos x 20 pairs")
EOF
step "done: the seed's 7 training, 7 inference and averaging commands ran"
