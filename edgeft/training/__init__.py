"""The engine: what every training stage shares. ``config`` (the training settings), ``split`` (the frozen
prefix and the trainable blocks of each model family) and ``loop`` (the one training loop)."""
