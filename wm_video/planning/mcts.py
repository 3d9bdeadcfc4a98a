"""MuZero-style Monte-Carlo tree search for discrete actions over the learned dynamics, reward and termination heads.

The tree is over action sequences from the current context (open-loop): a node is the state reached by its path of
actions, and holds the mean predicted reward ``r`` and continuation ``1 - p`` of the action leading to it, its
visit count and the sum of the values backed up through it. A child's value seen from its parent is
``Q = r + gamma * (1 - p) * V(child)``, min-max normalised over the tree (MuZero), and children are chosen by pUCT
with a uniform prior (or ``prior_fn``'s policy). An unvisited child is valued at its parent's mean value (rather
than MuZero's 0, the worst normalised value, which with few simulations keeps re-choosing the first child tried).

Search runs in rounds so that imagination stays batched: each round selects ``parallel`` leaves one after the
other, counting the pending ones as visited ("virtual visits") so the next selections spread out; then every
selected path is imagined again from the context in one batch (one KV-cached reset, ``depth + rollout_depth``
steps, ``samples`` rows per leaf). Re-imagining paths instead of storing per-node KV caches keeps memory flat, and
at a sampling temperature above 0 makes node statistics averages over sampled futures. A leaf's value is the
survival-weighted discounted return of ``rollout_depth`` uniformly random actions after it, plus ``value_fn`` of
the last state when one is given (``rollout_depth = 0`` with a value function: MuZero's leaf value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from wm_video.data.schema import ActionSpace
from wm_video.planning.scoring import ImaginedEnv, Plan, ValueFn, check_sampling, discounted_return, repeat_context


@dataclass
class MCTSConfig:
    """Args:
    simulations: leaves evaluated per decision.
    parallel: leaves imagined together per round (the batch is ``parallel * samples`` rows).
    max_depth: deepest path searched (the planning horizon).
    rollout_depth: random-action steps after a leaf that estimate its value.
    discount: per-step discount of predicted rewards.
    pb_c_init: pUCT exploration constant (MuZero's ``c1``).
    pb_c_base: pUCT's visit-count scale (MuZero's ``c2``).
    samples: imagined rollouts per leaf (``> 1`` needs a sampling temperature above 0).
    uncertainty: a leaf's value is lowered by this times the standard deviation of its sampled returns.
    """

    simulations: int = 64
    parallel: int = 16
    max_depth: int = 8
    rollout_depth: int = 4
    discount: float = 0.99
    pb_c_init: float = 1.25
    pb_c_base: float = 19652.0
    samples: int = 1
    uncertainty: float = 0.0

    def __post_init__(self) -> None:
        for name in ("simulations", "parallel", "max_depth", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"mcts: {name} must be >= 1, got {getattr(self, name)}")
        if self.rollout_depth < 0:
            raise ValueError(f"mcts: rollout_depth must be >= 0, got {self.rollout_depth}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"mcts: discount must be in (0, 1], got {self.discount}")


@dataclass
class Node:
    """One action sequence's end state (see the module docstring)."""

    prior: np.ndarray | None = None  # (A,) policy over this node's children; None: uniform
    children: dict[int, Node] = field(default_factory=dict)
    visits: int = 0
    pending: int = 0  # virtual visits of the round being selected
    value_sum: float = 0.0
    reward: float = 0.0  # mean predicted reward of the action leading here
    cont: float = 1.0  # mean predicted probability of not terminating on that action
    seen: int = 0  # imagined samples behind reward and cont

    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def observe(self, reward: float, cont: float) -> None:
        self.seen += 1
        self.reward += (reward - self.reward) / self.seen
        self.cont += (cont - self.cont) / self.seen


class MinMax:
    """Running bounds of the Q values in a tree, to map them to [0, 1] (MuZero's ``MinMaxStats``)."""

    def __init__(self) -> None:
        self.low, self.high = math.inf, -math.inf

    def update(self, q: float) -> None:
        self.low, self.high = min(self.low, q), max(self.high, q)

    def normalize(self, q: float) -> float:
        return (q - self.low) / (self.high - self.low) if self.high > self.low else 0.5


class MCTSPlanner:
    """MCTS over an imagined environment (see the module docstring).

    Args:
        env: the imagined environment, e.g. ``WorldModelEnv(model, render=False, temperature=0)``.
        action_space: discrete.
        config: search settings.
        value_fn: optional value of a leaf's state (tokens ``(b, k, h, w)`` -> ``(b,)``).
        prior_fn: optional policy logits of a state (tokens ``(b, k, h, w)`` -> ``(b, A)``) used as pUCT priors.
        value_frames: frames ``k`` the value and prior functions read.
        generator: random source of rollout actions and tie-breaking.
        device: where actions are made (the world model's device).
    """

    def __init__(self, env: ImaginedEnv, action_space: ActionSpace, config: MCTSConfig | None = None,
                 value_fn: ValueFn | None = None, prior_fn: ValueFn | None = None, value_frames: int = 1,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> None:
        if action_space.kind != "discrete":
            hint = " (use the cem planner)" if action_space.kind == "continuous" else ""
            raise ValueError(f"mcts: searches discrete actions, and this model's actions are {action_space.kind}"
                             f"{hint}")
        self.config = c = config or MCTSConfig()
        check_sampling(env, c.samples, c.uncertainty)
        self.env, self.num_actions = env, int(action_space.n)
        self.value_fn, self.prior_fn, self.value_frames = value_fn, prior_fn, value_frames
        self.generator, self.device = generator, torch.device(device)
        seed = int(torch.randint(2**31, (1,), generator=generator)) if generator is not None else None
        self.rng = np.random.default_rng(seed)
        self.imagined_frames = 0
        self.root: Node | None = None

    def reset(self) -> None:
        """Nothing carries over between episodes (the tree is rebuilt at every decision)."""
        self.root = None

    # ---- selection and backup -------------------------------------------------------------------------------

    def _q(self, child: Node) -> float:
        return child.reward + self.config.discount * child.cont * child.value()

    def _select_action(self, node: Node, bounds: MinMax) -> int:
        c = self.config
        n_parent = node.visits + node.pending
        explore = (c.pb_c_init + math.log((n_parent + c.pb_c_base + 1) / c.pb_c_base)) * math.sqrt(n_parent)
        prior = node.prior if node.prior is not None else np.full(self.num_actions, 1.0 / self.num_actions)
        fpu = bounds.normalize(node.value()) if node.visits else 0.0  # unvisited children: the node's own value
        scores = np.empty(self.num_actions)
        for a in range(self.num_actions):
            child = node.children.get(a)
            n, q = 0, fpu
            if child is not None:
                n = child.visits + child.pending
                q = bounds.normalize(self._q(child)) if child.visits else fpu
            scores[a] = q + explore * prior[a] / (1 + n)
        best = np.flatnonzero(scores >= scores.max() - 1e-12)
        return int(best[0] if len(best) == 1 else self.rng.choice(best))

    def _select(self, root: Node, bounds: MinMax) -> tuple[list[Node], list[int]]:
        """Walk down from the root to an unvisited node (creating it) or to ``max_depth``."""
        path, actions, node = [root], [], root
        while len(actions) < self.config.max_depth:
            a = self._select_action(node, bounds)
            child = node.children.get(a)
            new = child is None
            if new:
                child = node.children[a] = Node()
            path.append(child)
            actions.append(a)
            if new or child.visits == 0:
                break
            node = child
        for n in path:
            n.pending += 1
        return path, actions

    # ---- one decision ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def plan(self, context: torch.Tensor, context_actions: torch.Tensor | None = None) -> Plan:
        """Search from one context ``(t0, 3, h, w)`` with actions ``(t0 - 1,)`` -> the :class:`Plan` whose action
        is the most visited root child (ties: the higher Q) and whose sequence follows the most visited path."""
        c = self.config
        root, bounds = Node(), MinMax()
        if self.prior_fn is not None:
            frames, acts = repeat_context(context, context_actions, 1, self.device)
            tokens = self.env.reset(frames, acts)[:, -self.value_frames:]
            root.prior = self.prior_fn(tokens).float().softmax(-1)[0].cpu().numpy()
        done = 0
        while done < c.simulations:
            leaves = [self._select(root, bounds) for _ in range(min(c.parallel, c.simulations - done))]
            self._evaluate(context, context_actions, leaves, bounds)
            done += len(leaves)
        self.root = root
        visits = np.array([root.children[a].visits if a in root.children else 0 for a in range(self.num_actions)])
        qs = np.array([self._q(root.children[a]) if a in root.children and root.children[a].visits else -np.inf
                       for a in range(self.num_actions)])
        action = int(np.lexsort((-qs, -visits))[0])  # most visits, then highest Q
        seq, node = [action], root.children[action]
        while node.children and len(seq) < c.max_depth:
            a = max(node.children, key=lambda k: node.children[k].visits)
            if node.children[a].visits == 0:
                break
            seq.append(a)
            node = node.children[a]
        return Plan(action=torch.tensor(action), actions=torch.tensor(seq), score=float(qs[action]),
                    info={"visits": visits.tolist(), "q": [float(q) if np.isfinite(q) else None for q in qs]})

    def _evaluate(self, context: torch.Tensor, context_actions: torch.Tensor | None,
                  leaves: list[tuple[list[Node], list[int]]], bounds: MinMax) -> None:
        """Imagine every selected path (``samples`` rows each) plus its value rollout in one batch; back up."""
        c, k = self.config, self.config.samples
        depth = [len(acts) for _, acts in leaves]
        steps = max(depth) + c.rollout_depth
        rows = len(leaves) * k
        actions = torch.randint(self.num_actions, (rows, steps), generator=self.generator,
                                device=self.generator.device if self.generator else self.device).to(self.device)
        for i, (_, acts) in enumerate(leaves):
            actions[i * k:(i + 1) * k, :len(acts)] = torch.tensor(acts, device=self.device)
        frames, ctx_acts = repeat_context(context, context_actions, rows, self.device)
        history = self.env.reset(frames, ctx_acts)
        recent = list(history[:, -self.value_frames:].unbind(1))
        rewards, terms, snapshots = [], [], {}
        want = {d + c.rollout_depth for d in depth} if self.value_fn is not None else set()
        want |= set(depth) if self.prior_fn is not None else set()
        for t in range(steps):
            out = self.env.step(actions[:, t])
            rewards.append(out.rewards.float())
            terms.append(out.terminations.float())
            recent = [*recent[1:], out.tokens] if len(recent) >= self.value_frames else [*recent, out.tokens]
            if t + 1 in want:
                snapshots[t + 1] = torch.stack(recent, 1)
        self.imagined_frames += rows * steps
        r, p = torch.stack(rewards, 1), torch.stack(terms, 1)  # (rows, steps)
        leaf_values, priors = self._leaf_values(r, p, depth, snapshots)
        r, cont, leaf_values = r.cpu().numpy(), 1 - p.cpu().numpy(), leaf_values.cpu().numpy()  # one transfer
        for i, (path, _) in enumerate(leaves):
            d, sl = depth[i], slice(i * k, (i + 1) * k)
            for j, node in enumerate(path[1:]):  # the reward and continuation of each action on the path
                for s in range(i * k, (i + 1) * k):
                    node.observe(float(r[s, j]), float(cont[s, j]))
            leaf = path[-1]
            if priors is not None and leaf.prior is None:
                leaf.prior = priors[i * k]
            value = float(leaf_values[sl].mean())
            if k > 1 and c.uncertainty > 0:  # spread of the sampled returns from the leaf's parent
                q_samples = r[sl, d - 1] + c.discount * cont[sl, d - 1] * leaf_values[sl]
                value -= c.uncertainty * float(q_samples.std())
            for node in reversed(path):
                node.pending -= 1
                node.visits += 1
                node.value_sum += value
                if node is not path[0]:
                    value = node.reward + c.discount * node.cont * value
            for node in path[1:]:
                bounds.update(self._q(node))

    def _leaf_values(self, r: torch.Tensor, p: torch.Tensor, depth: list[int], snapshots: dict[int, torch.Tensor]
                     ) -> tuple[torch.Tensor, np.ndarray | None]:
        """``(rows,)`` value of each row's leaf state: the return of its random rollout (+ ``value_fn`` after
        it); and, with ``prior_fn``, each row's leaf policy ``(rows, A)``."""
        c, k = self.config, self.config.samples
        d = torch.tensor(depth, device=r.device).repeat_interleave(k)  # (rows,) leaf step of each row
        idx = d[:, None] + torch.arange(c.rollout_depth, device=r.device)  # (rows, D) its rollout's steps
        boot = priors = None
        if self.value_fn is not None:
            ends = torch.cat([snapshots[n + c.rollout_depth][i * k:(i + 1) * k] for i, n in enumerate(depth)])
            boot = self.value_fn(ends).float().to(r.device)
        values = discounted_return(r.gather(1, idx), p.gather(1, idx), c.discount, boot)[0]
        if self.prior_fn is not None:
            states = torch.cat([snapshots[n][i * k:(i + 1) * k] for i, n in enumerate(depth)])
            priors = self.prior_fn(states).float().softmax(-1).cpu().numpy()
        return values, priors
