"""Where run folders made before the stage layout find :class:`TrainJob`: submitit pickled it as
``planar3d.runs.launch.TrainJob``, so requeued and resubmitted jobs of older grids still load it.
New code imports :mod:`planar3d.runs.launch`."""

from planar3d.runs.launch import TrainJob

__all__ = ["TrainJob"]
