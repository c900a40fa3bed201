"""Arrays and torch only: the network, segmentation inference, ellipse fit, biometry in mm, growth
standards, training and evaluation. No DICOM, no database, no Celery.

Submodules are imported where needed (``models.ellipse``, ``models.biometry``, ``models.growth``,
``models.segment``, ``models.weights``, ``models.train``, ``models.evaluate``) so that light users,
such as the error tree in ``models.errors``, do not pay for importing torch.
"""
