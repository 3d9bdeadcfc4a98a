"""``wm-video play``: play inside a world model in the browser."""

from __future__ import annotations

from typing import Any

from wm_video.config import load_config
from wm_video.utils.device import resolve_device


def play(*overrides: str, model: str, data: str | None = None, context: str | None = None, config: str | None = None,
         preset: str = "default", device: str = "auto", **settings: Any) -> None:
    """Serve a page (http://127.0.0.1:8765 by default) where the keyboard or a gamepad drives the world model and
    its predicted frames stream at the model's fps; every play-through is recorded as an mp4 and as episode shards
    (RECORD_DIR/data) that 'wm-video train' and ClipLoader read.

    The page shows the key mapping (arrows and Space for an Atari joystick, number keys for other discrete actions,
    key pairs and sliders for continuous ones), the reward and termination heads where they were trained, a start
    menu of dataset clips, pause, the sampling temperature and decoder steps, and a switch between you and a policy
    (random, or --policy cem|mcts|ACTOR_DIR). Stop with Ctrl-C; the play-through in progress is written.

    A world model trained with task text is played conditioned on --task TEXT (required for one; the policies plan
    with it too), its encoder from --text-encoder or the folder the model records, with --text-guidance-scale S
    (1: none; 0: the text-free model).

    Settings (kind ``play``, wm_video/play/config.py) resolve as: the preset, the YAML (--config), the flags given,
    then the trailing FIELD=VALUE overrides.

    Example:
        wm-video play --model runs/wm --preset fast
        wm-video play --model runs/wm_mt --task "open drawer" --text-guidance-scale 2

    Args:
        overrides: dotted overrides of the play config, e.g. ``port=9000``; they beat flags and YAML.
        model: world-model folder (from 'wm-video export' or WorldModel.save_pretrained).
        data: dataset whose clips are the start states (default: the one the world model was exported with).
        context: start from a video file or a folder of images instead.
        config: YAML file with ``kind: play``.
        preset: named preset the settings start from (``fast``: 2 MaskGIT passes and 1 decoder step per frame).
        device: auto (cuda when a GPU is visible, else cpu), cpu or cuda.
        settings: the fields of the play config, as flags.
    """
    cfg = load_config("play", preset_name=preset, yaml_path=config, flags=settings, overrides=overrides)
    cfg.validate()
    try:
        from wm_video.play.server import check_port_free, serve
    except ImportError as e:  # fastapi / uvicorn: the play extra
        raise SystemExit(f"wm-video play needs the play extra: pip install 'wm-video[play]' ({e})") from e
    check_port_free(cfg.host, cfg.port)  # before the model loads
    from wm_video.play.session import PlaySession

    session = PlaySession(model, cfg, data=data, context=context, device=resolve_device(device))
    print(f"wm-video play: open http://{cfg.host}:{cfg.port} (Ctrl-C stops)", flush=True)
    try:
        serve(session, cfg.host, cfg.port)
    finally:
        session.finish()
        recs = session.recorder.recordings if session.recorder is not None else []
        frames = sum(r.frames for r in recs)
        where = f" in {cfg.record_dir}" if recs else ""
        print(f"recorded {len(recs)} play-through(s), {frames} frames{where}")
