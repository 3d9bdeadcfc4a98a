"""The dynamics model: token frames ``(b, t, h, w)`` and actions -> next-frame token logits, rewards, terminations.

Training objective (MaskGIT with clean context, every target in one pass): the sequence along time holds the
clean frames ``0..t-1`` followed by masked copies of frames ``1..t-1`` (a fraction of each copy's tokens, drawn
from the mask schedule, replaced by [MASK]). A clean frame attends clean frames ``j <= i``; the masked copy of
frame ``i`` attends clean frames ``j < i`` and itself, at the same temporal position ``i``. Spatial attention and
the MLP act per frame, so the copies just ride along. The cross-entropy on the masked tokens of the copies trains
exactly what sampling does: clean cached context plus one partially masked target. ``mask_ratio=1.0`` masks every
target token: one-shot next-frame prediction from clean context for every frame at once (teacher forcing; the
eval accuracy).

Action domains (``DynamicsConfig.domains``): one model over datasets whose action spaces differ. Every call
(``forward``, ``compute_loss`` through ``batch["domain"]``, ``teacher_forced_accuracy``, the rollouts of
:mod:`.sampling`) takes ``domain=NAME``, and a batch is of one domain; only the action encoder differs between
domains (:class:`~wm_video.models.dynamics.actions.DomainActions`), the null action and the rest are shared.
``domain=None`` means the model's only domain and is an error when it has several. :meth:`DynamicsModel.add_domain`
adds a domain to a trained model for fine-tuning, starting as the null action.

Task text (``DynamicsConfig.text_dim`` > 0): ``forward``, ``compute_loss`` (``batch["text_embeddings"]``),
``teacher_forced_accuracy`` and the rollouts take each clip's text embedding ``(b, text_dim)`` from a frozen encoder
(:mod:`wm_video.models.text_encoder`); :class:`~wm_video.models.dynamics.text.TextConditioning` turns it into an
offset of every frame's conditioning vector. ``text=None`` is "no text" (the unconditional model that
``text_dropout`` trains); text given to a model without text is refused.

Save/load: huggingface_hub's ``PyTorchModelHubMixin`` (``config.json`` + ``model.safetensors``), as for the
tokenizer, so the three parts of a world model load the same way; loading checks the folder first. Sampling
(MaskGIT steps, temperature, top-k) and the cached rollout live in :mod:`.sampling`, apart from ``forward``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import nn

from wm_video.models.card import part_card
from wm_video.models.checks import ids_out_of_range
from wm_video.models.dynamics.actions import ActionEncoder, DomainActions
from wm_video.models.dynamics.config import (
    DEFAULT_DOMAIN,
    ActionDomain,
    DynamicsConfig,
    mask_schedule,
    resolve_domain,
)
from wm_video.models.dynamics.heads import OutcomeHeads, outcome_metrics, reward_loss, termination_loss
from wm_video.models.dynamics.st_transformer import KVCache, STTransformer
from wm_video.models.dynamics.text import TextConditioning
from wm_video.models.export import check_export
from wm_video.utils.logs import quiet_hub_loads

REQUIRED_FIELDS = {"vocab_size", "token_h", "token_w", "width", "depth", "action_type"}  # in every export


@dataclass
class DynamicsOutput:
    """Outputs of :meth:`DynamicsModel.forward` on ``t`` frames.

    Attributes:
        logits: token logits ``(b, t-1, h, w, k)`` for frames ``1..t-1``, from their masked copies.
        target_mask: ``(b, t-1, h, w)`` bool, the target tokens that were masked (the loss positions).
        reward_logits: ``(b, t, bins)``, the reward of action ``a_i`` taken at frame ``i``.
        termination_logits: ``(b, t)``, whether ``a_i`` ended the episode.
        reward: ``(b, t)`` expected reward (``symexp`` of the two-hot expectation).
        pooled: ``(b, t, d)`` clean frames' outputs averaged over tokens (the heads' input).
    """

    logits: torch.Tensor
    target_mask: torch.Tensor
    reward_logits: torch.Tensor
    termination_logits: torch.Tensor
    reward: torch.Tensor
    pooled: torch.Tensor


class DynamicsModel(nn.Module, PyTorchModelHubMixin):
    """Action-conditioned spatiotemporal transformer. Args: config: a :class:`DynamicsConfig` (or its dict, as
    ``from_pretrained`` passes it)."""

    def __init__(self, config: DynamicsConfig | dict) -> None:
        super().__init__()
        config = DynamicsConfig(**config) if isinstance(config, dict) else config
        self.config = c = config
        self.token_embed = nn.Embedding(c.vocab_size + 1, c.width)  # id vocab_size is [MASK]
        # the previous frame's token at each target place (config.previous_token_input); id vocab_size: none
        self.previous_embed = (nn.Embedding(c.vocab_size + 1, c.width, padding_idx=c.vocab_size)
                               if c.previous_token_input else None)
        self.input_conv = nn.Conv2d(c.width, c.width, 3, padding=1) if c.input_conv else None
        self.backbone = STTransformer(c)
        self.token_head = nn.Linear(c.width, c.vocab_size)
        # One encoder with its own null (the layout of exports made before domains), or one per domain around a
        # shared null.
        self.actions = DomainActions.from_config(c) if c.domains else ActionEncoder(c)
        self.outcome = OutcomeHeads(c)
        self.text = TextConditioning(c) if c.text_dim else None  # no text weights at all without text
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        # adaLN-Zero: every block starts as the identity and every action as the null action.
        for lin in [*(blk.modulation for blk in self.backbone.blocks), self.backbone.out_modulation]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        if self.previous_embed is not None:
            with torch.no_grad():  # "no previous token" adds nothing, and gets no gradient (padding_idx)
                self.previous_embed.weight[self.mask_id].zero_()
        if self.input_conv is not None:  # starts as the identity (a residual branch)
            nn.init.zeros_(self.input_conv.weight)
            nn.init.zeros_(self.input_conv.bias)
        self.actions.zero_init_()
        self.outcome.zero_init_()
        if self.text is not None:
            self.text.zero_init_()

    @property
    def mask_id(self) -> int:
        return self.config.vocab_size

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in the backward pass (``torch.utils.checkpoint``, non-reentrant)."""
        self.backbone.gradient_checkpointing = enabled

    # ---- action domains -----------------------------------------------------------------------------------

    def action_encoder(self, domain: str | None = None) -> ActionEncoder:
        """The action encoder of ``domain`` (None: the model's only domain); ValueError naming the known domains
        for an unknown name, or for None when the model has several."""
        if isinstance(self.actions, DomainActions):
            return self.actions.encoder(domain)
        resolve_domain([DEFAULT_DOMAIN], domain)
        return self.actions

    def embed_actions(self, actions: torch.Tensor | None, lead: tuple[int, ...], domain: str | None = None,
                      drop_prob: float = 0.0) -> torch.Tensor:
        """``domain``'s actions (``lead`` ids or ``(*lead, a)`` floats, raw), or None -> conditioning ``(*lead, c)``:
        the shared null action plus the action's offset. ``drop_prob``: as :class:`ActionEncoder`'s."""
        return self.action_encoder(domain)(actions, lead, drop_prob, self.actions.null)

    def check_actions(self, actions: torch.Tensor | None, lead: tuple[int, ...], domain: str | None = None,
                      where: str = "actions") -> None:
        """Clear errors for ``domain``'s actions of the wrong type, shape or range (:meth:`ActionEncoder.check`)."""
        self.action_encoder(domain).check(actions, lead, where)

    @torch.no_grad()
    def add_domain(self, spec: ActionDomain | dict[str, Any]) -> None:
        """Add an action domain, to fine-tune on data whose action space the model has not seen: a fresh encoder
        whose every action starts equal to the shared null action (as ``action_init="zero"``), so the model
        predicts as before for every domain, the new one as for action-free clips; no other parameter changes.
        ``config.domains`` (and so the ``config.json`` that ``save_pretrained`` writes) gains ``spec``.

        A model without a domains list first becomes one whose domain ``default`` is its action space: its null
        stays ``actions.null``, its embedding or MLP moves to ``actions.encoders.default.*`` (the same parameter
        objects). ValueError for a name the model already has."""
        spec = ActionDomain.of(spec)
        known = [d.name for d in self.config.action_domains]
        if spec.name in known:
            raise ValueError(f"add_domain: the model already has an action domain {spec.name!r} (domains: {known})")
        config = dataclasses.replace(self.config, domains=[*self.config.action_domains, spec])  # checks the name
        if not isinstance(self.actions, DomainActions):
            self.actions = DomainActions.from_single(self.actions, DEFAULT_DOMAIN)
        view = dataclasses.replace(config.domain_config(spec.name), action_init="zero")
        encoder = ActionEncoder(view, shared_null=True, domain=spec.name)
        encoder.zero_init_()
        self.actions.encoders[spec.name] = encoder.to(self.actions.null).train(self.training)
        self.config = config
        self._hub_mixin_config = config  # what save_pretrained writes: the mixin keeps the config given to __init__

    def domain_model(self, name: str | None = None) -> DynamicsModel:
        """Action domain ``name`` (None: the only one) of this model as a single-domain :class:`DynamicsModel`
        made of this model's own modules and parameters (nothing copied: training either trains both): its config
        is :meth:`DynamicsConfig.domain_config`, its ``actions`` the shared null with the domain's encoder. What a
        caller of one action space uses (generation, evaluation, planning, the gym env); its ``save_pretrained``
        writes that domain alone as a single-domain export. A model without a domains list returns itself.
        ValueError naming the known domains for an unknown name, or for None when there are several."""
        if not self.config.domains:
            self.action_encoder(name)  # checks the name against the one domain, 'default'
            return self
        encoder = self.actions.encoder(name)
        with torch.device("meta"):  # no memory: every part is replaced by this model's own below
            view = DynamicsModel(self.config.domain_config(name))
        for part in ("token_embed", "previous_embed", "input_conv", "backbone", "token_head", "outcome", "text"):
            setattr(view, part, getattr(self, part))
        view.actions.null = self.actions.null
        view.actions.embed, view.actions.mlp = encoder.embed, encoder.mlp
        if encoder.mlp is not None:
            view.actions.mean, view.actions.std = encoder.mean, encoder.std
        return view.train(self.training)

    # ---- inputs -------------------------------------------------------------------------------------------

    def embed_text(self, text: torch.Tensor | None, b: int, drop_prob: float = 0.0) -> torch.Tensor | None:
        """Text embeddings ``(b, text_dim)`` -> conditioning offsets ``(b, c)``; None (no text) -> None. ValueError
        for text given to a model trained without it, or of the wrong shape. ``drop_prob``: as ``text_dropout``."""
        if text is None:
            return None
        if self.text is None:
            raise ValueError(f"text: this dynamics model was trained without task text (text_dim=0), got text "
                             f"embeddings {tuple(text.shape)}; pass text=None, or train a model with model.text_dim")
        return self.text(text, b, drop_prob)

    def check_tokens(self, tokens: torch.Tensor, sliding_window: bool = False) -> None:
        """``(b, t, h, w)`` integer ids in ``[0, vocab_size)`` on this model's grid, ``t <= context_frames``
        unless ``sliding_window``; clear errors otherwise. The id range is not read inside
        :func:`~wm_video.models.checks.validated` (the caller checked it, or made the ids itself)."""
        c = self.config
        if tokens.ndim != 4:
            raise ValueError(f"tokens: expected (b, t, h, w) int64, got shape {tuple(tokens.shape)}")
        if tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise ValueError(f"tokens: expected integer ids, got {tokens.dtype}")
        if tuple(tokens.shape[2:]) != (c.token_h, c.token_w):
            raise ValueError(f"tokens: expected a {c.token_h}x{c.token_w} token grid (config token_h x token_w), "
                             f"got {tokens.shape[2]}x{tokens.shape[3]}")
        bad = ids_out_of_range(tokens, c.vocab_size)  # a host read: skipped inside checks.validated()
        if bad:
            raise ValueError(f"tokens: ids must be in [0, {c.vocab_size}), got [{bad[0]}, {bad[1]}]")
        if tokens.shape[1] > c.context_frames and not sliding_window:
            raise ValueError(f"tokens: {tokens.shape[1]} frames exceed context_frames={c.context_frames}; use the "
                             "sliding-window rollout (wm_video.models.dynamics.Rollout), forward(..., "
                             "sliding_window=True), or a model with a longer context_frames")

    def sample_target_mask(self, b: int, t: int, mask_ratio: float | None = None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """Which target tokens to mask: ``(b, t, n)`` bool. ``mask_ratio`` None draws a ratio per target frame
        from the schedule; a float in ``(0, 1]`` fixes it. At least one token per frame is masked."""
        n = self.config.tokens_per_frame
        if mask_ratio is None:
            ratio = mask_schedule(torch.rand(b, t, generator=generator), self.config.mask_schedule)
        elif 0 < mask_ratio <= 1:
            ratio = torch.full((b, t), float(mask_ratio))
        else:
            raise ValueError(f"mask_ratio must be in (0, 1] or None, got {mask_ratio}")
        count = (ratio * n).ceil().clamp(1, n)  # (b, t)
        rank = torch.rand(b, t, n, generator=generator).argsort(-1).argsort(-1)  # random order of positions
        return rank < count[..., None]

    # ---- network ------------------------------------------------------------------------------------------

    def encode(self, tokens: torch.Tensor, cond: torch.Tensor, positions: torch.Tensor, clean: torch.Tensor,
               cache: KVCache | None = None, collect_kv: bool = False, previous: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """The transformer on frames of token ids ``(b, f, n)`` (``mask_id`` allowed) with conditioning ``(b, f, c)``
        at ``positions`` ``(f,)``, flagged ``clean`` ``(f,)``: -> hidden ``(b, f, n, d)`` and, with
        ``collect_kv``, every layer's temporal keys/values for a :class:`KVCache`. ``previous`` ``(b, f, n)``: the
        token ids at each place in the frame before each frame (``mask_id``: none), read by a model with
        ``previous_token_input`` and ignored by others. The building block of ``forward`` and of :mod:`.sampling`."""
        x = self.token_embed(tokens)
        if self.previous_embed is not None and previous is not None:
            x = x + self.previous_embed(previous)
        if self.input_conv is not None:  # within each frame: (b f) d h w
            grid = rearrange(x, "b f (h w) d -> (b f) d h w", h=self.config.token_h)
            x = x + rearrange(self.input_conv(grid), "(b f) d h w -> b f (h w) d", b=x.shape[0])
        return self.backbone(x, cond, positions, clean, cache, collect_kv)

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor | None = None, mask_ratio: float | None = None,
                target_mask: torch.Tensor | None = None, *, domain: str | None = None, sliding_window: bool = False,
                generator: torch.Generator | None = None, text: torch.Tensor | None = None) -> DynamicsOutput:
        """Predict frames ``1..t-1`` (each from its clean past, its action and its unmasked tokens) and the
        outcome of every action, in one pass.

        Args:
            tokens: ``(b, t, h, w)`` int64 in ``[0, vocab_size)``.
            actions: ``(b, t)`` int64 (discrete), ``(b, t, a)`` float (continuous, raw: normalised inside) or
                None (the null action). ``actions[:, i]`` is taken after frame ``i``: it conditions frame
                ``i + 1`` and the outcome heads at frame ``i``. In training, whole clips switch to the null
                action with probability ``null_action_prob``.
            domain: the action domain of the whole batch (``DynamicsConfig.domains``); None: the only one.
            mask_ratio: fraction of each target frame's tokens to mask; None draws it from the schedule,
                1.0 is teacher-forced one-shot prediction. Ignored when ``target_mask`` is given.
            target_mask: ``(b, t-1, h, w)`` bool, the target tokens to mask.
            sliding_window: allow ``t > context_frames``, each frame seeing the last ``context_frames`` frames
                (what the cached rollout computes past the window).
            generator: random source for the mask.
            text: ``(b, text_dim)`` float, each clip's task-text embedding (models with ``text_dim`` > 0); None: no
                text. In training, each clip's text is dropped with probability ``text_dropout``.
        """
        self.check_tokens(tokens, sliding_window)
        b, t = tokens.shape[:2]
        device = tokens.device
        drop = self.config.null_action_prob if self.training else 0.0
        act = self.embed_actions(actions, (b, t), domain, drop)  # (b, t, c): a_i, for the heads at frame i
        null = self.embed_actions(None, (b, 1), domain)  # (b, 1, c): the shared null
        offset = self.embed_text(text, b, self.config.text_dropout if self.training else 0.0)  # (b, c) or None
        if offset is not None:  # the clip's text conditions every frame and the heads
            act, null = act + offset[:, None], null + offset[:, None]
        cond = torch.cat([null, act[:, :-1]], dim=1)  # frame i is produced by a_{i-1}
        flat = rearrange(tokens.long(), "b t h w -> b t (h w)")  # uint8 ids would overflow at [MASK]
        if target_mask is None:
            target_mask = self.sample_target_mask(b, t - 1, mask_ratio, generator)
        else:
            target_mask = rearrange(target_mask, "b t h w -> b t (h w)")
        target_mask = target_mask.to(device)
        masked = flat[:, 1:].masked_fill(target_mask, self.mask_id)  # (b, t-1, n)
        positions = torch.cat([torch.arange(t), torch.arange(1, t)])  # copies share their frame's position
        clean = torch.arange(2 * t - 1) < t
        previous = (torch.cat([torch.full_like(flat, self.mask_id), flat[:, :-1]], 1)  # none for the clean frames
                    if self.previous_embed is not None else None)
        hidden, _ = self.encode(torch.cat([flat, masked], 1), torch.cat([cond, cond[:, 1:]], 1), positions, clean,
                                previous=previous)
        pooled = hidden[:, :t].mean(2)  # (b, t, d)
        logits = self.token_head(hidden[:, t:])  # (b, t-1, n, k)
        reward_logits, termination_logits = self.outcome(pooled, act)
        h = self.config.token_h
        return DynamicsOutput(logits=rearrange(logits, "b t (h w) k -> b t h w k", h=h),
                              target_mask=rearrange(target_mask, "b t (h w) -> b t h w", h=h),
                              reward_logits=reward_logits, termination_logits=termination_logits,
                              reward=self.outcome.expected_reward(reward_logits), pooled=pooled)

    def compute_loss(self, batch: dict[str, Any], mask_ratio: float | None = None
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Masked-token cross-entropy, plus the reward and termination losses where the batch has them.

        Targets whose token changed since the previous frame weigh ``1 + changed_token_weight`` in the
        cross-entropy (``token_ce`` is logged unweighted). ``batch``: ``tokens`` int64 ``(b, t, h, w)`` with
        ``t >= 2``; optional ``actions`` (``(b, t)`` or ``(b, t, a)``), ``rewards`` float ``(b, t)``,
        ``terminations`` bool ``(b, t)`` (aligned as in docs/data-format.md), ``domain`` (one name, a str, for the
        whole batch; absent: the model's only domain), ``text_embeddings`` float ``(b, text_dim)`` (required by a
        model with text, refused by one without). Logs: ``loss``, ``token_ce``,
        ``token_acc`` (on masked tokens), ``copy_acc`` (how often the masked token equals the previous frame's: the
        copy-last-frame baseline), ``mask_ratio``, and ``reward_loss``, ``reward_mae``, ``termination_loss``,
        ``termination_acc`` when present.
        """
        tokens = batch["tokens"]
        if tokens.ndim == 4 and tokens.shape[1] < 2:
            raise ValueError(f"tokens: need at least 2 frames (context and target), got {tokens.shape[1]}")
        domain = batch.get("domain")
        if domain is not None and not isinstance(domain, str):
            raise ValueError(f"batch['domain']: one domain name (str) for the whole batch, got {domain!r}")
        c, text = self.config, batch.get("text_embeddings")
        if c.text_dim and text is None:
            raise ValueError(f"batch['text_embeddings']: missing; this dynamics model is conditioned on task text "
                             f"(text_dim={c.text_dim}): embed each clip's task with its text encoder")
        out = self(tokens, batch.get("actions"), mask_ratio=mask_ratio, domain=domain, text=text)
        m = out.target_mask
        target = tokens[:, 1:][m]  # (M,)
        logits = out.logits[m].float()  # (M, k)
        changed = tokens[:, :-1][m] != target  # (M,) the token at this place changed since the previous frame
        ce = F.cross_entropy(logits, target, reduction="none")  # (M,)
        token_ce = ce.mean()
        weighted = token_ce
        if c.changed_token_weight > 0:
            weight = 1 + c.changed_token_weight * changed.float()
            weighted = (weight * ce).sum() / weight.sum()
        loss = c.token_loss_weight * weighted
        logs = {"token_ce": token_ce.detach(), "token_acc": (logits.detach().argmax(-1) == target).float().mean(),
                "copy_acc": (~changed).float().mean(), "mask_ratio": m.float().mean()}
        rewards, terminations = batch.get("rewards"), batch.get("terminations")
        if rewards is not None:
            r_loss = reward_loss(out.reward_logits, rewards, self.outcome.bins)
            loss = loss + c.reward_loss_weight * r_loss
            logs["reward_loss"] = r_loss.detach()
        if terminations is not None:
            t_loss = termination_loss(out.termination_logits, terminations, c.termination_pos_weight)
            loss = loss + c.termination_loss_weight * t_loss
            logs["termination_loss"] = t_loss.detach()
        logs.update(outcome_metrics(out.reward_logits, rewards, self.outcome.bins, out.termination_logits,
                                    terminations))
        return loss, {"loss": loss.detach(), **logs}

    @torch.no_grad()
    def teacher_forced_accuracy(self, tokens: torch.Tensor, actions: torch.Tensor | None = None,
                                domain: str | None = None, text: torch.Tensor | None = None
                                ) -> dict[str, torch.Tensor]:
        """One-shot prediction of every frame ``1..t-1`` from its clean past (``mask_ratio=1.0``, argmax) given
        ``domain``'s ``actions`` (and ``text``, ``(b, text_dim)``): the eval metric. Returns ``token_acc``,
        ``token_ce`` and ``copy_acc`` (the copy-last-frame baseline)."""
        out = self(tokens, actions, mask_ratio=1.0, domain=domain, text=text)
        logits, target = out.logits.float(), tokens[:, 1:]
        return {"token_acc": (logits.argmax(-1) == target).float().mean(),
                "token_ce": F.cross_entropy(logits.flatten(0, -2), target.flatten()),
                "copy_acc": (tokens[:, :-1] == target).float().mean()}

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The ``README.md`` that ``save_pretrained`` writes (``model_card_kwargs`` come here): what this part is and
        how to load it (:func:`wm_video.models.card.part_card`), not the mixin's placeholder text."""
        return part_card(self, "dynamics", **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> DynamicsModel:
        """Load an export made by :meth:`save_pretrained` from a local folder (no hub downloads here)."""
        check_export(Path(pretrained_model_name_or_path), DynamicsConfig, "dynamics", REQUIRED_FIELDS)
        with quiet_hub_loads():  # huggingface_hub prints a line per local load
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

