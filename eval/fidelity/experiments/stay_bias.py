"""docs/fidelity.md, E16: a 'stay' prior at sampling time, ``+b`` on the logit of the token the previous frame had at
each place, scored by the suite's evaluation (64 held-out clips, horizon 8, one MaskGIT pass, argmax).

    python eval/fidelity/experiments/stay_bias.py MODEL_DIR OUT_DIR BIAS [DATA_DIR]

It patches :class:`wm_video.models.dynamics.sampling.Rollout` in this process only: an experiment, not a library
option (it did not help, so it never became one)."""
import sys

import torch

import wm_video.registry  # noqa
from wm_video.config import load_config
from wm_video.evaluation.run import evaluate_folder
from wm_video.models.dynamics import sampling

BIAS = float(sys.argv[3])
_start, _step, _guide = sampling.Rollout.start, sampling.Rollout.step, sampling.Rollout._guide

def start(self, context_tokens, context_actions=None, *, offset=0):
    self._prev = context_tokens[:, -1].flatten(1).long()
    return _start(self, context_tokens, context_actions, offset=offset)

def step(self, action=None):
    out = _step(self, action)
    self._prev = out.tokens.flatten(1).long()
    return out

def guide(self, logits):
    logits = _guide(self, logits)
    if BIAS and getattr(self, "_prev", None) is not None and self._prev.shape[0] == logits.shape[0]:
        bonus = torch.full_like(self._prev[..., None], BIAS, dtype=torch.float)
        logits = logits.float().scatter_add(-1, self._prev[..., None], bonus)
    return logits

sampling.Rollout.start, sampling.Rollout.step, sampling.Rollout._guide = start, step, guide
model, out = sys.argv[1], sys.argv[2]
cfg = load_config("eval", preset_name="default", overrides=["max_clips=64", "batch_size=16", "maskgit_steps=1"])
data = sys.argv[4] if len(sys.argv) > 4 else "/tmp/demo_boxing3/data"
evaluate_folder(model, data, cfg, out, "cpu")
print("done", out)
