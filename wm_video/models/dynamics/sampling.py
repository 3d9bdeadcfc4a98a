"""Sampling next frames from a :class:`DynamicsModel`: MaskGIT decoding and rollouts, apart from ``forward``.

``maskgit_generate`` (:mod:`.maskgit`) fills one frame in ``K`` passes (``K = 1``: one-shot).

``Rollout`` steps a batch of imagined episodes. With the KV cache (default), each step

1. predicts the reward and termination of the action from the cached pooled output of the last frame,
2. runs ``K`` masked passes of the new frame, attending to the cached temporal keys/values, and
3. runs one clean pass of the finished frame (conditioned on the same action), appending its keys/values.

The cache holds at most ``context_frames - 1`` frames (a sliding window; the oldest frame is dropped), so the
cost per frame stops growing with the rollout's length. Past the window the cached rollout equals
``model(..., sliding_window=True)`` over the whole history: every frame sees the last ``context_frames`` frames,
but the oldest of them still carries, in its cached keys, what it saw when it was made (as in sliding-window
attention LLMs). Without the cache (``use_cache=False``), every pass recomputes the last ``context_frames - 1``
frames from scratch, the first of them conditioned on the null action, exactly as a training clip: the same
results while the history fits the window, a training-identical view past it, and a cost ``K * context_frames``
times one frame's.

Classifier-free guidance on actions (``guidance_scale`` ``s``): every pass samples from ``uncond + s * (cond -
uncond)``, where ``cond`` are the logits given the action history and ``uncond`` those with every frame's
conditioning, the context's included, set to the null action, as in a clip whose actions were dropped in training
(``null_action_prob``). ``s = 1`` is the plain model (the unconditional stream is skipped, so it costs nothing),
``s = 0`` the unconditional one, ``s > 1`` follows the actions more strongly. The two streams run as one doubled
batch ``[cond; uncond]`` with their own cache rows (or recomputed windows) and are fed the same sampled tokens;
the reward and termination heads read the conditional stream only.

Classifier-free guidance on task text (``text_guidance_scale`` ``s_t``, models with text): a stream with the text
dropped (the zero offset, as ``text_dropout`` trains) joins the batch, and the logits are ``u_t + s_t * (cond -
u_t)``; with both guidances, ``u_a + s * (cond - u_a) + (s_t - 1) * (cond - u_t)``, each condition pushed by its
own scale (the unconditional-on-actions stream keeps the text). ``s_t = 1`` is the plain model and adds no stream.

Action domains: a rollout is of one domain (``domain=NAME``, fixed at construction; None: the model's only one),
whose action encoder embeds every action of the context and of each step; the null action is the shared one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange

from wm_video.models.checks import validated
from wm_video.models.dynamics.maskgit import MaskGITOutput, maskgit_generate
from wm_video.models.dynamics.model import DynamicsModel
from wm_video.models.dynamics.st_transformer import KVCache


@dataclass
class RolloutStep:
    """One imagined step: ``tokens`` ``(b, h, w)`` the next frame; ``reward`` ``(b,)`` expected reward and
    ``termination`` ``(b,)`` probability that the action ended the episode (the outcome of the action taken at
    the previous frame); ``logits`` ``(b, h, w, k)`` of the last MaskGIT pass; ``reward_logits`` ``(b, bins)``,
    ``termination_logits`` ``(b,)``. With guidance, ``logits`` are the guided ones and the heads the conditional
    stream's."""

    tokens: torch.Tensor
    reward: torch.Tensor
    termination: torch.Tensor
    logits: torch.Tensor
    reward_logits: torch.Tensor
    termination_logits: torch.Tensor


@dataclass
class RolloutOutput:
    """A rollout of ``T`` steps: ``tokens`` ``(b, T, h, w)``, ``rewards`` ``(b, T)``, ``terminations`` ``(b, T)``
    (probabilities)."""

    tokens: torch.Tensor
    rewards: torch.Tensor
    terminations: torch.Tensor


class Rollout:
    """Imagined steps from a context: ``start(context_tokens, context_actions)`` then ``step(action)`` repeatedly.

    Args:
        model: the dynamics model (put in eval mode here).
        steps: MaskGIT passes per frame.
        temperature: sampling temperature (0: argmax, deterministic).
        top_k: sample among the ``top_k`` most likely tokens.
        use_cache: keep temporal keys/values (sliding window of ``context_frames - 1`` frames); False
            recomputes the window every pass (see the module docstring for how the two differ past the window).
        generator: random source for sampling.
        guidance_scale: classifier-free guidance on actions, ``s >= 0`` (see the module docstring). 1: the plain
            model at no extra cost; any other value runs a doubled batch (about twice the compute and cache).
        domain: the action domain of every row's actions (``DynamicsConfig.domains``); None: the only one.
        text_guidance_scale: classifier-free guidance on task text, ``s_t >= 0`` (models with text; the module
            docstring); 1: none, at no cost. The text itself is given to :meth:`start`.
    """

    def __init__(self, model: DynamicsModel, steps: int = 8, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None,
                 guidance_scale: float = 1.0, domain: str | None = None, text_guidance_scale: float = 1.0) -> None:
        for name, scale in (("guidance_scale", guidance_scale), ("text_guidance_scale", text_guidance_scale)):
            if not scale >= 0:  # NaN too
                raise ValueError(f"{name} must be >= 0 (1: no guidance), got {scale}")
        if text_guidance_scale != 1 and model.text is None:
            raise ValueError(f"text_guidance_scale={text_guidance_scale}: this dynamics model was trained without "
                             "task text (text_dim=0); leave it at 1")
        kind = model.action_encoder(domain).kind  # an unknown domain fails here, before any work
        self.model, self.domain = model.eval(), domain
        self.steps, self.temperature, self.top_k = steps, temperature, top_k
        self.use_cache, self.generator = use_cache, generator
        self.guidance_scale, self.text_guidance_scale = float(guidance_scale), float(text_guidance_scale)
        # A video-only model or domain has cond == uncond: guidance would change nothing but the cost.
        self.guided = self.guidance_scale != 1 and kind != "none"
        self.text_guided = self.text_guidance_scale != 1
        self.num_streams = 1 + self.guided + self.text_guided  # [cond; no actions; no text], b rows each
        self._text: torch.Tensor | None = None  # (b, c) the rows' text offsets; None: no text
        self.window = model.config.context_frames - 1
        self.cache: KVCache | None = None
        self._frames = self._conds = self._pooled = None
        self.batch_size = 0  # b; the streams hold num_streams * b rows
        self.position = 0  # frame index of the next frame

    @torch.no_grad()
    def start(self, context_tokens: torch.Tensor, context_actions: torch.Tensor | None = None, *,
              text: torch.Tensor | None = None, offset: int = 0) -> None:
        """Begin from ``context_tokens`` ``(b, t0, h, w)`` (any length: past the window only the last frames
        count). ``context_actions``: the actions taken after each context frame but the last, ``(b, t0 - 1)`` or
        ``(b, t0 - 1, a)``; a clip's aligned ``(b, t0, ...)`` actions are accepted and their last entry ignored
        (``step`` takes it). None: the null action. ``text``: each row's task-text embedding ``(b, text_dim)``
        (models with text; None: no text). ``offset``: the frame index of the first context frame
        (:meth:`restart_rows`)."""
        model = self.model
        model.check_tokens(context_tokens, sliding_window=True)
        b, t0 = context_tokens.shape[:2]
        if context_actions is not None and context_actions.shape[1:2] == (t0,):
            context_actions = context_actions[:, : t0 - 1]
        self._text = model.embed_text(None if text is None else text.to(context_tokens.device), b)  # (b, c) | None
        acts = self._embed(context_actions, (b, t0 - 1))  # (b, t0-1, c)
        conds = self._cond(torch.cat([self._embed(None, (b, 1)), acts], dim=1))  # (B, t0, c)
        frames = self._streams(rearrange(context_tokens.long(), "b t h w -> b t (h w)"))  # (B, t0, n)
        if self.use_cache:
            self.cache = KVCache(self.window)
            positions = torch.arange(t0) + offset
            hidden, kv = model.encode(frames, conds, positions, torch.ones(t0, dtype=torch.bool), collect_kv=True)
            self.cache.append(kv, positions)
            self._pooled = hidden[:b, -1].mean(1)  # (b, d), the conditional stream
            self._last = frames[:, -1]  # (B, n): the previous frame of the next target (previous_token_input)
        else:
            self._frames, self._conds = frames[:, -self.window:], conds[:, -self.window:]
        self.batch_size, self.position = b, t0 + offset

    @torch.no_grad()
    def restart_rows(self, rows: torch.Tensor, context_tokens: torch.Tensor,
                     context_actions: torch.Tensor | None = None, text: torch.Tensor | None = None) -> None:
        """Start the batch rows ``rows`` ``(k,)`` afresh from their own context ``(k, t0, h, w)`` (and actions and
        text ``(k, text_dim)``, given exactly when :meth:`start` had text) while the other rows go on: a vector env
        resets the episodes that ended, not the batch.

        The new context is placed at the frames just before the batch's next frame; temporal attention sees relative
        positions only (RoPE), so a restarted row equals a rollout started from the same context, up to float
        rounding of the rotation angles. The context must fill the window as the batch's history does (``t0 >=
        context_frames - 1`` once the batch has that many frames), so every row attends to as many frames."""
        if self.position == 0:
            raise RuntimeError("Rollout.restart_rows before start(context_tokens)")
        k, t0 = context_tokens.shape[:2]
        if rows.shape != (k,):
            raise ValueError(f"restart_rows: {k} contexts for rows of shape {tuple(rows.shape)}")
        if (text is None) != (self._text is None):
            raise ValueError(f"restart_rows: text {'missing' if text is None else 'given'}, but the rollout started "
                             f"{'with' if text is None else 'without'} text: restarted rows keep the batch's kind")
        sub = Rollout(self.model, self.steps, self.temperature, self.top_k, self.use_cache, self.generator,
                      self.guidance_scale, self.domain, self.text_guidance_scale)
        sub.start(context_tokens, context_actions, text=text, offset=self.position - t0)
        rows = rows.to(torch.long).cpu()
        streams = torch.cat([rows + i * self.batch_size for i in range(self.num_streams)])  # rows of every stream
        if text is not None:
            self._text[rows.to(self._text.device)] = sub._text
        if self.use_cache:
            if len(sub.cache) != len(self.cache):
                raise ValueError(f"restart_rows: a context of {t0} frames fills {len(sub.cache)} of the window's "
                                 f"frames, the batch's history {len(self.cache)}")
            n = self.model.config.tokens_per_frame
            flat = (streams[:, None] * n + torch.arange(n)).flatten()  # rows of the ((b n), heads, f, e) cache
            for mine, theirs in ((self.cache.keys, sub.cache.keys), (self.cache.values, sub.cache.values)):
                for layer, new in zip(mine, theirs, strict=True):
                    layer[flat.to(layer.device)] = new
            self._pooled[rows.to(self._pooled.device)] = sub._pooled
            self._last[streams.to(self._last.device)] = sub._last
        else:
            if sub._frames.shape[1] != self._frames.shape[1]:
                raise ValueError(f"restart_rows: a context of {t0} frames fills {sub._frames.shape[1]} of the "
                                 f"window's frames, the batch's history {self._frames.shape[1]}")
            self._frames[streams.to(self._frames.device)] = sub._frames
            self._conds[streams.to(self._conds.device)] = sub._conds

    @torch.no_grad()
    def step(self, action: torch.Tensor | None = None) -> RolloutStep:
        """Take ``action`` (``(b,)`` int64, ``(b, a)`` float, or None for the null action) after the last frame:
        -> the next frame and the action's reward and termination."""
        if self.position == 0:
            raise RuntimeError("Rollout.step before start(context_tokens)")
        model, c, b = self.model, self.model.config, self.batch_size
        acts = self._cond(self._embed(action, (b,)))  # (B, c): each stream's
        if self.use_cache:
            gen, pooled = self._generate_cached(acts)
        else:
            gen, pooled = self._generate_recomputed(acts)
        reward_logits, termination_logits = model.outcome(pooled, acts[:b])  # the conditional stream's
        return RolloutStep(tokens=rearrange(gen.tokens, "b (h w) -> b h w", h=c.token_h),
                           reward=model.outcome.expected_reward(reward_logits),
                           termination=termination_logits.float().sigmoid(),
                           logits=rearrange(gen.logits, "b (h w) k -> b h w k", h=c.token_h),
                           reward_logits=reward_logits, termination_logits=termination_logits)

    def _embed(self, actions: torch.Tensor | None, lead: tuple[int, ...]) -> torch.Tensor:
        """This rollout's domain's actions (or None: the null action) -> conditioning ``(*lead, c)``."""
        return self.model.embed_actions(actions, lead, self.domain)

    def _cond(self, act: torch.Tensor) -> torch.Tensor:
        """Embedded actions ``(b, ..., c)`` -> every stream's conditioning ``(B, ..., c)``: [cond; null actions (with
        guidance); no text (with text guidance)], each row's text offset added where its stream keeps the text."""
        text = None if self._text is None else self._text.view(act.shape[0], *[1] * (act.ndim - 2), -1)
        streams = [act if text is None else act + text]
        if self.guided:
            null = self._embed(None, tuple(act.shape[:-1]))
            streams.append(null if text is None else null + text)
        if self.text_guided:
            streams.append(act)
        return torch.cat(streams) if len(streams) > 1 else streams[0]

    def _streams(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, ...)`` -> ``(B, ...)``: the same input to every stream."""
        return torch.cat([x] * self.num_streams) if self.num_streams > 1 else x

    def _guide(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, n, k)`` -> guided ``(b, n, k)`` (the module docstring's formulas)."""
        if self.num_streams == 1:
            return logits
        cond, *uncond = logits.chunk(self.num_streams)
        out = cond
        if self.guided:
            u = uncond.pop(0)
            out = u + self.guidance_scale * (cond - u)
        if self.text_guided:
            u = uncond.pop(0)
            out = out + (self.text_guidance_scale - 1) * (cond - u) if self.guided \
                else u + self.text_guidance_scale * (cond - u)
        return out

    def _maskgit(self, predict: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> MaskGITOutput:
        """Fill the next frame; ``predict`` maps both streams' targets ``(B, n)`` to logits ``(B, n, k)``."""
        c = self.model.config
        return maskgit_generate(lambda target: self._guide(predict(self._streams(target))), self.batch_size,
                                c.tokens_per_frame, self.model.mask_id, self.steps, self.temperature, self.top_k,
                                c.mask_schedule, self.generator, device)

    def _generate_cached(self, act: torch.Tensor) -> tuple[MaskGITOutput, torch.Tensor]:
        """``act`` ``(B, c)`` for both streams -> the new frame, and the previous frame's pooled output ``(b, d)``
        in the conditional stream (for the heads)."""
        model, pooled = self.model, self._pooled
        pos, cond = torch.tensor([self.position]), act[:, None]  # (1,), (B, 1, c)

        def predict(target: torch.Tensor) -> torch.Tensor:
            hidden, _ = model.encode(target[:, None], cond, pos, torch.tensor([False]), self.cache,
                                     previous=self._last[:, None])
            return model.token_head(hidden[:, 0])  # (B, n, k)

        gen = self._maskgit(predict, act.device)
        tokens = self._streams(gen.tokens)[:, None]  # (B, 1, n)
        hidden, kv = model.encode(tokens, cond, pos, torch.tensor([True]), self.cache, collect_kv=True)
        self.cache.append(kv, pos)
        self._pooled, self._last = hidden[: self.batch_size, 0].mean(1), tokens[:, 0]  # (b, d), (B, n)
        self.position += 1
        return gen, pooled

    def _generate_recomputed(self, act: torch.Tensor) -> tuple[MaskGITOutput, torch.Tensor]:
        """As :meth:`_generate_cached`, recomputing the window ``(B, f, n)`` in every pass."""
        model = self.model
        frames, conds = self._frames, self._conds.clone()
        conds[:, 0] = self._cond(self._embed(None, (self.batch_size,)))  # the window starts like a training clip
        f = frames.shape[1]
        positions, clean = torch.arange(f + 1), torch.arange(f + 1) < f
        previous = (torch.cat([torch.full_like(frames, model.mask_id), frames[:, -1:]], 1)  # none for clean frames
                    if model.previous_embed is not None else None)
        cond = torch.cat([conds, act[:, None]], dim=1)  # (B, f + 1, c)
        last_pooled = []

        def predict(target: torch.Tensor) -> torch.Tensor:
            hidden, _ = model.encode(torch.cat([frames, target[:, None]], 1), cond, positions, clean, previous=previous)
            last_pooled.append(hidden[: self.batch_size, f - 1].mean(1))  # (b, d)
            return model.token_head(hidden[:, f])  # (B, n, k)

        gen = self._maskgit(predict, act.device)
        self._frames = torch.cat([frames, self._streams(gen.tokens)[:, None]], 1)[:, -self.window:]
        self._conds = torch.cat([self._conds, act[:, None]], 1)[:, -self.window:]
        self.position += 1
        return gen, last_pooled[0]


@torch.no_grad()
def sample_next_frame(model: DynamicsModel, tokens: torch.Tensor, actions: torch.Tensor | None = None,
                      steps: int = 8, temperature: float = 1.0, top_k: int | None = None,
                      generator: torch.Generator | None = None, guidance_scale: float = 1.0,
                      domain: str | None = None, text: torch.Tensor | None = None,
                      text_guidance_scale: float = 1.0) -> RolloutStep:
    """One next frame from a clip, without a cache: ``tokens`` ``(b, t, h, w)`` (the last ``context_frames - 1``
    frames are used) and its aligned ``actions`` ``(b, t, ...)`` of ``domain``, whose last entry produces the new
    frame; ``text`` ``(b, text_dim)``: each clip's task-text embedding. ``guidance_scale``,
    ``text_guidance_scale``: classifier-free guidance on actions and on text (:class:`Rollout`)."""
    model.check_tokens(tokens, sliding_window=True)
    b, t = tokens.shape[:2]
    roll = Rollout(model, steps, temperature, top_k, use_cache=False, generator=generator,
                   guidance_scale=guidance_scale, domain=domain, text_guidance_scale=text_guidance_scale)
    last = None
    if actions is not None:
        model.check_actions(actions, (b, t), domain)
        last = actions[:, -1]
    with validated():  # checked once above: start and step would read the same values again
        roll.start(tokens, actions, text=text)
        return roll.step(last)


@torch.no_grad()
def rollout(model: DynamicsModel, context_tokens: torch.Tensor, actions: torch.Tensor | None = None,
            context_actions: torch.Tensor | None = None, num_frames: int | None = None, steps: int = 8,
            temperature: float = 1.0, top_k: int | None = None, use_cache: bool = True,
            generator: torch.Generator | None = None, guidance_scale: float = 1.0,
            domain: str | None = None, text: torch.Tensor | None = None,
            text_guidance_scale: float = 1.0) -> RolloutOutput:
    """Imagine ``T`` frames after ``context_tokens`` ``(b, t0, h, w)``: ``actions`` ``(b, T)`` / ``(b, T, a)``
    of ``domain`` are taken one per step, the first after the last context frame; with ``actions=None`` give
    ``num_frames`` (null actions). ``text`` ``(b, text_dim)``: each row's task-text embedding. ``guidance_scale``,
    ``text_guidance_scale``: classifier-free guidance on actions and on text (:class:`Rollout`)."""
    if actions is None and num_frames is None:
        raise ValueError("rollout: give actions (b, T, ...) or num_frames for an action-free rollout")
    roll = Rollout(model, steps, temperature, top_k, use_cache, generator, guidance_scale, domain, text_guidance_scale)
    roll.start(context_tokens, context_actions, text=text)
    if actions is not None:  # all steps' actions at once, not one host read per step
        model.check_actions(actions, (roll.batch_size, actions.shape[1]), domain)
    with validated():
        outs = [roll.step(None if actions is None else actions[:, i])
                for i in range(num_frames if actions is None else actions.shape[1])]
    return RolloutOutput(tokens=torch.stack([o.tokens for o in outs], 1),
                         rewards=torch.stack([o.reward for o in outs], 1),
                         terminations=torch.stack([o.termination for o in outs], 1))
