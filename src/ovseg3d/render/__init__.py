"""Pictures: point clouds rendered to PNG, maps exported as PLY."""
