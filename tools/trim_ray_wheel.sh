#!/usr/bin/env bash
# tools/trim_ray_wheel.sh WHEEL OUTDIR: a Ray wheel without Java, RLlib/Tune/Train/Serve/LLM, the dashboard's
# web client and debug symbols; the result is repacked as a wheel (RECORD regenerated). Why: the GPU machine
# takes at most 64 MiB per call and the PyPI wheel is 79 MB; trimmed it is 36 MB and still runs a local cluster
# and Ray Data actor pools (checked with the cp311 wheel on 2026-12-04).
set -euo pipefail
whl=$1; out=$2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$work" && unzip -q "$whl"
rm -rf ray/jars ray/rllib ray/tune ray/train ray/serve ray/llm ray/workflow ray/dashboard/client ray/cpp
find ray -name tests -type d -prune -exec rm -rf {} +
du -sh ray/_private/runtime_env/* 2>/dev/null | sort -h | tail -3 >&2
strip --strip-unneeded ray/_raylet.so ray/core/src/ray/raylet/raylet ray/core/src/ray/gcs/gcs_server
sed -i '/^serve = \|^tune = /d' ray-*.dist-info/entry_points.txt
dist=$(ls -d ray-*.dist-info); rm "$dist/RECORD"
mkdir -p "$out"
python3 - "$out" "$whl" <<'PY'
import sys, os, zipfile, hashlib, base64
out, whl = sys.argv[1], sys.argv[2]
name = os.path.join(out, os.path.basename(whl))
dist = [d for d in os.listdir(".") if d.endswith(".dist-info")][0]
rows = []
with zipfile.ZipFile(name, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for root, _, files in os.walk("."):
        for f in files:
            p = os.path.relpath(os.path.join(root, f), ".")
            data = open(p, "rb").read()
            h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{p},sha256={h},{len(data)}")
            z.write(p, p)
    rows.append(f"{dist}/RECORD,,")
    z.writestr(f"{dist}/RECORD", "\n".join(rows) + "\n")
PY
ls -la "$out"
