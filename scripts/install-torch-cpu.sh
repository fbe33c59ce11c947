#!/usr/bin/env bash
# Installs the CPU build of torch for the Hugging Face tests, and refuses a CUDA build.
#   bash scripts/install-torch-cpu.sh .venv/bin/python
# `pip install torch` from PyPI pulls about 3 GB of CUDA wheels. This project's machines (developers' and
# CI's) carry the CPU wheel of torch 2.13.0 for Python 3.11 in pip's find-links (190 MB download, about
# 750 MB installed, about 40 s); pip prefers its local version 2.13.0+cpu. Before installing, pip's dry-run
# report is read: if it would install a CUDA build (nvidia-* packages or a torch without "+cpu"), this
# stops with the fix. NLPMON_TORCH overrides the requirement (e.g. a wheel file of your own).
set -euo pipefail
PY="${1:-.venv/bin/python}"
REQ="${NLPMON_TORCH:-torch==2.13.0}"
if "$PY" -c 'import torch' 2>/dev/null; then
  exit 0  # already installed
fi
plan=$("$PY" -m pip install --dry-run --quiet --report - "$REQ" 2>/dev/null)
verdict=$(printf '%s' "$plan" | "$PY" -c '
import json, sys
items = json.load(sys.stdin)["install"]
names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in items}
cuda = sorted(n for n in names if n.startswith("nvidia-") or n == "triton")
torch = names.get("torch", "")
print("ok" if not cuda and (torch == "" or "+cpu" in torch) else f"torch {torch} with {len(cuda)} CUDA packages")')
if [ "$verdict" != "ok" ]; then
  echo "install-torch-cpu: pip would install $verdict (about 3 GB): no CPU wheel of $REQ is in pip's find-links;" \
       "set NLPMON_TORCH to a CPU wheel (file or index of CPU builds), or run the other tests with make test-core" >&2
  exit 1
fi
"$PY" -m pip install --quiet "$REQ"
