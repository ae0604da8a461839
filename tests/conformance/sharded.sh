#!/usr/bin/env bash
# The whole ML Program op suite split into shards, many pytest processes at a time (a machine with
# many cores): tests/conformance/sharded.sh NAME DEVICE MODE JOBS [SHARDS_FILE]
# Results go to /tmp/conf/NAME/*.jsonl; render them with
#   python -m tests.conformance.run --from-results /tmp/conf/NAME --device DEVICE --no-write
# SHARDS_FILE lines: "iOS14/test_conv.py N" (all N shards of a file) or "iOS14/test_conv.py I N" (shard I).
set -u
NAME=$1; DEVICE=$2; MODE=$3; JOBS=$4; LIST=${5:-tests/conformance/shards.txt}
BASE=$(python -c "from tests.conformance.run import suite_dir; print(suite_dir())")
export NAME DEVICE MODE BASE
mkdir -p "/tmp/conf/$NAME"
while read -r f a b; do
  if [ -n "$b" ]; then echo "$f $a $b"; else for ((i = 0; i < a; i++)); do echo "$f $i $a"; done; fi
done < "$LIST" | xargs -P "$JOBS" -L1 bash -c '
  f=$0; i=$1; n=$2; stem=$(echo "$f" | tr "/" "_"); out=/tmp/conf/$NAME/${stem%.py}_$i.jsonl
  INCLUDE_MIL_FP32_UNIT_TESTS=1 TL_CONFORMANCE_DEVICE=$DEVICE TL_MODE=$MODE TL_SHARD=$i/$n OMP_NUM_THREADS=1 \
    python -m pytest -p tests.conformance.plugin -p tests.conformance.shard -p no:cacheprovider -q -W ignore \
    --tl-results "$out" "$BASE/$f" > "/tmp/conf/$NAME.${stem%.py}_$i.log" 2>&1
  # every shard counts the deselected neuralnetwork cases: keep the count of shard 0 only
  [ "$i" = 0 ] || sed -i "/\"summary\"/d" "$out"'
echo "$NAME: $(cat /tmp/conf/$NAME/*.jsonl | wc -l) lines"
