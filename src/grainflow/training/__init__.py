"""Training U-Nets and classifiers: settings, data, losses, the loop, several processes."""
