"""ovseg3d_train: the offline 2D-to-3D distillation package (installed from training/)."""

import ovseg3d  # noqa: F401  (first: it sets OpenMP's wait policy before any torch import)
