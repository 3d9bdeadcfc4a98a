"""Actions -> per-frame conditioning vectors ``(..., c)``, with a learned null action.

The null action stands for "no action known": frame 0 of a clip (nothing produced it), action-free video, and
actions dropped in training (``null_action_prob``). A real action's vector is the null vector plus a learned
offset that starts at zero (discrete: an embedding table; continuous: an MLP on the normalised action whose last
layer is zero), so adding an action space to a model pretrained on video alone starts from exactly that model.

Continuous actions are normalised inside the model with the dataset statistics stored in the config
(``action_mean``, ``action_std``), so an export carries them and callers pass raw actions.

Several action spaces (``DynamicsConfig.domains``): :class:`DomainActions` holds one :class:`ActionEncoder` per
domain, keyed by name (weights ``actions.encoders.NAME.*``), around ONE null action (``actions.null``) that every
domain shares, so action-free video and dropped actions train the null the action domains start from. A model
without a domains list keeps a single :class:`ActionEncoder` with its own null (``actions.null``,
``actions.embed.*`` / ``actions.mlp.*``), the layout of the exports made before domains existed.
"""

from __future__ import annotations

import torch
from torch import nn

from wm_video.models.checks import check_values, ids_out_of_range
from wm_video.models.dynamics.config import DynamicsConfig, resolve_domain


def _describe(x: torch.Tensor) -> str:
    return f"{str(x.dtype).removeprefix('torch.')} {tuple(x.shape)}"


class ActionEncoder(nn.Module):
    """One action space's actions -> conditioning vectors.

    Args:
        config: the model's :class:`DynamicsConfig`, or one domain's view of it
            (:meth:`DynamicsConfig.domain_config`): ``action_type``, ``num_actions``, ``action_dim``,
            ``action_mean``, ``action_std``, ``cond_dim``, ``action_init``.
        shared_null: hold no null action of its own; ``forward`` is then given the shared one
            (:class:`DomainActions`).
        domain: the domain's name, for error messages (None: a single-domain model).
    """

    def __init__(self, config: DynamicsConfig, shared_null: bool = False, domain: str | None = None) -> None:
        super().__init__()
        c = config
        self.domain = domain
        self.kind, self.num_actions, self.action_dim = c.action_type, c.num_actions, c.action_dim
        self.init = c.action_init
        # Unit scale (not 0.02): SiLU of it feeds every block's modulation, whose weights learn in proportion.
        self.null = None if shared_null else nn.Parameter(torch.randn(c.cond_dim))
        self.embed = self.mlp = None
        if c.action_type == "discrete":
            self.embed = nn.Embedding(c.num_actions, c.cond_dim)
        elif c.action_type == "continuous":
            self.mlp = nn.Sequential(nn.Linear(c.action_dim, c.cond_dim), nn.SiLU(), nn.Linear(c.cond_dim, c.cond_dim))
            mean = torch.tensor(c.action_mean or [0.0] * c.action_dim, dtype=torch.float32)
            std = torch.tensor(c.action_std or [1.0] * c.action_dim, dtype=torch.float32)
            # Not persistent: the config holds the statistics, so the weights file stays weights only.
            self.register_buffer("mean", mean, persistent=False)
            self.register_buffer("std", std, persistent=False)

    def zero_init_(self) -> None:
        """Real actions start equal to the null action (``action_init="zero"``), or at unit scale beside it
        (``"normal"``, see :class:`DynamicsConfig`). (Called after the model's generic init, which would leave the
        MLP's first layer too small for unit-scale inputs of a few dimensions: it gets PyTorch's fan-in init
        back.)"""
        if self.embed is not None:
            if self.init == "normal":
                nn.init.normal_(self.embed.weight, std=1.0)
            else:
                nn.init.zeros_(self.embed.weight)
        if self.mlp is not None:
            self.mlp[0].reset_parameters()
            last = self.mlp[-1]
            if self.init == "normal":
                nn.init.normal_(last.weight, std=last.in_features**-0.5)
            else:
                nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def check(self, actions: torch.Tensor | None, lead: tuple[int, ...], where: str = "actions") -> None:
        """Clear errors, naming ``where``, for actions of the wrong type, shape or range; ``lead`` is the expected
        ``(b, t)`` or ``(b,)``. The values (ids in range, finite floats) cost one host read and are not read inside
        :func:`~wm_video.models.checks.validated`; type and shape always are."""
        if actions is None:
            return
        where = f"{where} (domain {self.domain!r})" if self.domain else where
        dims = "(b, t)" if len(lead) == 2 else "(b,)"
        if self.kind == "none":
            raise ValueError(f"{where}: this model has action_type 'none' (video only), got actions "
                             f"{_describe(actions)}; pass actions=None")
        if self.kind == "discrete":
            if actions.is_floating_point() or actions.is_complex() or actions.dtype == torch.bool \
                    or tuple(actions.shape) != lead:
                raise ValueError(f"{where}: expected discrete action ids, int64 {dims} = {lead}, "
                                 f"got {_describe(actions)}")
            bad = ids_out_of_range(actions, self.num_actions)
            if bad:
                raise ValueError(f"{where}: discrete ids must be in [0, {self.num_actions}), got [{bad[0]}, {bad[1]}]")
            return
        expected = (*lead, self.action_dim)
        a_dims = dims[:-1].rstrip(",") + ", a)"  # (b, t, a) or (b, a)
        if not actions.is_floating_point() or tuple(actions.shape) != expected:
            raise ValueError(f"{where}: expected continuous actions, float {a_dims} = {expected}, "
                             f"got {_describe(actions)}")
        if check_values() and not bool(torch.isfinite(actions).all()):
            index = (~torch.isfinite(actions)).nonzero()[0].tolist()
            raise ValueError(f"{where}: NaN or inf in continuous actions (first at index {index})")

    def forward(self, actions: torch.Tensor | None, lead: tuple[int, ...], drop_prob: float = 0.0,
                null: torch.Tensor | None = None) -> torch.Tensor:
        """``actions`` ``lead`` int ids or ``(*lead, a)`` floats, or None (all null) -> ``(*lead, c)``.

        ``drop_prob``: probability of replacing a whole clip's (first dimension's) actions with the null action.
        ``null``: the null action ``(c,)`` to use, the shared one (default: this encoder's own).
        """
        null_vec = self.null if null is None else null
        null = null_vec.expand(*lead, -1)
        if actions is None:
            return null
        self.check(actions, lead)
        if self.embed is not None:
            emb = null_vec + self.embed(actions)
        else:
            emb = null_vec + self.mlp(((actions.float() - self.mean) / self.std).to(null_vec.dtype))
        if drop_prob > 0:
            keep = torch.rand(lead[0], device=emb.device) >= drop_prob  # (b,)
            emb = torch.where(keep.view(-1, *[1] * len(lead)), emb, null)
        return emb


class DomainActions(nn.Module):
    """One :class:`ActionEncoder` per action domain (``encoders``, keyed by name, each without a null of its own)
    and the null action ``null`` ``(c,)`` they all share. Built by :meth:`from_config` or :meth:`from_single`."""

    def __init__(self, null: nn.Parameter, encoders: dict[str, ActionEncoder]) -> None:
        super().__init__()
        self.null = null
        self.encoders = nn.ModuleDict(encoders)

    @classmethod
    def from_config(cls, config: DynamicsConfig) -> DomainActions:
        """Fresh encoders for ``config.domains``, each built from its domain's view of ``config``."""
        null = nn.Parameter(torch.randn(config.cond_dim))  # unit scale, as an ActionEncoder's own
        return cls(null, {d.name: ActionEncoder(config.domain_config(d.name), shared_null=True, domain=d.name)
                          for d in config.domains})

    @classmethod
    def from_single(cls, encoder: ActionEncoder, name: str) -> DomainActions:
        """The domains form of a single-domain model's ``encoder``, from the same parameter objects (its null becomes
        the shared one, the rest the encoder of domain ``name``): values and optimizer references carry over."""
        null = encoder.null
        del encoder.null  # unregistered there: it lives once, here
        encoder.null, encoder.domain = None, name
        return cls(null, {name: encoder})

    def encoder(self, domain: str | None = None) -> ActionEncoder:
        """The encoder of ``domain`` (None: the only one); ValueError naming the known domains otherwise."""
        return self.encoders[resolve_domain(list(self.encoders), domain)]

    def zero_init_(self) -> None:
        for encoder in self.encoders.values():
            encoder.zero_init_()

    def check(self, actions: torch.Tensor | None, lead: tuple[int, ...], where: str = "actions",
              domain: str | None = None) -> None:
        """:meth:`ActionEncoder.check` with ``domain``'s encoder."""
        self.encoder(domain).check(actions, lead, where)

    def forward(self, actions: torch.Tensor | None, lead: tuple[int, ...], drop_prob: float = 0.0,
                domain: str | None = None) -> torch.Tensor:
        """:meth:`ActionEncoder.forward` with ``domain``'s encoder and the shared null: -> ``(*lead, c)``."""
        return self.encoder(domain)(actions, lead, drop_prob, self.null)
