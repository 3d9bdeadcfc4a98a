set -e
cd /work/main
export MUJOCO_GL=egl
for t in reach push pick-place; do
  [ -f runs/text_fig/data/$t/dataset.json ] || .venv/bin/wm-video data collect --env metaworld/$t-v3 --episodes 24 --policy noisy --noise 0.5 --size 64 --clip-len 16 --workers 2 --episodes-per-shard 4 --seed 0 --max-episode-steps 150 --out runs/text_fig/data/$t --no-progress
  [ -f runs/text_fig/tokens/$t/dataset.json ] || .venv/bin/wm-video data tokenize --tokenizer runs/multidomain/runs/tokenizer/export --data runs/text_fig/data/$t --out runs/text_fig/tokens/$t
done
.venv/bin/python runs/text_fig/merge.py
[ -f runs/text_fig/dyn/export/config.json ] || .venv/bin/wm-video train dynamics --preset tiny --data runs/text_fig/tokens/all --out runs/text_fig/dyn --max-steps 450 text_encoder=runs/text_fig/t5
.venv/bin/wm-video export --tokenizer runs/multidomain/runs/tokenizer/export --dynamics runs/text_fig/dyn --data runs/text_fig/data/push --out runs/text_fig/wm --overwrite
for d in push pick-place; do
  dom=${d/-/_}
  .venv/bin/wm-video eval --model runs/text_fig/wm --data runs/text_fig/data/$d --horizon 8 --context-frames 4 --max-clips 24 --batch-size 12 --temperature 0 --maskgit-steps 1 --methods model copy_last_frame --out runs/text_fig/eval_${dom}_right
done
.venv/bin/wm-video eval --model runs/text_fig/wm --data runs/text_fig/data/push --task "pick place" --horizon 8 --context-frames 4 --max-clips 24 --batch-size 12 --temperature 0 --maskgit-steps 1 --methods model copy_last_frame --out runs/text_fig/eval_push_wrong
.venv/bin/wm-video eval --model runs/text_fig/wm --data runs/text_fig/data/pick-place --task "push" --horizon 8 --context-frames 4 --max-clips 24 --batch-size 12 --temperature 0 --maskgit-steps 1 --methods model copy_last_frame --out runs/text_fig/eval_pick_place_wrong
echo DONE
