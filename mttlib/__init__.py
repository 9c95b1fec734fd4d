"""mttlib: the helper library of the MTT teaching kit.

Modules, one idea each: ``data`` (datasets, normalisation), ``zca`` (the paper's ZCA), ``models`` (ConvNet and
friends, functional forward), ``augment`` (differentiable siamese augmentation), ``experts``
(expert trajectories), ``distill`` (trajectory matching), ``evaluate`` (training fresh networks
on a set), ``texture`` (tileable canvases), ``presets`` (hyper-parameters), ``viz`` (figures).
"""

__version__ = "0.2.0"

from mttlib import imagenet  # noqa: E402,F401  registers imagenet:<subset>, tiny-imagenet and the stand-in
