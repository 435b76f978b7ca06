"""From a preprocessed volume to probabilities and masks: one predict_volume, recomposition, precision, thresholding."""
