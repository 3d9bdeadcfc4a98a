"""Merge the three tasks' token datasets into one (one action domain; the task text tells them apart)."""
import json
import shutil
import sys
from pathlib import Path

from wm_video.data.reader import load_dataset_info
from wm_video.data.writer import finalize_dataset

out = Path("runs/text_fig/tokens/all")
if (out / "dataset.json").exists():
    sys.exit(0)
out.mkdir(parents=True, exist_ok=True)
shards, heldout = [], []
for t in ["reach", "push", "pick-place"]:
    src = Path("runs/text_fig/tokens") / t
    info = load_dataset_info(src)
    d = json.loads((src / "dataset.json").read_text())
    heldout += list((d.get("heldout") or {}).get("episodes") or [])
    for p in sorted(src.glob("shard-*.tar")):
        k = len(shards)
        dst = out / f"shard-{k:06d}.tar"
        shutil.copy(p, dst)
        side = json.loads(Path(str(p) + ".json").read_text())
        side["record"]["path"] = dst.name
        Path(str(dst) + ".json").write_text(json.dumps(side))
        shards.append(dst)
finalize_dataset(out, shards, resolution=list(info.resolution), fps=info.fps, clip_len=info.clip_len, storage="tokens",
                 action_space=info.action_space, source={"kind": "merged", "tasks": ["reach", "push", "pick-place"]},
                 tokens=d["tokens"], heldout=heldout)
print("merged", len(shards), "shards,", len(heldout), "held-out episodes")
