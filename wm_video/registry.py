"""Every config kind and its named presets, gathered from the packages that own them.

Each package keeps its presets beside its configs (``data/presets.py``, ``envs/presets.py``,
``training/presets.py``, ``evaluation/presets.py``, ``generation/config.py``, ``planning/config.py``,
``play/config.py`` and the data pipelines' ``data/pipeline/verb_configs.py``) and registers them in
:mod:`wm_video.config`'s registry when imported;
``config.py`` itself imports nothing of the project. Code that resolves a config by kind name (the CLI, its verbs,
the demo, scripts and tests) imports this module first:

    import wm_video.registry  # noqa: F401  (registers every config kind)
    from wm_video.config import load_config

It sits above the packages it gathers (the floor of ``commands/``), so importing it loads torch and Lightning;
``wm-video --help`` imports it only to list presets.
"""

from __future__ import annotations

import wm_video.data.pipeline.verb_configs
import wm_video.data.presets
import wm_video.envs.presets
import wm_video.evaluation.presets
import wm_video.generation.config
import wm_video.planning.config
import wm_video.play.config
import wm_video.training.presets  # noqa: F401
