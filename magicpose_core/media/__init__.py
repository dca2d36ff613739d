"""Media: video reading/writing, frame selection, IMAGE <-> uint8 conversion, the model-size geometry."""
