"""``wm-video config ...``: print a resolved config, list presets."""

from __future__ import annotations


def show(*overrides: str, kind: str | None = None, config: str | None = None, preset: str = "debug") -> None:
    """Print the config that preset + YAML + overrides resolve to, as YAML (a valid config file itself).

    The kind comes first, as a word (``train_dynamics``) or --kind; without either, from the YAML's ``kind:``.
    'wm-video config presets' lists the kinds and their presets.

    Example:
        wm-video config show train_dynamics --preset tiny
        wm-video config show --config configs/data/pong_random.yaml episodes=64

    Args:
        overrides: the config kind (optional, first), then dotted overrides, e.g. ``loader.batch_size=4``.
        kind: config kind (collect, loader, trainer, train_dynamics, ...), the same as giving it first.
        config: YAML file to apply.
        preset: starting preset when the YAML names none.
    """
    import wm_video.registry  # noqa: F401  (registers every config kind)
    from wm_video.config import ConfigError, dump_yaml, load_config, read_yaml

    items = list(overrides)
    if items and "=" not in items[0]:  # a word, not field=value: the kind
        if kind and kind != items[0]:
            raise ConfigError(f"two config kinds: {items[0]!r} and --kind {kind}; give one")
        kind = items.pop(0)
    cfg = load_config(kind, preset_name=preset, yaml_path=config, overrides=items)
    if kind is None and config:
        kind = read_yaml(config).get("kind")
    print(dump_yaml(cfg, kind), end="")


def list_presets() -> None:
    """List config kinds and their named presets."""
    import wm_video.registry  # noqa: F401  (registers every config kind)
    from wm_video.config import kinds, presets

    for kind in kinds():
        print(f"{kind}: {', '.join(presets(kind))}")
