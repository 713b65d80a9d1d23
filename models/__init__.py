"""State-space models (S4D, DSS, S4-PTD, S5, S5-PTD, Mamba, Mamba-2), the HPD transform, and the shipped
checkpoints; ``models.load(name)`` returns any built-in model (``models.zoo.MODELS``) trained, in eval mode."""


def load(name: str):  # noqa: ANN201 (an nn.Module; imported lazily so ``import models`` stays light)
    """A shipped, trained model by name (``models.zoo.MODELS``), in eval mode."""
    from models.zoo import load_model

    return load_model(name)
