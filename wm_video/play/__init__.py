"""Play inside a world model in the browser (``wm-video play``): the controls, the session, its recordings and
the server. The server's packages are the ``play`` extra (``pip install 'wm-video[play]'``)."""

from wm_video.play.config import PlayConfig
from wm_video.play.controls import Controls, controls_for
from wm_video.play.recorder import Recorder, Recording
from wm_video.play.session import PlaySession

__all__ = ["Controls", "PlayConfig", "PlaySession", "Recorder", "Recording", "controls_for"]
