"""Training a style: settings, the loop, the data, the VGG perceptual loss, several processes."""
