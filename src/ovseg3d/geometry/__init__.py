"""Cameras, projection, visibility, voxels, normals, neighbours and superpoints."""
