"""Multi-view fusion of per-pixel 2D features onto 3D points."""
