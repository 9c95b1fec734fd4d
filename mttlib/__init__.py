"""mttlib: the helper library of the MTT teaching kit, one idea per module (the README's table lists
them in import order, from ``io`` up to ``cli``)."""

__version__ = "0.2.0"

from mttlib import imagenet  # noqa: E402,F401  registers imagenet:<subset>, tiny-imagenet and the stand-in
