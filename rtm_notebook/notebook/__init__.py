"""The notebook layer: kernel-loop helpers, the LiveLog widget, the ``%rtm_*`` magics.

``%load_ext rtm_notebook`` loads :mod:`rtm_notebook.notebook.magics`.
"""

from rtm_notebook.notebook.livelog import LiveLog

__all__ = ["LiveLog"]
