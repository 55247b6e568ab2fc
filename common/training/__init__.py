"""Training: the U-Net, losses, label dropout, augmentation, metrics and the one train loop."""
