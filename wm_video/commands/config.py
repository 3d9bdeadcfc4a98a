"""``wm-video config ...``: print a resolved config, list presets."""

from __future__ import annotations


def show(*overrides: str, kind: str | None = None, config: str | None = None, preset: str = "debug") -> None:
    """Print the config that preset + YAML + overrides resolve to, as YAML (a valid config file itself).

    Example:
        wm-video config show --config configs/data/pong_random.yaml episodes=64

    Args:
        overrides: dotted overrides, e.g. ``loader.batch_size=4``.
        kind: config kind (collect, loader, trainer); taken from the YAML's ``kind:`` when omitted.
        config: YAML file to apply.
        preset: starting preset when the YAML names none.
    """
    from wm_video.config import dump_yaml, load_config

    cfg = load_config(kind, preset_name=preset, yaml_path=config, overrides=overrides)
    if kind is None and config:
        from wm_video.config import read_yaml

        kind = read_yaml(config).get("kind")
    print(dump_yaml(cfg, kind), end="")


def list_presets() -> None:
    """List config kinds and their named presets."""
    from wm_video.config import kinds, presets

    for kind in kinds():
        print(f"{kind}: {', '.join(presets(kind))}")
