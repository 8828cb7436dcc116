"""The 3D student: a MinkowskiEngine MinkUNet18A that predicts CLIP-space features from geometry."""
