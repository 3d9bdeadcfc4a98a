"""The functions behind ``wm-video`` verbs: thin adapters that resolve the verb's config, call one library function
and print; their signatures and docstrings (and their configs' fields) are the ``--help`` text."""
