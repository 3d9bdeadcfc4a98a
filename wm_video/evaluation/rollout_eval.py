"""World-model evaluation protocol: open-loop rollouts on held-out clips, scored per horizon, with baselines.

For every held-out clip long enough (``context_frames + horizon`` frames), the first ``context_frames`` frames
and the actions between them are the context; the model then takes the clip's next ``horizon`` actions and
its predicted frames are compared with the clip's own. Per horizon ``h = 1..H``:

- ``psnr_db`` and ``ssim`` (torchmetrics, Gaussian 11x11, data range 2) of the rendered frame;
- ``token_accuracy``: predicted tokens equal to the tokenizer's tokens of the true frame;
- ``psnr_moving_db``: PSNR over the pixels that change between consecutive true frames, and
  ``changed_token_accuracy``: token accuracy over the tokens that change (:mod:`wm_video.metrics.moving`); the
  whole-frame scores barely notice a missing ball or arm, these look only where the world moved;
- ``reward_mae`` against the clip's rewards, and ``termination_precision`` / ``termination_recall`` of the
  predicted termination probability thresholded at 0.5 (over all clips and steps up to ``h``, when the data has
  them).

Baselines in the same run, on the same clips: ``copy_last_frame`` (the last context frame repeated, and its
tokens), ``shuffled_actions`` (the model, each clip given another clip's actions: the gap to the model is its
action sensitivity), ``null_actions`` (the model with every action, context included, replaced by the learned null
action: what it predicts without knowing the actions), and ``tokenizer_ceiling`` (PSNR of the tokenizer's own
reconstruction of the true frame, drawn as the rollouts draw theirs: the best any token prediction can reach; with a
patch-local tokenizer the frames keep the last true frame's pixels where tokens did not change, see
``WorldModel.keeps_still_patches``). On an action-free dataset the shuffled
and null rows are absent, and ``notes`` says why. Sampling is seeded; every number records the protocol that made
it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from wm_video.data.loader import heldout_loader
from wm_video.data.reader import load_dataset_info
from wm_video.metrics.moving import MovingScores
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.task_text import TaskTextSettings, load_task_encoder
from wm_video.utils import progress
from wm_video.utils.machine import machine_record
from wm_video.world_model import RenderSettings, WorldModel, vq_render
from wm_video.world_model_env import WorldModelEnv


@dataclass
class EvalConfig(TaskTextSettings):
    """Args:
        horizon: predicted frames per clip ``H``.
        context_frames: context frames per clip.
        max_clips: held-out clips evaluated (the first ones, in shard order).
        batch_size: clips rolled out together.
        temperature: token sampling temperature (0: argmax).
        maskgit_steps: MaskGIT passes per frame.
        num_inference_steps: diffusion decoder steps (default: the decoder's own).
        seed: seeds token sampling, decoder noise and the action shuffle.
        val_fraction: the held-out split, as in training: None for the one ``dataset.json`` records
            (:mod:`wm_video.data.split`).
        guidance_scale: classifier-free guidance on actions for the model rows (1: the plain model).
        methods: what is scored: ``model`` and the baselines ``copy_last_frame``, ``shuffled_actions``,
            ``null_actions``, ``tokenizer_ceiling``.
        domain: the action domain the data is of, for a world model trained on several (``WorldModel.domains``);
            None for a model of one action space.
        text_encoder: the local text encoder folder of a model trained with task text (None: the folder its
            config records); each clip is rolled out given its own task text.
        task: one task text for every clip instead of its own (e.g. another task's, to measure how much the
            model uses the text); refused for a model trained without text.
        text_guidance_scale: classifier-free guidance on the task text for the model rows (1: none; 0: the
            text-free model); refused, other than 1, for a model trained without text.
    """

    horizon: int = 8
    context_frames: int = 4
    max_clips: int = 64
    batch_size: int = 8
    temperature: float = 0.0
    maskgit_steps: int = 8
    num_inference_steps: int | None = None
    seed: int = 0
    val_fraction: float | None = None
    guidance_scale: float = 1.0
    methods: list[str] = field(default_factory=lambda: ["model", "copy_last_frame", "shuffled_actions",
                                                        "null_actions", "tokenizer_ceiling"])
    domain: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"eval: unknown methods {unknown}; known: {', '.join(METHODS)}")
        if self.horizon < 1 or self.context_frames < 1 or self.max_clips < 1 or self.batch_size < 1:
            raise ValueError("eval: horizon, context_frames, max_clips and batch_size must be >= 1")


METHODS = ("model", "copy_last_frame", "shuffled_actions", "null_actions", "tokenizer_ceiling")
ACTION_ROWS = ("shuffled_actions", "null_actions")  # rows that only mean something when the data has actions


def _finite_or_none(v: float) -> float | None:
    """NaN (nothing moved at that horizon) becomes None, which JSON can hold."""
    return None if v != v else v


class HorizonScores:
    """Sums per horizon step for one method."""

    def __init__(self, horizon: int) -> None:
        self.h = horizon
        self.n = torch.zeros(horizon)
        self.psnr = torch.zeros(horizon)
        self.ssim = torch.zeros(horizon)
        self.tok = torch.zeros(horizon)
        self.reward_ae = torch.zeros(horizon)
        self.term = torch.zeros(horizon, 3)  # true positives, predicted positives, actual positives
        self.moving = [MovingScores() for _ in range(horizon)]

    def add(self, i: int, pred: torch.Tensor, truth: torch.Tensor, prev_truth: torch.Tensor,
            tokens: torch.Tensor | None = None, true_tokens: torch.Tensor | None = None,
            prev_true_tokens: torch.Tensor | None = None, reward: torch.Tensor | None = None,
            true_reward: torch.Tensor | None = None, term: torch.Tensor | None = None,
            true_term: torch.Tensor | None = None) -> None:
        """Score horizon step ``i`` (0-based): frames ``(b, 3, h, w)`` in [-1, 1], ``prev_truth`` the true frame
        before ``truth`` (for the moving-pixel mask); tokens ``(b, h', w')``."""
        self.moving[i].add_pixels(pred, truth, prev_truth)
        mse = ((pred - truth) ** 2).flatten(1).mean(1)
        self.psnr[i] += float((10 * torch.log10(4.0 / mse.clamp(min=1e-10))).sum())
        self.ssim[i] += float(ssim(pred, truth, data_range=2.0, reduction="none").sum())
        self.n[i] += len(pred)
        if tokens is not None:
            self.tok[i] += float((tokens == true_tokens).float().flatten(1).mean(1).sum())
            self.moving[i].add_tokens(tokens, true_tokens, prev_true_tokens)
        if reward is not None and true_reward is not None:
            self.reward_ae[i] += float((reward.float().cpu() - true_reward.float()).abs().sum())
        if term is not None and true_term is not None:
            p, t = term.float().cpu() >= 0.5, true_term.bool()
            self.term[i] += torch.tensor([float((p & t).sum()), float(p.sum()), float(t.sum())])

    def result(self, has_tokens: bool, has_outcomes: bool) -> dict[str, list[float]]:
        n = self.n.clamp(min=1)
        out = {"psnr_db": (self.psnr / n).tolist(), "ssim": (self.ssim / n).tolist(),
               "psnr_moving_db": [_finite_or_none(m.psnr_db) for m in self.moving]}
        if has_tokens:
            out["token_accuracy"] = (self.tok / n).tolist()
            out["changed_token_accuracy"] = [_finite_or_none(m.token_accuracy) for m in self.moving]
        if has_outcomes:
            out["reward_mae"] = (self.reward_ae / n).tolist()
            cum = self.term.cumsum(0)  # precision / recall over all steps up to h
            out["termination_precision"] = (cum[:, 0] / cum[:, 1].clamp(min=1)).tolist()
            out["termination_recall"] = (cum[:, 0] / cum[:, 2].clamp(min=1)).tolist()
        return out


@torch.no_grad()
def evaluate_world_model(model: WorldModel, data: str, cfg: EvalConfig, show_progress: bool | None = None,
                         folder: str | None = None) -> dict:
    """Run the protocol of the module docstring on ``data``'s held-out clips; returns the report dict. Raises
    :class:`~wm_video.data.split.NoHeldOutError`, saying how to fix the dataset, when it holds nothing out.
    ``folder``: where the model was loaded from, named in errors."""
    c, hz = cfg.context_frames, cfg.horizon
    if not 1 <= c <= model.context_frames:
        raise ValueError(f"context_frames must be in [1, {model.context_frames}] (the model's window), got {c}")
    encoder = load_task_encoder(model.dynamics.config, cfg, "eval", folder)  # each clip's own text, or cfg.task
    loader, split = heldout_loader(data, cfg.val_fraction, cfg.batch_size)
    model.check_data_actions(load_dataset_info(data).action_space, f"{data}/dataset.json")
    scores = {m: HorizonScores(hz) for m in cfg.methods}
    gen = torch.Generator().manual_seed(cfg.seed)
    has_actions = False
    clips = skipped = 0
    has_outcomes = False
    bar = progress(total=cfg.max_clips, desc="evaluating", unit="clip", enable=show_progress)
    for batch in loader:
        frames = batch["frames"]
        if frames.shape[1] < c + hz:
            skipped += len(frames)
            continue
        frames = frames[: cfg.max_clips - clips]
        b = len(frames)
        x = to_model_frames(frames[:, : c + hz])  # (b, c+H, 3, h, w)
        actions = batch.get("actions")
        actions = None if actions is None or model.action_type == "none" else actions[:b, : c + hz]
        has_actions = has_actions or actions is not None
        rewards, terms = batch.get("rewards"), batch.get("terminations")
        has_outcomes = has_outcomes or rewards is not None
        true_tokens = model.encode(x)
        text = None if encoder is None else encoder([cfg.task] * b if cfg.task else (batch.get("task") or [None])[:b])
        _score_batch(model, cfg, scores, frames, x, actions, rewards, terms, true_tokens, gen, text)
        clips += b
        bar.update(b)
        if clips >= cfg.max_clips:
            break
    bar.close()
    if clips == 0:
        raise ValueError(f"{data}: no held-out clip has the {c + hz} frames the protocol needs (context {c} + "
                         f"horizon {hz}); {skipped} clips were too short")
    results = {m: s.result(m != "tokenizer_ceiling", has_outcomes and m in ("model", *ACTION_ROWS))
               for m, s in scores.items() if s.n.sum() > 0}
    notes = {}
    for m in ACTION_ROWS:
        if m in cfg.methods and m not in results:
            notes[m] = ("absent: " + ("the world model has no action space (video only)" if model.action_type == "none"
                                      else "the dataset has no actions") if not has_actions
                        else "absent: needs at least 2 clips per batch to shuffle")
    return {"data": str(data), "heldout_shards": len(split.heldout.shards), "split": split.rule, "clips": clips,
            "skipped_short_clips": skipped, "horizons": list(range(1, hz + 1)), "results": results, "notes": notes,
            "protocol": {"name": "open-loop rollout on held-out clips", "module": __name__, **asdict(cfg),
                         "decoder": "diffusion" if model.decoder is not None else "vq",
                         "keep_still_patches": model.keeps_still_patches,
                         "termination_threshold": 0.5, "ssim": "torchmetrics gaussian 11x11, data_range 2",
                         **machine_record(device=str(model.device))}}


def _score_batch(model: WorldModel, cfg: EvalConfig, scores: dict[str, HorizonScores], frames: torch.Tensor,
                 x: torch.Tensor, actions: torch.Tensor | None, rewards: torch.Tensor | None,
                 terms: torch.Tensor | None, true_tokens: torch.Tensor, gen: torch.Generator,
                 text: torch.Tensor | None = None) -> None:
    """Score one batch of ``b`` held-out clips (``x``: ``(b, c+H, 3, h, w)`` in [-1, 1]) under every method
    (``text``: the clips' task-text embeddings ``(b, text_dim)``, for a model trained with text)."""
    c, hz, b = cfg.context_frames, cfg.horizon, len(frames)
    truth = x[:, c:]
    for m in cfg.methods:
        if m == "copy_last_frame":
            for i in range(hz):
                scores[m].add(i, x[:, c - 1], truth[:, i], x[:, c - 1 + i], true_tokens[:, c - 1],
                              true_tokens[:, c + i], true_tokens[:, c - 1 + i])
            continue
        if m == "tokenizer_ceiling":
            # drawn as the rollouts draw their frames with the VQ decoder, after the last context frame
            recon = vq_render(model.tokenizer, true_tokens[:, c:], x[:, c - 1], true_tokens[:, c - 1],
                              model.keeps_still_patches)
            for i in range(hz):
                scores[m].add(i, recon[:, i], truth[:, i], x[:, c - 1 + i])
            continue
        acts = actions
        if m in ACTION_ROWS:
            if acts is None or (m == "shuffled_actions" and b < 2):
                continue
            # shuffled: every clip gets its neighbour's actions; null: no actions at all, context included
            acts = acts[torch.roll(torch.arange(b), 1)] if m == "shuffled_actions" else None
        env = WorldModelEnv(model, cfg.maskgit_steps, cfg.temperature,
                            render=RenderSettings(cfg.num_inference_steps),
                            generator=gen, guidance_scale=cfg.guidance_scale,
                            text_guidance_scale=cfg.text_guidance_scale)
        env.reset(frames[:, :c], None if acts is None else acts[:, : c - 1], text=text)
        for i in range(hz):
            out = env.step(None if acts is None else acts[:, c - 1 + i])
            scores[m].add(i, out.frames.cpu(), truth[:, i], x[:, c - 1 + i], out.tokens.cpu(),
                          true_tokens[:, c + i].cpu(), true_tokens[:, c - 1 + i].cpu(),
                          out.rewards, None if rewards is None else rewards[:b, c - 1 + i],
                          out.terminations, None if terms is None else terms[:b, c - 1 + i])
