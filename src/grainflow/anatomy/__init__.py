"""CNN anatomy: the teaching example, from an FAU lecture on data science for electron microscopy.

The lecture explains a convolutional network before any training, with hand-set 3×3 kernels
and small worked examples. :mod:`~grainflow.anatomy.kernels` computes each of them,
:mod:`~grainflow.anatomy.studies` and :mod:`~grainflow.anatomy.figures` turn them into the
report's numbers and figures.
"""
