"""The dynamics model's one typed config (with :class:`ActionDomain`, one action space of a multi-domain model) and
its analytic training FLOPs; presets by name live in :mod:`wm_video.training.presets` (kind ``dynamics``)."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

ACTION_TYPES = ("discrete", "continuous", "none")
# The name of the one domain of a model without a ``domains`` list (its top-level action fields).
DEFAULT_DOMAIN = "default"
_DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a state_dict key part: no dots


def check_action_space(spec: Any, where: str) -> None:
    """The checks shared by :class:`DynamicsConfig` and :class:`ActionDomain` on their action fields
    (``action_type``, ``num_actions``, ``action_dim``, ``action_mean``, ``action_std``); ValueError naming
    ``where`` and the field."""
    def bad(name: str, why: str) -> ValueError:
        return ValueError(f"{where}: field '{name}' {why}, got {getattr(spec, name)!r}")

    if spec.action_type not in ACTION_TYPES:
        raise bad("action_type", f"must be one of {list(ACTION_TYPES)}")
    if spec.action_type == "discrete" and spec.num_actions < 1:
        raise bad("num_actions", "must be >= 1 for discrete actions")
    if spec.action_type == "continuous":
        if spec.action_dim < 1:
            raise bad("action_dim", "must be >= 1 for continuous actions")
        for name in ("action_mean", "action_std"):
            if getattr(spec, name) and len(getattr(spec, name)) != spec.action_dim:
                raise bad(name, f"needs action_dim={spec.action_dim} entries (or none)")
        if any(not s > 0 for s in spec.action_std):
            raise bad("action_std", "must be > 0 in every dimension")


def resolve_domain(names: list[str], domain: str | None) -> str:
    """The domain ``domain`` names among ``names``; None means the only one. ValueError naming the known domains
    when ``domain`` is unknown, or None while there are several."""
    if domain is None:
        if len(names) == 1:
            return names[0]
        raise ValueError(f"dynamics: this model has {len(names)} action domains {names}; pass domain=NAME "
                         "(a batch, a rollout and a call are all of one domain)")
    if domain not in names:
        raise ValueError(f"dynamics: unknown action domain {domain!r}; known: {names}")
    return domain


@dataclass
class ActionDomain:
    """One action space of a multi-domain dynamics model (:attr:`DynamicsConfig.domains`): a dataset family whose
    clips share an action space, e.g. Atari with 18 actions, a MuJoCo task's torques, a robot's end-effector
    velocities, or action-free video. The fields mean what :class:`DynamicsConfig`'s action fields of the same names
    mean; ``action_mean`` and ``action_std`` are the domain's own dataset statistics.

    Args:
        name: unique within the model (letters, digits, ``_``, ``-``; it names the encoder's weights,
            ``actions.encoders.NAME.*``); callers pass it as ``domain=NAME``.
        action_type: ``discrete``, ``continuous`` or ``none`` (action-free video: only the shared null action).
        num_actions: discrete actions.
        action_dim: continuous action dimensions ``a``.
        action_mean: per-dimension mean of continuous actions (empty: 0).
        action_std: per-dimension standard deviation (empty: 1).
        action_low, action_high: per-dimension bounds of continuous actions, from the domain's dataset (empty:
            unknown). No weight uses them; a world model's index gives them to planners and the gym env of that
            domain (:meth:`wm_video.world_model.WorldModel.for_domain`).
    """

    name: str = ""
    action_type: Literal["discrete", "continuous", "none"] = "none"
    num_actions: int = 0
    action_dim: int = 0
    action_mean: list[float] = field(default_factory=list)
    action_std: list[float] = field(default_factory=list)
    action_low: list[float] = field(default_factory=list)
    action_high: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        where = f"dynamics: action domain {self.name!r}"
        check_action_space(self, where)
        low, high = self.action_low, self.action_high
        if (low or high) and (self.action_type != "continuous" or len(low) != self.action_dim
                              or len(high) != self.action_dim):
            raise ValueError(f"{where}: fields 'action_low' and 'action_high' need action_dim={self.action_dim} "
                             f"entries each, for continuous actions only, got {low!r} and {high!r}")
        if any(lo > hi for lo, hi in zip(low, high, strict=True)):
            raise ValueError(f"{where}: an 'action_low' exceeds its 'action_high': {low} and {high}")

    @classmethod
    def of(cls, spec: ActionDomain | dict[str, Any]) -> ActionDomain:
        """``spec`` itself, or the domain its dict (as ``config.json`` holds it) describes."""
        return spec if isinstance(spec, ActionDomain) else cls(**spec)


@dataclass
class DynamicsConfig:
    """An action-conditioned spatiotemporal transformer over token frames ``(b, t, h, w)`` in ``[0, vocab_size)``.

    Each block is spatial self-attention within a frame (bidirectional), temporal self-attention at each token
    position across frames (causal) and an MLP, all pre-norm. Frame ``i`` is conditioned on the action that
    produced it, ``a_{i-1}`` (frame 0, action-free video and dropped actions use a learned null action), by
    adaptive layer-norm modulation (adaLN-Zero, DiT): every sub-layer's shift, scale and gate come from one
    per-frame conditioning vector. Against a per-frame action token, this conditions every layer and every
    token directly, adds no sequence length, and its zero initialisation leaves an action-free model unchanged
    when action embeddings are added for fine-tuning.

    Args:
        vocab_size: token vocabulary ``k`` (the tokenizer's codebook size); id ``vocab_size`` is the [MASK] token.
        token_h: token grid height (the tokenizer's ``resolution / downsample``).
        token_w: token grid width.
        context_frames: the temporal window ``W``: training clips are at most this long, and a rollout keeps the
            last ``W - 1`` frames' keys and values (a sliding window beyond it).
        width: model width ``d``.
        depth: number of spatiotemporal blocks.
        heads: attention heads (``width / heads`` must be even for RoPE, a multiple of 4 for 2-D RoPE).
        mlp_ratio: MLP hidden width over ``width``.
        dropout: dropout on the residual branches (0 for tests and large data).
        spatial_pos: ``learned`` (row + column embeddings added to the tokens) or ``rope`` (2-D rotary
            positions in spatial attention: half the head dims rotate with the row, half with the column).
        rope_base: base of the rotary frequencies. Temporal positions are always 1-D RoPE: relative, so a
            sliding window past ``context_frames`` needs no re-indexing of cached keys.
        cond_dim: width of the per-frame conditioning vector (action embedding) feeding the adaLN modulation;
            it carries a few bits per frame, so it can be much narrower than ``width`` (each block's modulation
            has ``9 * cond_dim * width`` weights).
        action_type: ``discrete`` (int ids), ``continuous`` (float vectors) or ``none`` (video only).
        num_actions: discrete actions.
        action_dim: continuous action dimensions ``a``.
        action_mean: per-dimension mean of continuous actions (the dataset's ``stats.actions.mean``); actions are
            normalised with it inside the model, so an export carries its statistics. Empty: 0.
        action_std: per-dimension standard deviation, as above. Empty: 1.
        null_action_prob: probability, per clip in training, of replacing all its actions with the null action,
            so one model serves action-free generation (and pretraining on action-free video) as well as
            action-conditioned prediction; it also trains the unconditional model that classifier-free guidance
            on actions needs at sampling (``Rollout(guidance_scale=...)``).
        action_init: how real actions start. ``zero``: each is exactly the null action (so adding an action space
            to a pretrained model starts from that model; fine-tuning always uses it). ``normal``: discrete
            embeddings start at N(0, 1), like the null vector, and the continuous MLP's last layer at N(0, 1/c);
            from scratch, under adaLN-Zero, ``zero`` makes an action's effect the product of two factors that are
            both zero at the start, each getting gradient only through the other, so the model learns to use its
            actions late: on Atari Boxing after 800 steps of the ``tiny`` preset, ``zero`` left the held-out token
            cross-entropy with true and shuffled actions 0.009 nats apart, ``normal`` 0.149 (docs/fidelity.md, E3).
            Either way the adaLN-Zero modulation starts at zero, so a fresh model's predictions ignore its actions.
        action_token: also give each frame an action token in spatial attention (the frame's conditioning vector
            projected to ``width``), beside the adaLN modulation: a token can then read the action where it is,
            e.g. only where the controlled sprite is. Costs one token per frame.
        previous_token_input: each target token's input also embeds the token at its place in the previous frame
            (a second embedding table, added to the [MASK] or token embedding; clean frames get none). A target
            frame then starts as a copy of the last one, and one spatial-attention hop within it, modulated by the
            action, can move content where the action says; without it, where a sprite was must first travel
            through the previous clean frame's spatial attention and then the temporal attention
            (docs/fidelity.md, E20).
        input_conv: a 3x3 convolution over each frame's token grid on the input embeddings (zero-initialised,
            residual; within a frame only, so causality and the KV cache are untouched): every cell starts with its
            neighbours' content in direction-specific channels, so "the sprite was left of me and the action says
            right" needs no learned relative-position attention (the inductive bias of DIAMOND's U-Net;
            docs/fidelity.md, E21).
        reward_bins: bins of the reward head. Rewards are classified into two-hot bins over ``symlog(r)``
            (DreamerV3): reward scales differ by orders of magnitude across datasets and games, and a
            cross-entropy over fixed symlog bins neither needs per-dataset scaling nor lets large rewards
            dominate the gradient, as a regression loss would.
        reward_range: ``[low, high]`` of the bins in symlog space (``[-20, 20]`` covers rewards up to ~5e8).
        termination_pos_weight: weight of positive examples in the termination BCE (terminations are rare).
        mask_schedule: fraction of a target frame's tokens masked in training, and the fraction still masked
            after each MaskGIT sampling step: ``cosine`` (``cos(pi/2 * u)``, MaskGIT) or ``linear`` (``1 - u``).
        token_loss_weight: weight of the masked-token cross-entropy.
        changed_token_weight: extra weight, in that cross-entropy, of target tokens that differ from the previous
            frame's token at the same place (0: off; ``w``: weight ``1 + w``). With stable tokens most targets repeat
            the previous frame, and the few that change (what moves, what the actions do) are drowned out.
        reward_loss_weight: weight of the reward cross-entropy (applies when the batch has rewards).
        termination_loss_weight: weight of the termination BCE (applies when the batch has terminations).
        gradient_checkpointing: recompute each block's activations in the backward pass (saves memory, costs
            one more forward); also :meth:`DynamicsModel.set_gradient_checkpointing`.
        domains: several action spaces in one model (:class:`ActionDomain`, or their dicts as ``config.json``
            holds them), for training one model on datasets whose actions differ (Atari, MuJoCo, robots,
            action-free video), as HMA's per-embodiment action stems do. Each domain has its own action encoder and
            normalisation statistics; all share the one learned null action (frame 0, action-free video and
            dropped actions all mean "no action known", so action-free pretraining trains the null that the
            action domains use) and everything else. Each batch, rollout and call is of one domain, named by
            ``domain=NAME``. Empty (the default): one domain, named ``default``, described by the top-level action
            fields above, with the weights and ``config.json`` of a model made before domains existed. When
            ``domains`` is given, the top-level action fields are not used by the model; ``null_action_prob``,
            ``action_init`` and ``cond_dim`` apply to every domain. :meth:`DynamicsModel.add_domain` adds one to a
            trained model.
        text_dim: width of the task-text embeddings the model is conditioned on (the frozen text encoder's
            ``d_model`` or ``hidden_size``, :mod:`wm_video.models.text_encoder`); 0 (the default): no text, and no
            text weights. A clip's embedding ``(b, text_dim)`` goes through a small MLP whose last layer starts at
            zero into a conditioning offset ``(b, c)`` added to every frame's action vector (the adaLN input) and to
            the outcome heads' action input, so a model with text starts as the same model without.
        text_dropout: probability, per clip in training, of dropping its text (the offset is then zero: "no text"),
            which trains the text-free model that classifier-free guidance on text needs at sampling
            (``Rollout(text_guidance_scale=...)``) and that serves clips without a task.
        text_encoder: the text encoder the model was trained with (its folder, as given to training), recorded in
            ``config.json`` so a user knows which encoder to give again; the encoder itself is never stored or
            downloaded.
    """

    vocab_size: int = 1024
    token_h: int = 8
    token_w: int = 8
    context_frames: int = 16
    width: int = 512
    depth: int = 8
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    spatial_pos: Literal["learned", "rope"] = "learned"
    rope_base: float = 10_000.0
    cond_dim: int = 256
    action_type: Literal["discrete", "continuous", "none"] = "discrete"
    num_actions: int = 18
    action_dim: int = 0
    action_mean: list[float] = field(default_factory=list)
    action_std: list[float] = field(default_factory=list)
    null_action_prob: float = 0.1
    action_init: Literal["zero", "normal"] = "normal"
    action_token: bool = False
    previous_token_input: bool = False
    input_conv: bool = False
    reward_bins: int = 255
    reward_range: list[float] = field(default_factory=lambda: [-20.0, 20.0])
    termination_pos_weight: float = 10.0
    mask_schedule: Literal["cosine", "linear"] = "cosine"
    token_loss_weight: float = 1.0
    changed_token_weight: float = 0.0
    reward_loss_weight: float = 1.0
    termination_loss_weight: float = 1.0
    gradient_checkpointing: bool = False
    domains: list[ActionDomain] = field(default_factory=list)
    text_dim: int = 0
    text_dropout: float = 0.1
    text_encoder: str = ""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"dynamics: field '{name}' {why}, got {getattr(self, name)!r}")

        for name in ("vocab_size", "token_h", "token_w", "width", "depth", "heads", "cond_dim"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if self.context_frames < 2:
            raise bad("context_frames", "must be >= 2 (one context frame and one target)")
        if self.width % self.heads:
            raise ValueError(f"dynamics: field 'heads'={self.heads} does not divide width {self.width}")
        head_dim = self.width // self.heads
        if head_dim % (4 if self.spatial_pos == "rope" else 2):
            raise ValueError(f"dynamics: head dim width/heads = {head_dim} must be a multiple of "
                             f"{4 if self.spatial_pos == 'rope' else 2} for {self.spatial_pos!r} positions")
        if not self.mlp_ratio > 0:
            raise bad("mlp_ratio", "must be > 0")
        if not 0 <= self.dropout < 1:
            raise bad("dropout", "must be in [0, 1)")
        if not self.changed_token_weight >= 0:
            raise bad("changed_token_weight", "must be >= 0")
        if not 0 <= self.null_action_prob <= 1:
            raise bad("null_action_prob", "must be in [0, 1]")
        if self.text_dim < 0:
            raise bad("text_dim", "must be >= 0 (0: no text)")
        if not 0 <= self.text_dropout <= 1:
            raise bad("text_dropout", "must be in [0, 1]")
        if self.action_init not in ("zero", "normal"):
            raise bad("action_init", "must be 'zero' or 'normal'")
        check_action_space(self, "dynamics")
        self.domains = [ActionDomain.of(d) for d in self.domains]  # config.json holds dicts
        self._check_domains()
        if self.reward_bins < 2:
            raise bad("reward_bins", "must be >= 2")
        if len(self.reward_range) != 2 or not self.reward_range[0] < self.reward_range[1]:
            raise bad("reward_range", "must be [low, high] with low < high")
        if self.termination_pos_weight <= 0:
            raise bad("termination_pos_weight", "must be > 0")

    def _check_domains(self) -> None:
        names = [d.name for d in self.domains]
        for name in names:
            if not isinstance(name, str) or not _DOMAIN_NAME.fullmatch(name):
                raise ValueError(f"dynamics: field 'domains': name {name!r} must be letters, digits, '_' or '-' "
                                 "(not starting with '_' or '-')")
            if hasattr(nn.ModuleDict, name):  # the encoders live in a ModuleDict keyed by name
                raise ValueError(f"dynamics: field 'domains': name {name!r} is reserved (an attribute of ModuleDict)")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"dynamics: field 'domains': names must be unique, repeated: {repeated}")

    @property
    def action_domains(self) -> list[ActionDomain]:
        """Every action domain of the model: ``domains``, or the one named ``default`` that the top-level action
        fields describe."""
        if self.domains:
            return list(self.domains)
        return [ActionDomain(DEFAULT_DOMAIN, self.action_type, self.num_actions, self.action_dim,
                             list(self.action_mean), list(self.action_std))]

    def domain(self, name: str | None = None) -> ActionDomain:
        """The action domain called ``name`` (None: the only one); ValueError naming the known domains otherwise."""
        domains = {d.name: d for d in self.action_domains}
        return domains[resolve_domain(list(domains), name)]

    def domain_config(self, name: str | None = None) -> DynamicsConfig:
        """This config as one domain sees it: the top-level action fields set to the domain's, no ``domains``
        list. One domain's :class:`~wm_video.models.dynamics.actions.ActionEncoder` is built from it."""
        d = self.domain(name)
        return dataclasses.replace(self, domains=[], action_type=d.action_type, num_actions=d.num_actions,
                                   action_dim=d.action_dim, action_mean=list(d.action_mean),
                                   action_std=list(d.action_std))

    @property
    def tokens_per_frame(self) -> int:
        return self.token_h * self.token_w

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)


def mask_schedule(u: torch.Tensor | float, kind: str = "cosine") -> torch.Tensor:
    """The masked fraction at progress ``u`` in [0, 1] (1 at ``u = 0``, 0 at ``u = 1``): ``cosine`` is
    ``cos(pi/2 * u)`` (MaskGIT), ``linear`` ``1 - u``. Training draws ``u`` uniformly per target frame; sampling
    step ``s`` of ``K`` leaves ``schedule((s + 1) / K)`` of the tokens masked."""
    u = torch.as_tensor(u, dtype=torch.float32)
    if kind == "cosine":
        return torch.cos(math.pi / 2 * u)
    if kind == "linear":
        return 1 - u
    raise ValueError(f"mask_schedule: unknown schedule {kind!r}; known: cosine, linear")


def visible_frames(frames: int, window: int) -> int:
    """Temporal attention keys summed over the training sequence's frames: clean frames ``0..t-1`` and masked
    copies of ``1..t-1`` each see ``min(i + 1, window)`` frames (the clean past in the window and themselves)."""
    clean = sum(min(i + 1, window) for i in range(frames))
    masked = sum(min(i + 1, window) for i in range(1, frames))
    return clean + masked


def training_flops_per_step(config: DynamicsConfig, batch_size: int, frames: int | None = None) -> float:
    """Model FLOPs of one training step (forward + backward = 3x forward) on ``batch_size`` clips of ``frames``
    frames (default ``context_frames``), counted analytically from the matmuls (a multiply-add is 2 FLOPs).

    Counted: token-wise projections (spatial and temporal q, k, v, out; MLP), attention scores and weighted sums
    (spatial over ``n`` tokens; temporal over the frames each query may see, not the masked-out ones), the
    per-frame adaLN modulation, the output projection on every target token and the reward/termination heads.
    Embedding lookups, norms and softmax are left out. Activation checkpointing's extra forward is not
    counted (model FLOPs, as MFU is defined in PaLM).
    """
    c = config
    t = frames or c.context_frames
    d, n, depth = c.width, c.tokens_per_frame, c.depth
    seq = 2 * t - 1  # clean frames + masked copies of frames 1..t-1
    per_token_layer = 2 * (4 * d * d) * 2 + 2 * 2 * d * c.mlp_width  # spatial + temporal projections, MLP
    spatial_scores = 2 * 2 * n * d  # q.k and attn @ v, per token
    modulation = 2 * c.cond_dim * 9 * d  # per frame
    temporal_scores = n * 2 * 2 * d * visible_frames(t, c.context_frames)  # over the whole sequence
    forward = depth * (seq * n * (per_token_layer + spatial_scores) + temporal_scores + seq * modulation)
    forward += seq * 2 * c.cond_dim * 2 * d  # final modulation
    forward += (t - 1) * n * 2 * d * c.vocab_size  # token logits on every target position
    forward += t * (2 * (d + c.cond_dim) * d + 2 * d * (c.reward_bins + 1))  # outcome heads
    return 3.0 * batch_size * forward


def training_flops_per_token(config: DynamicsConfig, frames: int | None = None) -> float:
    """:func:`training_flops_per_step` per input token (``batch * frames * n`` tokens per step); MFU is
    ``tokens/s * this / peak FLOP/s``."""
    t = frames or config.context_frames
    return training_flops_per_step(config, 1, t) / (t * config.tokens_per_frame)

