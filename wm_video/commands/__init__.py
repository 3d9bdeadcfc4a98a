"""The functions behind ``wm-video`` verbs; their signatures and docstrings are the ``--help`` text."""
