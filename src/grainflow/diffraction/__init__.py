"""Crystal systems from diffraction patterns: crystals, simulation, representations, training, scans."""
