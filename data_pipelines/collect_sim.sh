#!/usr/bin/env bash
# Collect one small dataset per simulator family from the YAML configs in configs/data/ and inspect each.
# Usage: bash data_pipelines/collect_sim.sh [OUT_ROOT] [extra dotted overrides, e.g. episodes=8]
# Rerunning resumes each collection where it stopped.
set -euo pipefail
out=${1:-data}
shift || true
for cfg in configs/data/*.yaml; do
  name=$(basename "$cfg" .yaml)
  wm-video data collect --config "$cfg" --out "$out/$name" "$@"
  wm-video data inspect "$out/$name" --sheet "$out/$name/contact_sheet.png"
done
