"""The teaching example: hand-set kernels, feature maps, pooling, receptive fields, parameters."""
