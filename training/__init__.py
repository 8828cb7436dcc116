"""ovseg3d_train: the offline 2D-to-3D distillation package (installed from training/)."""
