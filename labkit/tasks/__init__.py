"""The tasks the notebooks train and judge models on: each module holds one task's data and its metric, apart from
the library's concepts::

    labkit.tasks.spam           # SMS spam: the data, the fixed split, the F1 (notebooks 10 and 15)
    labkit.tasks.instructions   # the instruction set and its chat template, exact-match scoring (12, 15)
    labkit.tasks.icl            # the in-context-learning tasks and their few-shot accuracy (11)
    labkit.tasks.digits         # the 8x8 digits and the judge that reads generated ones (13, 14)
    labkit.tasks.captions       # the captioned digits for CLIP and text-conditioned diffusion (14)
"""
