"""``wm-video play`` measured through a real browser: key press to frame shown (p50/p99) and the fps the page gets.

    python eval/benchmarks/bench_play.py --model /tmp/demo_boxing3/world_model --out runs/bench_play
    python eval/benchmarks/bench_play.py --model runs/wm --presets fast --presses 20 --screenshot docs/images/play.png

Protocol. For each preset of ``--presets`` (the play config's ``default``: 8 MaskGIT passes per frame, and
``fast``: 2), one :class:`~wm_video.play.session.PlaySession` on the model is served on 127.0.0.1 by
:func:`wm_video.play.server.running`, and Debian's headless chromium (driven by playwright) opens the page. After
``--warmup`` frames, the script presses and releases a mapped key ``--presses`` times, one every ``--interval``
seconds, cycling through the key table; the page itself times each press, from the moment it sends the input to
the moment the first frame made from that input has been decoded in the page (``window.wmPlay.latencies``), and
stamps every frame it shows (``window.wmPlay.frameTimes``). Reported: latency p50/p99 in ms, the shown fps over
the pressing phase against the model's target fps, and the server-side world-model time per frame (p50). A frame
waits for the next tick of the fps clock, so the latency includes up to one frame period of waiting by design.
Nothing is recorded (``record=False``). Results go to ``OUT/bench_play.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import wm_video.registry  # noqa: F401  (the play config kind)
from wm_video.config import load_config
from wm_video.play.server import running
from wm_video.play.session import PlaySession
from wm_video.utils.machine import machine_record

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def measure(model: str, preset: str, args: argparse.Namespace, screenshot: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    cfg = load_config("play", preset_name=preset, overrides=["record=false"])
    session = PlaySession(model, cfg)
    keys = list(session.controls.keys) or ["1"]
    with running(session) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(url)
            page.wait_for_function(f"window.wmPlay.frames >= {args.warmup}", timeout=120_000)
            first = page.evaluate("window.wmPlay.frameTimes.length")
            for i in range(args.presses):
                key = keys[i % len(keys)]
                page.keyboard.down(key)
                time.sleep(args.interval / 2)
                page.keyboard.up(key)
                time.sleep(args.interval / 2)
            time.sleep(1.0)
            stats = page.evaluate("({lat: window.wmPlay.latencies, times: window.wmPlay.frameTimes})")
            if screenshot is not None:
                page.keyboard.down(keys[0])
                time.sleep(0.5)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot))
                page.keyboard.up(keys[0])
        finally:
            browser.close()
    times = np.asarray(stats["times"][first:])
    lat = np.asarray(stats["lat"])
    model_ms = list(session.model_ms)
    return {"preset": preset, "maskgit_steps": cfg.maskgit_steps, "target_fps": session.fps,
            "presses": args.presses, "latencies_measured": int(lat.size),
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
            "fps_shown": float((times.size - 1) * 1000 / (times[-1] - times[0])) if times.size > 1 else None,
            "model_ms_p50": float(statistics.median(model_ms)) if model_ms else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="world-model folder (e.g. the demo's DEMO_OUT/world_model)")
    ap.add_argument("--presets", nargs="+", default=["default", "fast"], help="play presets to measure")
    ap.add_argument("--presses", type=int, default=30, help="key presses timed per preset")
    ap.add_argument("--interval", type=float, default=0.4, help="seconds between presses")
    ap.add_argument("--warmup", type=int, default=10, help="frames shown before timing starts")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="the browser binary (Debian's chromium)")
    ap.add_argument("--screenshot", type=Path, default=None, help="save a screenshot of the page (first preset)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_play"), help="results folder")
    args = ap.parse_args()
    rows = []
    for i, preset in enumerate(args.presets):
        rows.append(measure(args.model, preset, args, args.screenshot if i == 0 else None))
        r = rows[-1]
        print(f"{preset:8s} maskgit {r['maskgit_steps']}: key->frame p50 {r['latency_ms_p50']:.0f} ms, "
              f"p99 {r['latency_ms_p99']:.0f} ms; {r['fps_shown']:.1f} fps shown of {r['target_fps']:g}; "
              f"world model {r['model_ms_p50']:.0f} ms/frame", flush=True)
    result = {"model": args.model, "machine": machine_record(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_play.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out / 'bench_play.json'}")


if __name__ == "__main__":
    main()
