"""Dataset sources; each module registers its datasets on import."""
