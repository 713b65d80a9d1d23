"""State-space models and the HPD transform (built on the crossbar tile engine; see the open issues)."""
