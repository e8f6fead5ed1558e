"""Fine-tuning: adapt a pretrained model to the customer's classes (full, partial, or linear probe)."""

from edgeft.training.config import FinetuneConfig

__all__ = ["FinetuneConfig", "finetune"]


def finetune(*args, **kwargs):
    """See :func:`edgeft.finetune.stage.finetune` (imported lazily: it needs torch)."""
    from edgeft.finetune.stage import finetune as _finetune

    return _finetune(*args, **kwargs)
