"""Results that are kept (``edgeft history``): every bench and gate result appended to one SQL store, keyed by model,
commit, device, backend and versions (:mod:`~edgeft.history.store`, :mod:`~edgeft.history.records`), and a change
detector over each series that catches the slow drift a per-change gate passes (:mod:`~edgeft.history.drift`)."""
