#!/usr/bin/env bash
# Run the pipeline stages one at a time, printing what each decided; the same result as one `wm-video data` call.
# Usage: bash data_pipelines/run_stages.sh videos|lerobot SRC OUT [flags of that verb, e.g. --size 64 --clip-len 16]
# Rerunning skips finished work; any single stage can be rerun alone with `--stages NAME`.
set -euo pipefail
source_kind=${1:?videos or lerobot}
src=${2:?source folder (or list file)}
out=${3:?output folder}
shift 3
for stage in probe clip filter shard stats; do
  wm-video data "$source_kind" --src "$src" --out "$out" --stages "$stage" "$@"
  if [ -f "$out/manifest/${stage/clip/clips}.jsonl" ]; then
    echo "$stage: $(python -c 'import collections, json, sys
c = collections.Counter(json.loads(l)["status"] for l in open(sys.argv[1]))
print(", ".join(f"{k} {v}" for k, v in sorted(c.items())))' "$out/manifest/${stage/clip/clips}.jsonl")"
  fi
done
