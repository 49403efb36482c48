"""Stylizing with a model: images, video, exported files, and the style controls."""
