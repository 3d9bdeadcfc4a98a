"""Policy learning inside the world model: an actor-critic trained only on imagined rollouts (Dreamer / IRIS style).

Each training step starts a batch of imagined episodes from contexts of real data (:class:`StartStates`: dataset
clips or frames recorded in the simulator), lets the actor act for ``horizon`` steps in a token-only
:class:`~wm_video.world_model_env.WorldModelEnv`, and fits

- the critic ``V(s_t)`` to the lambda-returns ``R_t = r_t + gamma (1 - p_t) [(1 - lambda) V(s_{t+1}) + lambda R_{t+1}]``
  (``R_H = V(s_H)``; ``r_t``, ``p_t`` the reward and termination probability the dynamics heads predict);
- the actor by REINFORCE on the advantage ``R_t - V(s_t)`` plus an entropy bonus. Imagined frames are sampled
  tokens, so there is no gradient through the dynamics: REINFORCE is the estimator for discrete and continuous
  actions alike (as in IRIS). Advantages are divided by ``max(1, S)``, ``S`` a running estimate of the 5-95 %
  range of the returns (DreamerV3), so one entropy weight suits rewards of any scale.

Every term is weighted by the probability of still being alive at step ``t`` (the product of ``1 - p``).

Inputs: the networks read the tokens of the last ``frames`` frames (two by default: one frame shows no velocity).
:class:`TokenFeatures` looks the tokens up in the dynamics model's own token-embedding table (frozen, copied into
the actor so it is self-contained), projects each to ``feature_dim`` values, adds a learned position per token and
frame, and flattens: compact, and unlike a mean over tokens it keeps *where* things are, which control needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from wm_video.data.schema import ActionSpace
from wm_video.models.export import check_export
from wm_video.planning.scoring import ImaginedEnv, Plan, discounted_return
from wm_video.utils.logs import quiet_hub_loads

REQUIRED_FIELDS = {"vocab_size", "embed_dim", "token_h", "token_w", "action_type"}  # in every saved actor


@dataclass
class ActorCriticConfig:
    """Args:
    vocab_size: rows of the token-embedding table (the dynamics model's ``vocab_size + 1``, [MASK] included).
    embed_dim: width of that table.
    token_h: token grid height.
    token_w: token grid width.
    frames: frames of tokens the networks read (the last ones).
    feature_dim: values per token after the projection.
    hidden: width of the MLPs.
    action_type: ``discrete`` or ``continuous``.
    num_actions: discrete actions.
    action_dim: continuous action dimensions.
    action_low: continuous lower bounds (actions are squashed into the bounds with tanh).
    action_high: continuous upper bounds.
    init_log_std: initial log standard deviation of the continuous policy (before the squash).
    """

    vocab_size: int
    embed_dim: int
    token_h: int
    token_w: int
    frames: int = 2
    feature_dim: int = 8
    hidden: int = 256
    action_type: str = "discrete"
    num_actions: int = 0
    action_dim: int = 0
    action_low: list[float] = field(default_factory=list)
    action_high: list[float] = field(default_factory=list)
    init_log_std: float = -0.5

    def __post_init__(self) -> None:
        if self.action_type == "discrete" and self.num_actions < 1:
            raise ValueError("actor-critic: discrete actions need num_actions >= 1")
        if self.action_type == "continuous" and (self.action_dim < 1 or len(self.action_low) != self.action_dim
                                                 or len(self.action_high) != self.action_dim):
            raise ValueError("actor-critic: continuous actions need action_dim >= 1 and action_low/action_high "
                             "with one bound per dimension")
        if self.action_type not in ("discrete", "continuous"):
            raise ValueError(f"actor-critic: action_type must be discrete or continuous, got {self.action_type!r}")
        if self.frames < 1:
            raise ValueError(f"actor-critic: frames must be >= 1, got {self.frames}")


def last_frames(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """``(b, t, h, w)`` -> the last ``k`` frames ``(b, k, h, w)``, the first repeated when ``t < k``."""
    if tokens.shape[1] < k:
        tokens = torch.cat([tokens[:, :1].expand(-1, k - tokens.shape[1], -1, -1), tokens], 1)
    return tokens[:, -k:]


class TokenFeatures(nn.Module):
    """Tokens ``(b, k, h, w)`` -> features ``(b, k * h * w * feature_dim)`` (see the module docstring)."""

    def __init__(self, c: ActorCriticConfig) -> None:
        super().__init__()
        self.frames = c.frames
        self.register_buffer("embed", torch.zeros(c.vocab_size, c.embed_dim))  # frozen: set by for_world_model
        self.proj = nn.Linear(c.embed_dim, c.feature_dim)
        self.pos = nn.Parameter(torch.zeros(c.frames * c.token_h * c.token_w, c.feature_dim))
        self.norm = nn.LayerNorm(c.frames * c.token_h * c.token_w * c.feature_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = F.embedding(last_frames(tokens, self.frames).flatten(1).long(), self.embed)  # (b, k n, d)
        x = F.silu(self.proj(x) + self.pos)  # (b, k n, f)
        return self.norm(x.flatten(1))


def _mlp(c: ActorCriticConfig, out: int) -> nn.Sequential:
    width = c.frames * c.token_h * c.token_w * c.feature_dim
    return nn.Sequential(TokenFeatures(c), nn.Linear(width, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden),
                         nn.SiLU(), nn.Linear(c.hidden, out))


class ActorCritic(nn.Module, PyTorchModelHubMixin):
    """Actor (policy) and critic (state value) over frame tokens, each with its own feature network.

    Save/load: huggingface_hub's ``PyTorchModelHubMixin`` (``config.json`` + ``model.safetensors``), like the
    world model's parts; the frozen embedding table is saved with it, so a loaded actor needs no world model to
    act on tokens.
    """

    def __init__(self, config: ActorCriticConfig | dict) -> None:
        super().__init__()
        self.config = c = ActorCriticConfig(**config) if isinstance(config, dict) else config
        discrete = c.action_type == "discrete"
        self.actor = _mlp(c, c.num_actions if discrete else c.action_dim)
        self.critic = _mlp(c, 1)
        self.log_std = nn.Parameter(torch.full((max(c.action_dim, 1),), float(c.init_log_std)),
                                    requires_grad=not discrete)
        nn.init.zeros_(self.actor[-1].weight)  # start from the uniform / centred policy
        nn.init.zeros_(self.actor[-1].bias)
        low, high = (torch.tensor(x or [0.0], dtype=torch.float32) for x in (c.action_low, c.action_high))
        self.register_buffer("low", low, persistent=False)
        self.register_buffer("high", high, persistent=False)

    @classmethod
    def for_world_model(cls, model: Any, action_space: ActionSpace, **overrides: Any) -> ActorCritic:
        """An actor-critic reading ``model``'s tokens through its dynamics model's (frozen) token embeddings."""
        dyn = model.dynamics
        table = dyn.token_embed.weight.detach()
        c = dyn.config
        if action_space.kind == "continuous" and (action_space.low is None or action_space.high is None):
            raise ValueError("actor-critic: continuous actions need bounds (--action-low/--action-high, or an "
                             "index with action_space low/high)")
        cfg = ActorCriticConfig(vocab_size=table.shape[0], embed_dim=table.shape[1], token_h=c.token_h,
                                token_w=c.token_w, action_type=action_space.kind,
                                num_actions=int(action_space.n or 0), action_dim=int(action_space.dim or 0),
                                action_low=list(action_space.low or []), action_high=list(action_space.high or []),
                                **overrides)
        ac = cls(cfg).to(table.device)
        ac.set_embedding(table)
        return ac

    @torch.no_grad()
    def set_embedding(self, table: torch.Tensor) -> None:
        """Copy the frozen token-embedding table ``(vocab_size, embed_dim)`` into both feature networks."""
        for net in (self.actor, self.critic):
            net[0].embed.copy_(table)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> ActorCritic:
        """Load a folder written by :meth:`save_pretrained` (``wm-video imagine-train``'s OUT/actor); local only."""
        check_export(Path(pretrained_model_name_or_path), ActorCriticConfig, "actor-critic", REQUIRED_FIELDS)
        with quiet_hub_loads():  # huggingface_hub prints a line per local load
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def actor_parameters(self) -> list[nn.Parameter]:
        return [*self.actor.parameters(), *([self.log_std] if self.log_std.requires_grad else [])]

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())

    # ---- policy and value -----------------------------------------------------------------------------------

    def value(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(b, k, h, w)`` -> ``(b,)``."""
        return self.critic(tokens).squeeze(-1)

    def policy_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Discrete policy logits ``(b, A)`` (MCTS priors)."""
        return self.actor(tokens)

    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        """Continuous pre-squash samples ``(b, a)`` -> actions within the bounds."""
        return self.low + (torch.tanh(raw) + 1) / 2 * (self.high - self.low)

    @torch.no_grad()
    def sample(self, tokens: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ``(action, raw)``: the env action (``(b,)`` int64 or ``(b, a)`` in bounds) and what
        :meth:`log_prob_entropy` scores (the id, or the pre-squash Gaussian sample). No gradient: REINFORCE
        re-scores the sample."""
        out = self.actor(tokens)
        gdev = generator.device if generator is not None else out.device
        if self.config.action_type == "discrete":
            if deterministic:
                a = out.argmax(-1)
            else:
                a = torch.multinomial(out.float().softmax(-1).to(gdev), 1, generator=generator)[:, 0].to(out.device)
            return a, a
        raw = out
        if not deterministic:
            noise = torch.randn(out.shape, generator=generator, device=gdev).to(out.device)
            raw = out + self.log_std.exp() * noise
        return self.squash(raw), raw

    def log_prob_entropy(self, tokens: torch.Tensor, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability ``(b,)`` of ``raw`` under the current policy and the policy's entropy ``(b,)`` (for
        continuous actions, of the Gaussian before the squash: the squash's Jacobian has no parameters)."""
        out = self.actor(tokens)
        if self.config.action_type == "discrete":
            logp = out.float().log_softmax(-1)
            return logp.gather(-1, raw[:, None].long()).squeeze(-1), -(logp.exp() * logp).sum(-1)
        dist = torch.distributions.Normal(out.float(), self.log_std.exp().float())
        return dist.log_prob(raw.float()).sum(-1), dist.entropy().sum(-1)


# ---- training in imagination --------------------------------------------------------------------------------


@dataclass
class StartStates:
    """Contexts of real data to start imagined episodes from: ``frames`` ``(N, t0, 3, h, w)`` uint8 and the
    actions between them ``(N, t0 - 1[, a])`` (None: the null action)."""

    frames: torch.Tensor
    actions: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.frames.ndim != 5 or len(self.frames) == 0:
            raise ValueError(f"start states: expected (N >= 1, t0, 3, h, w) frames, got {tuple(self.frames.shape)}")

    def sample(self, b: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.randint(len(self.frames), (b,), generator=generator)
        return self.frames[idx], None if self.actions is None else self.actions[idx]


def lambda_returns(rewards: torch.Tensor, conts: torch.Tensor, values: torch.Tensor, lam: float) -> torch.Tensor:
    """``rewards`` and ``conts`` (``gamma * (1 - p)``) ``(b, H)``, ``values`` ``(b, H + 1)`` -> ``(b, H)``."""
    ret, out = values[:, -1], []
    for t in reversed(range(rewards.shape[1])):
        ret = rewards[:, t] + conts[:, t] * ((1 - lam) * values[:, t + 1] + lam * ret)
        out.append(ret)
    return torch.stack(out[::-1], 1)


@dataclass
class ImagineConfig:
    """Args:
    horizon: imagined steps per start state ``H``.
    batch_size: imagined episodes per training step.
    discount: ``gamma``.
    return_lambda: ``lambda`` of the lambda-returns.
    entropy: weight of the policy's entropy bonus.
    actor_lr: Adam learning rate of the actor.
    critic_lr: Adam learning rate of the critic.
    grad_clip: gradient-norm clip of each network.
    return_scale_decay: decay of the running 5-95 % return range that scales advantages.
    """

    horizon: int = 15
    batch_size: int = 32
    discount: float = 0.99
    return_lambda: float = 0.95
    entropy: float = 3e-3
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    grad_clip: float = 100.0
    return_scale_decay: float = 0.99

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.batch_size < 1:
            raise ValueError("imagine: horizon and batch_size must be >= 1")
        if not 0 < self.discount <= 1 or not 0 <= self.return_lambda <= 1:
            raise ValueError("imagine: discount must be in (0, 1] and return_lambda in [0, 1]")


@dataclass
class Trajectory:
    """A batch of imagined episodes: ``states`` ``(b, H + 1, k, h, w)`` the last ``k`` frames' tokens before each
    step (and after the last); ``raw`` ``(b, H[, a])`` what the actor sampled; ``rewards``, ``terminations``
    ``(b, H)`` predicted by the world model."""

    states: torch.Tensor
    raw: torch.Tensor
    rewards: torch.Tensor
    terminations: torch.Tensor


class ImaginationTrainer:
    """Trains an :class:`ActorCritic` on imagined rollouts (see the module docstring).

    Args:
        env: the imagined environment (a token-only ``WorldModelEnv``, usually at temperature 1).
        agent: the actor-critic.
        starts: real contexts to start from.
        config: training settings.
        generator: random source of start states and actions.
    """

    def __init__(self, env: ImaginedEnv, agent: ActorCritic, starts: StartStates, config: ImagineConfig | None = None,
                 generator: torch.Generator | None = None) -> None:
        self.env, self.agent, self.starts = env, agent, starts
        self.config = c = config or ImagineConfig()
        self.generator = generator
        self.actor_opt = torch.optim.Adam(agent.actor_parameters(), lr=c.actor_lr)
        self.critic_opt = torch.optim.Adam(agent.critic_parameters(), lr=c.critic_lr)
        self.return_scale = None
        self.imagined_frames = 0

    @property
    def device(self) -> torch.device:
        return next(self.agent.parameters()).device

    @torch.no_grad()
    def imagine(self) -> Trajectory:
        """One batch of imagined episodes under the current policy."""
        c, k = self.config, self.agent.config.frames
        frames, acts = self.starts.sample(c.batch_size, self.generator)
        history = last_frames(self.env.reset(frames, None if acts is None else acts.to(self.device)), k)
        recent = list(history.unbind(1))
        states, raws, rewards, terms = [history], [], [], []
        for _ in range(c.horizon):
            action, raw = self.agent.sample(states[-1], generator=self.generator)
            out = self.env.step(action)
            recent = [*recent[1:], out.tokens]
            states.append(torch.stack(recent, 1))
            raws.append(raw)
            rewards.append(out.rewards.float())
            terms.append(out.terminations.float())
        self.imagined_frames += c.batch_size * c.horizon
        return Trajectory(torch.stack(states, 1), torch.stack(raws, 1), torch.stack(rewards, 1),
                          torch.stack(terms, 1))

    def train_step(self) -> dict[str, float]:
        """Imagine a batch, then one actor and one critic update. Returns the logs: ``imagined_return`` (mean
        survival-weighted discounted return over the horizon), ``critic_loss``, ``actor_loss``, ``entropy``,
        ``value``, ``return_scale``."""
        c, agent = self.config, self.agent
        traj = self.imagine()
        b, h = traj.rewards.shape
        states = traj.states.flatten(0, 1)  # (b (H+1), k, h, w)
        values = agent.value(states).view(b, h + 1)
        r, p = traj.rewards.to(values.device), traj.terminations.to(values.device)
        targets = lambda_returns(r, c.discount * (1 - p), values.detach(), c.return_lambda)  # (b, H)
        ret, alive = discounted_return(r, p, c.discount)
        weight = alive[:, :h]
        critic_loss = (weight * (values[:, :h] - targets) ** 2).mean()
        spread = float(torch.quantile(targets.float().flatten(), 0.95) - torch.quantile(targets.float().flatten(),
                                                                                          0.05))
        self.return_scale = spread if self.return_scale is None else (
            c.return_scale_decay * self.return_scale + (1 - c.return_scale_decay) * spread)
        adv = (targets - values[:, :h].detach()) / max(1.0, self.return_scale)
        logp, ent = agent.log_prob_entropy(traj.states[:, :h].flatten(0, 1), traj.raw.flatten(0, 1))
        actor_loss = -(weight * (logp.view(b, h) * adv + c.entropy * ent.view(b, h))).mean()
        for loss, opt, params in ((critic_loss, self.critic_opt, agent.critic_parameters()),
                                  (actor_loss, self.actor_opt, agent.actor_parameters())):
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
            opt.step()
        return {"imagined_return": float(ret.mean()), "critic_loss": float(critic_loss.detach()),
                "actor_loss": float(actor_loss.detach()), "entropy": float(ent.detach().mean()),
                "value": float(values.detach().mean()),
                "return_scale": float(self.return_scale)}


class ActorAgent:
    """A trained actor as a closed-loop agent (the same ``reset``/``plan`` as the planners): it encodes the last
    ``frames`` real frames and acts on their tokens, imagining nothing.

    Args:
        model: the world model (its tokenizer encodes the frames).
        actor: the actor-critic.
        deterministic: take the policy's mode (argmax, or the squashed mean) instead of sampling.
        generator: random source when sampling.
    """

    def __init__(self, model: Any, actor: ActorCritic, deterministic: bool = True,
                 generator: torch.Generator | None = None) -> None:
        self.model, self.actor, self.deterministic, self.generator = model, actor.eval(), deterministic, generator
        self.imagined_frames = 0

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def plan(self, context: torch.Tensor, context_actions: torch.Tensor | None = None) -> Plan:
        k = self.actor.config.frames
        tokens = last_frames(self.model.encode(context[None, -k:]), k)
        action, _ = self.actor.sample(tokens, self.deterministic, self.generator)
        return Plan(action=action[0].cpu(), actions=action.cpu(), score=float(self.actor.value(tokens)[0]))
