"""State-space models and the HPD transform (built on the crossbar tile engine; see the open issues)."""


def load(name: str):  # noqa: ANN201 (a SequenceModel; imported lazily so ``import models`` stays light)
    """A shipped, trained sequential-digits model by name (``models.zoo.MODELS``), in eval mode."""
    from models.zoo import load as load_model

    return load_model(name)
