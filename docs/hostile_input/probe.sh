#!/usr/bin/env bash
# The 20 hostile-input cases of docs/hostile_input.md, run with the real `pyro-vae` command in a
# scratch folder; prints one Markdown row per case: exit status, stderr lines, the stderr line,
# and whether the run folder is unchanged (or was never created). About two minutes on 2 cores.
# Usage: bash docs/hostile_input/probe.sh   (with pyro-vae on PATH, e.g. .venv/bin; as a user
# other than root for case 5, which root's permissions make moot)
set -u
W=$(mktemp -d); mkdir "$W/runs" "$W/logs"; cd "$W/runs" || exit 1
O=$W/logs/out.txt E=$W/logs/err.txt
T="pyro-vae train vae --dataset digits --epochs 1 --eval-samples 50 --device cpu --latent-dim 2 --hidden 16"
$T --out base >/dev/null 2>&1 && $T --epochs 3 --out base3 >/dev/null 2>&1 \
  && pyro-vae train ae --dataset digits --epochs 1 --eval-samples 0 --out ae >/dev/null 2>&1 \
  || { echo "could not train the base runs"; exit 1; }
digest() { [ -e "$1" ] || { echo absent; return; }
  (cd "$1" && find . -type f ! -name .lock -printf '%p %m\n' -exec sha256sum {} \; | sort) | sha256sum; }
row() {  # row CASE FOLDER COMMAND...   (FOLDER "-": a folder another process is writing)
  local case=$1 dir=$2; shift 2
  local before; before=$(digest "$dir")
  "$@" >"$O" 2>"$E"; local rc=$?
  local after; after=$(digest "$dir")
  local same="changed"; [ "$before" = "$after" ] && same="unchanged"
  [ "$before" = absent ] && [ "$after" = absent ] && same="never created"
  [ "$dir" = - ] && same="(being written by the first)"
  printf '| %s | `%s` | %s | %s | %s | %s |\n' "$case" "$*" "$rc" \
    "$(wc -l <"$E")" "$(head -c 200 "$E" | tr '\n|' ' /')" "$same"
}
echo "| case | command | exit | stderr lines | stderr | run folder |"
echo "| --- | --- | --- | --- | --- | --- |"
row 1 r1 $T --seed -1 --out r1
row 1 r1 pyro-vae sample base --out s.png --seed 99999999999999999999
row 2 r2 $T --lr inf --out r2
row 2 r2 $T --free-bits nan --out r2
row 3 r3 $T --num-particles 100000000 --out r3
touch afile; row 4 afile/sub $T --out afile/sub
row 4 . $T --out ""
if [ "$(id -u)" = 0 ]; then
  echo "| 5 | (read-only folders) | | | skipped: root writes into read-only folders; run this script as another user | |"
else
  cp -r base ro; chmod a-w ro ro/*; mkdir rop; chmod a-w rop
  row 5 ro pyro-vae evaluate ro --num-samples 50
  row 5 ro pyro-vae train --resume --out ro --epochs 2
  row 5 ro pyro-vae sample ro --out ro/s.png
  row 5 rop/run $T --out rop/run
  chmod u+w ro rop
fi
mkdir d.png; row 6 base pyro-vae sample base --out d.png
row 7 base pyro-vae diagnose base --chains 0
cp -r base e8; python3 -c "import json; p='e8/config.json'; c=json.load(open(p)); c['model_config']=None; json.dump(c, open(p, 'w'))"
row 8 e8 pyro-vae evaluate e8 --num-samples 50
cp -r base k8; python3 -c "import torch; p='k8/checkpoint.pt'; s=torch.load(p, weights_only=False); s.pop('rng'); torch.save(s, p)"
row 8 k8 pyro-vae train --resume --out k8 --epochs 2
cp -r base m8; echo "[1, 2]" > m8/metrics.json; row 8 m8 pyro-vae evaluate m8 --num-samples 50
$T --epochs 60 --out c9 >"$W/logs/c9.txt" 2>&1 & first=$!
while [ ! -e c9/checkpoint.pt ]; do sleep 0.1; done
row 9 - pyro-vae train --resume --out c9 --epochs 70
row 9 - pyro-vae evaluate c9 --num-samples 50
wait $first; echo "| 9 | (the first training) | $? | | | complete |"
row 9 c9 pyro-vae train --resume --out c9 --epochs 61
row 10 r10 pyro-vae train vae --dataset digits --lr 3e6 --epochs 8 --eval-samples 50 --out r10
pyro-vae train gmm --dataset gmm-2d --epochs 5 --lr 10 --eval-samples 0 --out g11 >/dev/null 2>&1
row 11 g11 pyro-vae sample g11 --out g11.png
row 12 r12 pyro-vae train bernoulli --dataset digits --objective meanfield --out r12
row 12 r12 pyro-vae train gmm --dataset gmm-2d --objective iwae --out r12
row 13 r13 pyro-vae train bernoulli --dataset digits --baseline neural --epochs 1 --eval-samples 50 --out r13
row 14 ae pyro-vae diagnose ae
cat > "$W/logs/ctrl_c.py" <<'PY'
import signal, subprocess, sys, time
p = subprocess.Popen(sys.argv[2:], stderr=subprocess.PIPE, text=True)
time.sleep(float(sys.argv[1])); p.send_signal(signal.SIGINT); err = p.communicate()[1]
sys.stderr.write(err); sys.exit(p.returncode)
PY
row 16 . python3 "$W/logs/ctrl_c.py" 0.5 pyro-vae list
row 16 . python3 "$W/logs/ctrl_c.py" 2.0 pyro-vae list
cp -r base s17; printf 'half a checkpoint' > s17/.checkpoint.pt.deadbeef.tmp
row 17 s17 pyro-vae train --resume --out s17 --epochs 2
echo "<!-- case 17: dot-files left after the resume: $(cd s17 && ls -A | grep '^\.' | tr '\n' ' ') -->"
row 18 base3 pyro-vae train --resume --out base3 --epochs 2
cat > "$W/logs/grey.py" <<'PY'
import sys
from pyro_vae import UserError, evaluate, open_run
r = open_run("base")
try:
    evaluate(r.model, r.data.test_x * 0.5)  # grey values under a Bernoulli likelihood
except UserError as e:
    sys.exit(f"{type(e).__name__}: {e}")
PY
row 19 . python3 "$W/logs/grey.py"
echo "<!-- case 20: modes of base's files (umask $(umask)): $(cd base && stat -c '%n %a' * | tr '\n' ' ') -->"
rm -rf "$W"
