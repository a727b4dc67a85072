"""Training loops: the fit loop with early stopping and FLOP counting (``loop``), learning-rate
schedules, augmentation, several processes training one run (``distributed``), and the source
pretraining of the ``pretrain`` stage (``pretrain``).

Layer 4: may import the layers below (core, config, data, models).
"""
