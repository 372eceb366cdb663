"""Everything between files on disk and batches: the only package that imports TensorFlow.

`decode`, `resize`, `sources`, `splits`, `audit` and `synthetic` need no TensorFlow, nor
does importing `loading` (its `load` imports `builders`); `builders`, `augment` and
`input_pipeline` do, and are imported only where used.
"""
