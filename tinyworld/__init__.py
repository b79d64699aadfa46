"""The tiny text-to-image world: scenes drawn in code with captions, and the small models trained on
them (a judge of what an image shows; later the scorer and the text-to-image model)."""
