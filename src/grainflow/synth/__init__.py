"""Synthetic microstructures whose labels are free.

Modules: ``tessellation`` (Voronoi / Laguerre polycrystals and boundary masks),
``bicrystal`` (two-grain images), ``phases`` (precipitates and nanoparticles),
``imaging`` (contrast and noise models for SEM, optical and TEM), and
``specimen`` (specimens and sessions: what the ``synthesize`` rule calls).
"""
